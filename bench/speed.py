"""Training throughput of mmvae against MultiVae and a hand-written PyTorch loop (issues 2 and 15).

Protocol (DESIGN.md section 4): the same networks (identical shapes and initial weights), the same data,
batch 128, Adam, one process. The machine is shared, so measurements are interleaved: in each round
every implementation trains ``--block`` steps (the order rotates between rounds); samples/s are medians
over rounds and each ratio is the median of the per-round ratios. One torch thread by default. Time is
the process's CPU time by default (``--clock cpu``): on a machine that other jobs load, wall time counts
the time the scheduler gives to them, CPU time does not (both shift with the machine's state; the
interleaved ratios are what to read).

Settings and contenders: bench/contenders.py (``mlp``: MNIST image + label with MLPs; ``conv``: MNIST
28x28 + SVHN 32x32 with the default conv networks; ``polymnist-3``/``-5``: M identical conv experts).
Models: MVAE, MMVAE (ELBO and DReG K=10), MoPoE, and MEME (library only); every other model of the
library, against MultiVae with the same modules: bench/speed_models.py.

Run (MultiVae and mmvae in one environment; without MultiVae the other columns still run)::

    PYTHONPATH=src OMP_NUM_THREADS=1 <multivae-venv>/bin/python bench/speed.py --suite mlp
    PYTHONPATH=src OMP_NUM_THREADS=1 <multivae-venv>/bin/python bench/speed.py --suite conv polymnist-3 polymnist-5 \\
        --out docs/results/speed-conv.md
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmvae  # noqa: E402
from contenders import BATCH, CLOCKS, IMPLS, LIBRARY_ONLY, SUITES, Contender, make_data, make_networks  # noqa: E402

RATIOS = (("mmvae", "multivae"), ("mmvae-fused", "multivae"), ("mmvae-bf16", "multivae"), ("mmvae-bf16", "multivae-bf16"),
          ("mmvae-bf16", "mmvae-fused"), ("mmvae", "multivae-textbook"), ("mmvae-bf16", "multivae-textbook"),
          ("mmvae-bf16", "multivae-textbook-bf16"), ("mmvae", "hand"), ("mmvae-bf16", "hand"),
          ("mmvae-vec", "mmvae"), ("multivae", "hand"), ("trainer-step", "mmvae-fused"), ("trainer", "mmvae-epoch"))


def interleave(contenders: dict, reps: int, steps: int, label: str) -> dict[str, list[float]]:
    """``reps`` rounds; each runs every contender once (rotating order); samples/s per round."""
    names = list(contenders)
    speeds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            rows, seconds = contenders[n].run(steps)
            speeds[n].append(rows / seconds)
        line = "  ".join(f"{n} {speeds[n][-1]:7.0f}" for n in names)
        print(f"  {label:22s} {r + 1:2d}/{reps}: {line}  samples/s", flush=True)
    return speeds


FAILED: dict = {}   # (suite, model, impl) -> why the contender could not run


def measure(suite, name: str, impls: list[str], reps: int, block: int, trainer_reps: int, data, seed: int,
            clock, trainer_epochs: int = 3, checkpoint_every: float | None = None) -> dict[str, list[float]]:
    """Blocks of ``block`` steps of the bare loops, interleaved; then trainer epochs against bare
    mmvae epochs (key ``mmvae-epoch``)."""
    nets = make_networks(suite, seed)
    wanted = [i for i in impls if not (i in ("mmvae-vec", "multivae-textbook", "multivae-textbook-bf16") and suite.nets == "mlp")
              and not (name in LIBRARY_ONLY and (i.startswith("multivae") or i == "hand"))]
    contenders = {impl: Contender(impl, name, suite, nets, data, clock=clock) for impl in wanted if impl != "trainer"}
    if "trainer" in wanted:
        contenders["trainer"] = None
    bare = {k: c for k, c in contenders.items() if c is not None}
    for impl, c in list(bare.items()):
        try:
            c.run(2)  # warm-up: first-call allocations, Adam state
        except RuntimeError as e:
            if impl not in ("multivae-bf16", "multivae-textbook-bf16"):
                raise
            # MultiVae has no mixed precision; e.g. its MMVAE DReG gradient hook returns float32 for a
            # bf16 tensor, which autograd refuses: that column stays empty
            print(f"  {suite.name} {name}: {impl} does not run: {str(e).splitlines()[0]}", flush=True)
            FAILED[(suite.name, name, impl)] = str(e).splitlines()[0]
            del bare[impl], contenders[impl]
    speeds = interleave(bare, reps, block, f"{suite.name} {name}") if bare else {}   # --impls trainer: fits only
    if "trainer" in contenders and trainer_reps:
        # the bare epochs use the Trainer's optimizer, so the ratio is the Trainer's own overhead
        bare_epochs = Contender("mmvae-fused", name, suite, nets, data, clock=clock)
        trainer = Contender("trainer", name, suite, nets, data, clock=clock, epochs=trainer_epochs)
        if checkpoint_every is not None:
            trainer.cfg.checkpoint_every = checkpoint_every
        trainer.model = bare_epochs.model  # same (warm) weights
        bare_epochs.run(2)
        epochs = interleave({"mmvae-epoch": bare_epochs, "trainer": trainer},
                            trainer_reps, trainer_epochs * -(-len(data) // BATCH), f"{suite.name} {name}")
        speeds.update(epochs)
    return speeds


def ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios a/b (paired: both taken in the same round)."""
    return statistics.median(x / y for x, y in zip(a, b))


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (and, for AMD, the core generation): cloud
    CPUs often read just "AMD EPYC", and two generations under that name differ 2x in float32 GEMM rate
    per core (Zen 4 runs AVX-512 as two 256-bit halves, Zen 5 at full width), which moves every share
    of bench/roofline.py."""
    try:
        fields = {}
        for ln in open("/proc/cpuinfo"):
            if not ln.strip():
                break                                              # the first processor's block
            key, _, value = ln.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    family, model = fields.get("cpu family"), fields.get("model")
    if family is None or model is None:
        return name
    core = ""
    if fields.get("vendor_id") == "AuthenticAMD":
        avx512 = "avx512f" in fields.get("flags", "").split()
        core = {"23": "Zen/Zen 2", "25": "Zen 4" if avx512 else "Zen 3", "26": "Zen 5"}.get(family, "")
    return f"{name} (family {family}, model {model}{', ' + core if core else ''})"


def machine() -> str:
    cpu = cpu_name()
    try:
        from importlib.metadata import version

        import multivae  # noqa: F401
        mv = getattr(multivae, "__version__", None) or version("multivae")
    except ImportError:
        mv = "not installed"
    return (f"{cpu}, nproc {os.cpu_count()}, torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
            f"Python {platform.python_version()}, MultiVae {mv}, mmvae {mmvae.__version__}")


def kernel_check() -> str:
    """The build's speed for the Bernoulli likelihood's transcendental (log-sigmoid) against exp."""
    v = torch.randn(2_000_000)

    def best(f):
        f(v)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            f(v)
            times.append(time.perf_counter() - t0)
        return min(times) * 1e3

    return (f"log-sigmoid of 2M floats {best(F.logsigmoid):.1f} ms, exp {best(torch.exp):.1f} ms "
            f"(torch {torch.__version__}, 1 thread)")


def report_table(results: dict) -> str:
    """One row per (suite, model): median samples/s per contender and the paired ratios."""
    cols = [i for i in IMPLS if any(i in sp for sp in results.values())]
    pairs = [(a, b) for a, b in RATIOS if any(a in sp and b in sp for sp in results.values())]
    head = ["setting", "model"] + [f"{i} samples/s" for i in cols] + [f"{a} / {b}" for a, b in pairs]
    rows = []
    for (suite, name), sp in results.items():
        rows.append([suite, name] + [f"{statistics.median(sp[i]):,.0f}" if i in sp else "" for i in cols]
                    + [f"{ratio(sp[a], sp[b]):.2f}" if a in sp and b in sp else "" for a, b in pairs])
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


TARGETS = (
    (("mmvae", "multivae"), 1.5, None, "at least 1.5x MultiVae (same modules)"),
    (("mmvae", "multivae"), 2.0, ("polymnist-5",), "at least 2x MultiVae on PolyMNIST-5"),
    (("mmvae-bf16", "multivae"), 1.5, None, "at least 1.5x MultiVae as shipped (amp=auto: bf16 on a CPU with native bf16)"),
    (("mmvae-bf16", "multivae"), 2.0, ("polymnist-5",), "at least 2x MultiVae on PolyMNIST-5 as shipped (amp=auto)"),
    (("mmvae-bf16", "multivae-textbook"), 2.0, ("polymnist-5",),
     "at least 2x MultiVae on PolyMNIST-5 as shipped, MultiVae running the same networks as its own conv networks run"
     " (textbook nn.Sequential forward)"),
    (("mmvae", "hand"), 1.2, ("polymnist-3", "polymnist-5"), "at least 1.2x the hand loop where vectorisation applies"),
    (("trainer-step", "mmvae-fused"), 0.95, None, "Trainer's per-step overhead at most 5% (trainer-step / mmvae-fused >= 0.95)"),
    (("trainer", "mmvae-epoch"), 0.95, None, "whole fit within 5% of bare epochs (trainer / mmvae-epoch >= 0.95)"),
)


def targets(results: dict) -> str:
    """Issue 15's targets, each met or not, with the lowest ratio."""
    lines = []
    for (a, b), goal, where, text in TARGETS:
        got = {f"{s} {n}": ratio(sp[a], sp[b]) for (s, n), sp in results.items()
               if a in sp and b in sp and (where is None or s in where)}
        if got:
            worst = min(got, key=got.get)
            lines.append(f"- Target {text}: {'met' if got[worst] >= goal else 'NOT met'} "
                         f"(lowest: {worst} {got[worst]:.2f}).")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", nargs="+", default=["mlp"], choices=list(SUITES))
    ap.add_argument("--models", nargs="+", default=None, help="default: the suite's models")
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--reps", type=int, default=12, help="interleaved rounds of the bare loops")
    ap.add_argument("--block", type=int, default=8, help="training steps per contender per round")
    ap.add_argument("--trainer-reps", type=int, default=3, help="rounds of trainer fit vs bare mmvae epochs")
    ap.add_argument("--trainer-epochs", type=int, default=3, help="epochs per trainer fit (and per bare round)")
    ap.add_argument("--checkpoint-every", type=float, default=None,
                    help="the trainer column's checkpoint_every (seconds; 0: a checkpoint after every epoch; "
                         "default: the library's)")
    ap.add_argument("--rows", type=int, default=None, help="rows of one epoch (default: the suite's)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (1: on a shared 2-core machine, 2 threads stall on each other)")
    ap.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                    help="cpu: process CPU time (robust to other jobs on the machine); wall: elapsed time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/speed.md", help="markdown report ('' to skip)")
    args = ap.parse_args(argv)
    if any(i.startswith("multivae") for i in args.impls) and importlib.util.find_spec("multivae") is None:
        print("multivae is not installed here: measuring the other implementations only", file=sys.stderr)
        args.impls = [i for i in args.impls if not i.startswith("multivae")]

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # MultiVae's Bernoulli rejects grey levels under torch's default argument validation; switching
    # validation off process-wide lets it train on grey images and removes validation's cost from its
    # step (its best case). mmvae and the hand loop never validate in the hot loop anyway.
    torch.distributions.Distribution.set_default_validate_args(False)
    load_before = os.getloadavg()
    print(machine())
    results = {}
    t0 = time.time()
    for suite_name in args.suite:
        suite = SUITES[suite_name]
        data = make_data(suite, args.rows or suite.rows, args.seed)
        for name in args.models or suite.models:
            results[(suite_name, name)] = measure(suite, name, list(args.impls), args.reps, args.block,
                                                  args.trainer_reps, data, args.seed, CLOCKS[args.clock],
                                                  args.trainer_epochs, args.checkpoint_every)
    load_after = os.getloadavg()
    table = report_table(results)
    verdict = targets(results)
    if FAILED:
        verdict += "\n\nContenders that did not run (empty cells): " + "; ".join(
            f"{s} {n} {i}: {why}" for (s, n, i), why in FAILED.items()) + "."
    print("\n" + table + "\n\n" + verdict)
    if not args.out:
        return
    cmd = "python bench/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    spread = "\n".join(f"- {s} {name}: " + "; ".join(f"{i} " + ", ".join(f"{v:,.0f}" for v in sp[i]) for i in sp)
                       for (s, name), sp in results.items())
    every = args.checkpoint_every
    if every is None:   # the library's default (0 for a version before the option: a checkpoint per epoch)
        every = getattr(mmvae.Config(), "checkpoint_every", 0)
    cadence = "after every epoch" if every == 0 else f"at the first epoch end every {every:g} s (`checkpoint_every`)"
    text = f"""# Training throughput (issues 2 and 15)

Command: `PYTHONPATH=src OMP_NUM_THREADS=1 {cmd.strip()}` (mmvae and MultiVae in one environment), seed
{args.seed}; {time.time() - t0:.0f} s in all.

Machine: {machine()}. **Shared machine**: other jobs ran at the same time (load average
{load_before[0]:.2f} before, {load_after[0]:.2f} after). Clock: {'process CPU time' if args.clock == 'cpu' else 'wall time'};
absolute samples/s drift with the machine's state, read the ratios.

Protocol: {args.reps} rounds; in each, every contender trains {args.block} steps of batch {BATCH} (rotating
order), so all share the machine's state of that moment; samples/s are medians over rounds and each ratio
is the median of the per-round ratios. The trainer column: {args.trainer_reps} rounds of one `Trainer.fit` of
{args.trainer_epochs} epochs (no validation split; run folder, config.json, checkpoints on disk at step 0, at
the end and {cadence}, the final samples.png) against {args.trainer_epochs} bare-loop epochs of the same model with the
Trainer's optimizer (`mmvae-epoch`), interleaved: `trainer / mmvae-epoch` is the Trainer's whole cost (per
step, per epoch and per run); `trainer-step / mmvae-fused` is its per-step part alone (`Trainer._step`,
in the main rounds).

Settings and contenders: bench/contenders.py. `mmvae` = the library with its defaults (on CPU the
per-modality loop: `vectorise=auto`) and torch.optim.Adam's default implementation, as every bare loop
here; `mmvae-fused` = the same with the optimizer mmvae's Trainer uses (fused Adam); `mmvae-bf16` = `mmvae-fused`
under bf16 autocast, as the Trainer runs with `amp=bf16` (what `amp=auto` picks on a CPU with AVX512-BF16 or
AMX, or a GPU with bf16); `multivae-bf16` = MultiVae's loss wrapped in the same autocast by hand (MultiVae
itself has no mixed-precision option); `mmvae-vec` = `--set vectorise=true` (identically shaped experts
as one vmapped call); `multivae` = MultiVae 1.0.3 given the very same modules; `multivae-textbook` = the
same weights in modules that run the textbook `nn.Sequential` forward (what MultiVae's own conv networks
do: MultiVae as its users run conv networks); `multivae-textbook-bf16` = that under the hand-wrapped autocast; `hand` = the loss written for that model alone, calling the same modules. MultiVae and mmvae run in
the same bare loop (in-memory batches, `loss.backward()`, `Adam.step()`; MultiVae's trainer would add a
DataLoader: this is its best case); torch.distributions argument validation is off for the process.

{table}

{verdict}

Kernel check of this build: {kernel_check()}.

Models: `mvae` = joint + unimodal subset ELBOs (MultiVae `MVAE(use_subsampling=True, k=0)`);
`mmvae-elbo` = stratified naive ELBO, Laplace posteriors, K=1 (MultiVae `MMVAE(K=1, loss="iwae_looser")`);
`mmvae-dreg10` = stratified DReG, K=10 per expert, the authors' estimator (mmvae `objective=dreg-authors`,
MultiVae `MMVAE(K=10, loss="dreg_looser")`); `mopoe` = mixture of subset products, analytic KL
(MultiVae `MoPoE`); `meme` = MEME (mmvae only: MultiVae has no MEME and no hand-written loss is raced).
MultiVae's MMVAE prior is fixed here (`learn_prior=False`), as in mmvae. The other models: bench/speed_models.py.

Per-round samples/s:
{spread}
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
