"""What handing each ReLU its gradient in its own layout buys (nets/conv._GradInLayoutOf, switch
``mmvae.nets.conv.GRAD_LAYOUT``).

1. The kernel: ``threshold_backward`` (a ReLU's backward) on a gradient and an output of the same layout
   against two layouts (one channels-last, one default), as the encoder's last ReLU and the decoder's
   first one received them before; the layout copy that makes them agree is counted with the first.
2. Training steps of bench/contenders.py's settings with the switch on and off, in one process, same model,
   weights and batches: interleaved rounds (alternating order), the median of the per-round time ratios
   off / on (above 1: the switch is faster).

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/grad_layout.py --out docs/results/grad-layout.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import SUITES, Contender, make_data, make_networks  # noqa: E402
from speed import machine  # noqa: E402

import mmvae.nets.conv as conv  # noqa: E402

CASES = (("conv", "mvae"), ("conv", "mopoe"), ("polymnist-3", "mopoe"), ("polymnist-5", "mopoe"),
         ("polymnist-5", "mmvae-elbo"))


def kernel_rows(reps: int) -> list[str]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        out = torch.randn(128, 128, 4, 4).relu().to(dtype).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(128, 128, 4, 4).to(dtype)            # default layout, as it arrived
        calls = {
            "two layouts": lambda: torch.ops.aten.threshold_backward(grad, out, 0),
            "one layout (copy included)": lambda: torch.ops.aten.threshold_backward(
                grad.contiguous(memory_format=torch.channels_last), out, 0),
        }
        times = {k: [] for k in calls}
        for r in range(reps + 1):
            for k in (list(calls) if r % 2 else list(calls)[::-1]):
                t0 = time.process_time()
                for _ in range(20):
                    calls[k]()
                if r:
                    times[k].append((time.process_time() - t0) / 20)
        for k in calls:
            rows.append(f"| {str(dtype).split('.')[-1]} 128x128x4x4 | {k} | {1e3 * statistics.median(times[k]):.3f} |")
    return rows


def step_rows(cases, impls, reps: int, block: int, rows: int) -> list[str]:
    lines = []
    for suite_name, model in cases:
        suite = SUITES[suite_name]
        nets, data = make_networks(suite, 0), make_data(suite, rows, 0)
        for impl in impls:
            c = Contender(impl, model, suite, nets, data)
            c.run(2)
            times = {True: [], False: []}
            try:
                for r in range(reps):
                    for flag in ((True, False) if r % 2 else (False, True)):
                        conv.GRAD_LAYOUT = flag
                        c.run(1)                   # the first step after a switch is not timed
                        times[flag].append(c.run(block)[1] / block)
            finally:
                conv.GRAD_LAYOUT = True
            ratios = [off / on for off, on in zip(times[False], times[True])]
            line = (f"| {suite_name} | {model} | {impl} | {1e3 * statistics.median(times[False]):.1f} | "
                    f"{1e3 * statistics.median(times[True]):.1f} | {statistics.median(ratios):.3f} | "
                    f"{min(ratios):.2f}–{max(ratios):.2f} |")
            print(line, flush=True)
            lines.append(line)
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=[f"{s}:{m}" for s, m in CASES],
                    help="setting:model pairs of bench/contenders.py")
    ap.add_argument("--impls", nargs="+", default=["mmvae-bf16", "mmvae-fused"],
                    choices=["mmvae", "mmvae-fused", "mmvae-bf16"])
    ap.add_argument("--reps", type=int, default=20, help="interleaved rounds per case")
    ap.add_argument("--block", type=int, default=3, help="timed steps per round and side")
    ap.add_argument("--rows", type=int, default=1024, help="rows of the synthetic data")
    ap.add_argument("--out", default="docs/results/grad-layout.md", help="markdown report ('' to skip)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    kernel = kernel_rows(args.reps)
    print("\n".join(kernel), flush=True)
    cases = [tuple(c.split(":")) for c in args.cases]
    steps = step_rows(cases, args.impls, args.reps, args.block, args.rows)
    if not args.out:
        return
    cmd = "python bench/grad_layout.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(f"""# Each ReLU's gradient in its own layout (nets/conv._GradInLayoutOf)

Command: `PYTHONPATH=src OMP_NUM_THREADS=1 {cmd.strip()}`; {time.time() - t0:.0f} s in all.
Machine: {machine()}; one torch thread, process CPU time.

The conv networks keep activations channels-last, but the gradient reaching a ReLU could arrive in the
default layout: through autograd's view replay of the decoder's first ReLU (in place on the view its
matrix product is written into), from the flatten before the encoder's last matrix product, and after a one-channel image's first convolution
(which writes the default layout) from the channels-last layer after it. ``threshold_backward`` then
walks two layouts at once:

| map | layouts | ms per call (median) |
|---|---|---|
{chr(10).join(kernel)}

With `GRAD_LAYOUT` on (the default), an identity after each ReLU turns the gradient into the ReLU
output's layout (a no-op where they agree), and the decoder's first ReLU runs out of place (in place,
on the view its matrix product is written into, autograd would hand its gradient back in the default
layout). Values are unchanged (tests/test_conv_fast.py). Training steps, switch off against on, {args.reps}
rounds of {args.block} steps per side (batch 128; `mmvae-bf16` = the Trainer's bf16 autocast,
`mmvae-fused` = float32, both with the Trainer's fused Adam):

| setting | model | contender | off, ms per step | on, ms per step | off / on (median of rounds) | range over rounds |
|---|---|---|---|---|---|---|
{chr(10).join(steps)}
""")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
