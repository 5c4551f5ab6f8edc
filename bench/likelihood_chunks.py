"""How many samples per pass the K-sample likelihood estimator should decode on a CPU (issue 15, item 4).

``evaluation.likelihood`` decodes ``rows × samples`` latent codes per pass. The first table times whole
K=1000 estimates (``log_likelihoods``, every subset) of ``--rows`` rows for several samples per pass, in
interleaved rounds (every setting once per round, rotating order), against the old default (the memory
budget alone: ``default_sample_chunk(..., device="cuda")``, which ignores the CPU's preferred call size);
the second the conv decoders' forward rate (GFLOP/s of convolutions and matrix products, counted by
``torch.utils.flop_counter``) when 4096 codes are decoded in calls of a given size. The estimates do not
depend on the chunking (tests/test_evaluation.py), only their cost does.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/likelihood_chunks.py
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/likelihood_chunks.py --run runs/mopoe-mnist-label --suites

``--run DIR`` adds a trained run folder (its model on its first ``--run-rows`` test rows), as
``mmvae evaluate --metrics likelihood`` would estimate them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import CLOCKS, SUITES, build_mmvae, make_data, make_networks  # noqa: E402
from roofline import count_flops  # noqa: E402
from speed import machine  # noqa: E402

from mmvae.evaluation.likelihood import CPU_ROWS_PER_PASS, default_sample_chunk, log_likelihoods  # noqa: E402
from mmvae.nets.conv import ConvDecoder  # noqa: E402


def _cases(suites: list[str], model_name: str, rows: int, run: str | None, run_rows: int):
    for suite_name in suites:
        suite = SUITES[suite_name]
        data = make_data(suite, rows)
        model, _ = build_mmvae(model_name, data.specs, make_networks(suite, 0))
        yield f"{suite_name} {model_name}", model.eval(), data
    if run:
        from mmvae.runs import load_run

        loaded = load_run(run)
        test = loaded.dataset().test
        yield (f"run {Path(run).name} ({run_rows} test rows)", loaded.model,
               test.subset(torch.arange(min(run_rows, len(test)))))


def estimate_rows(cases, rows: int, k: int, settings: list[int], reps: int, clock) -> list[str]:
    lines = []
    for name, model, data in cases:
        per_pass = min(rows, len(data))                      # rows in a pass, as log_likelihoods counts them
        budget_only = default_sample_chunk(data, k, per_pass, device="cuda")
        shipped = default_sample_chunk(data, k, per_pass, device="cpu")
        chunks = [budget_only] + [c for c in settings if c != budget_only]
        times: dict[int, list[float]] = {c: [] for c in chunks}
        for r in range(reps + 1):                            # round 0 warms up
            order = chunks[r % len(chunks):] + chunks[:r % len(chunks)]
            for c in order:
                t0 = clock()
                log_likelihoods(model, data, k=k, row_chunk=rows, sample_chunk=c)
                if r:
                    times[c].append(clock() - t0)
        base = statistics.median(times[budget_only])
        for c in chunks:
            t = statistics.median(times[c])
            tag = " (memory budget alone, the old default)" if c == budget_only else \
                (" (the default on CPU)" if c == shipped else "")
            lines.append(f"| {name} | {c}{tag} | {c * per_pass} | {t:.3g} | {base / t:.2f} |")
        print("\n".join(lines[-len(chunks):]), flush=True)
    return lines


def decoder_rows(sizes: list[int], reps: int, clock) -> list[str]:
    lines = []
    for shape in ((1, 28, 28), (3, 28, 28), (3, 32, 32)):
        torch.manual_seed(0)
        dec = ConvDecoder(shape, 20).eval()
        z = torch.randn(4096, 20)
        rates: dict[int, list[float]] = {n: [] for n in sizes}
        with torch.no_grad():
            flops = count_flops(lambda: dec(z))
            for r in range(reps + 1):
                for n in sizes[r % len(sizes):] + sizes[:r % len(sizes)]:
                    t0 = clock()
                    for part in z.split(n):
                        dec(part)
                    if r:
                        rates[n].append(flops / (clock() - t0) / 1e9)
        best = max(statistics.median(v) for v in rates.values())
        for n in sizes:
            rate = statistics.median(rates[n])
            lines.append(f"| {'x'.join(map(str, shape))} | {n} | {rate:.1f} | {rate / best:.2f} |")
        print("\n".join(lines[-len(sizes):]), flush=True)
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", nargs="*", default=["mlp", "conv", "polymnist-3"])
    ap.add_argument("--run", help="also time a trained run folder (mmvae train's output)")
    ap.add_argument("--run-rows", type=int, default=64, help="test rows of --run")
    ap.add_argument("--model", default="mopoe")
    ap.add_argument("--rows", type=int, default=16, help="rows per pass (evaluate's row_chunk)")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--samples", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256, 512, 1024, 2048])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    ap.add_argument("--out", default="docs/results/likelihood-chunks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)                                   # one thread, as bench/roofline.py
    clock = CLOCKS[args.clock]
    start = time.perf_counter()
    est = estimate_rows(_cases(args.suites, args.model, args.rows, args.run, args.run_rows), args.rows, args.k,
                        args.samples, args.reps, clock)
    dec = decoder_rows(args.sizes, args.reps, clock) if args.sizes else []
    cmd = "PYTHONPATH=src OMP_NUM_THREADS=1 python bench/likelihood_chunks.py" + \
        ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None else sys.argv[1:]))
    Path(args.out).write_text(f"""# Samples per likelihood pass on a CPU (issue 15, item 4)

Command: `{cmd}`; {time.perf_counter() - start:.0f} s in all.
Machine: {machine()}; one torch thread, {"process CPU" if args.clock == "cpu" else "wall"} time, medians of
{args.reps} interleaved rounds (a warm-up round not counted). The library's default on a CPU:
`CPU_ROWS_PER_PASS` = {CPU_ROWS_PER_PASS} decoded codes per pass (`evaluation/likelihood.default_sample_chunk`).

## Whole estimates: `log_likelihoods(model, data, k={args.k})`, {args.rows} rows per pass, every subset

| setting | samples per pass | codes decoded per pass | seconds | speed-up over the old default |
|---|---|---|---|---|
""" + "\n".join(est) + f"""

## Conv decoders, forward: 4096 codes decoded in calls of n rows

| decoder | rows per call | GFLOP/s | of the best size |
|---|---|---|---|
""" + "\n".join(dec) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
