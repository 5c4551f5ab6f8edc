"""``--compile`` on CPU, per model (issue 15, item 2): compile time, steady-state speed, and the net
effect over one epoch.

For each model: the eager library step against the step compiled the way ``Trainer`` compiles it
(``LossModule(model).compile()``, torch.compile's default inductor backend), same networks and weights.
The first compiled step is timed alone (wall clock, and CPU time of this process plus its compile
workers), with an empty inductor cache (a fresh ``TORCHINDUCTOR_CACHE_DIR``) unless ``--warm-cache``; then eager and compiled steps run in interleaved rounds (median of per-round ratios, CPU
time by default). "One epoch" is the suite's epoch (bench/contenders.py): eager epoch time against
compile time + compiled epoch time.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/compile_speed.py --suite mlp polymnist-3
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import BATCH, CLOCKS, SUITES, Contender, make_data, make_networks  # noqa: E402
from speed import interleave, machine, ratio  # noqa: E402


def cpu_with_children() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def measure(suite, name, reps, block, seed, clock):
    nets = make_networks(suite, seed)
    data = make_data(suite, suite.rows, seed)
    eager = Contender("mmvae", name, suite, nets, data, clock=clock)
    compiled = Contender("mmvae-compiled", name, suite, nets, data, clock=clock)
    eager.run(2)
    w0, c0 = time.perf_counter(), cpu_with_children()
    compiled.run(1)                       # the compiling step
    first_wall, first_cpu = time.perf_counter() - w0, cpu_with_children() - c0
    compiled.run(1)
    speeds = interleave({"eager": eager, "compiled": compiled}, reps, block, f"{suite.name} {name}")
    steps = -(-suite.rows // BATCH)
    eager_epoch = suite.rows / statistics.median(speeds["eager"])
    compiled_epoch = suite.rows / statistics.median(speeds["compiled"])
    return {"steady": ratio(speeds["compiled"], speeds["eager"]), "first_wall": first_wall, "first_cpu": first_cpu,
            "eager_step": eager_epoch / steps, "steps": steps,
            "epoch": eager_epoch / (compiled_epoch + first_wall), "speeds": speeds,
            "break_even": first_wall / (eager_epoch / steps * (1 - 1 / ratio(speeds["compiled"], speeds["eager"])))
            if ratio(speeds["compiled"], speeds["eager"]) > 1 else math.inf}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", nargs="+", default=["mlp", "polymnist-3"], choices=list(SUITES))
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/speed-compile.md")
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep inductor's on-disk cache (default: a fresh one, so every compile is a first compile)")
    args = ap.parse_args(argv)
    if not args.warm_cache:   # before the first compile reads it
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)
    t0, load = time.time(), os.getloadavg()[0]
    rows = []
    for s in args.suite:
        suite = SUITES[s]
        for name in args.models or suite.models:
            r = measure(suite, name, args.reps, args.block, args.seed, CLOCKS[args.clock])
            be = f"{r['break_even']:,.0f}" if math.isfinite(r["break_even"]) else "never"
            rows.append(f"| {s} | {name} | {r['first_wall']:.0f} | {r['first_cpu']:.0f} | {r['eager_step'] * 1e3:.0f} | "
                        f"{r['steady']:.2f} | {r['steps']} | {r['epoch']:.2f} | {be} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| setting | model | first compiled step, wall s | its CPU s (with compile workers) | "
                       "eager step, ms | compiled / eager steps/s (steady) | steps per epoch | "
                       "eager epoch / (compile + compiled epoch) | steps to break even |",
                       "|---|---|---|---|---|---|---|---|---|"] + rows)
    print(table)
    if not args.out:
        return
    cmd = "python bench/compile_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).write_text(f"""# `--compile` on CPU (issue 15, item 2)

Command: `PYTHONPATH=src OMP_NUM_THREADS=1 {cmd.strip()}`; {time.time() - t0:.0f} s in all.
Machine: {machine()}; shared (load average {load:.2f} at the start), one torch thread.

Per model: the library's step eager and compiled as `Trainer` compiles it (`LossModule(model).compile()`,
inductor). "First compiled step" is the step that compiles ({'a warm' if args.warm_cache else 'an empty'} inductor cache; wall time on the shared
machine, and CPU time of this process plus inductor's compile workers); steady-state speed is the median of {args.reps}
interleaved rounds of {args.block} steps ({'CPU' if args.clock == 'cpu' else 'wall'} time); the epoch
column charges the compile to one epoch of the suite (bench/contenders.py; steps of batch {BATCH});
"steps to break even" = compile wall time / the time a compiled step saves.

{table}
""")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
