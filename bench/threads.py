"""How many torch threads a small machine should use: training steps/s at 1 and 2 threads (issue 14).

Two setups, each the model and data of a real run, trained by the plain step (``model.loss`` + Adam
on shuffled batches of 128, what the Trainer does per step):

* ``default``: the no-argument ``mmvae train`` (MVAE, MLPs of 512, on offline mnist-label);
* ``polymnist-conv``: ``mmvae train --model mopoe --dataset polymnist`` (3 modalities, conv nets).

Conditions: threads 1 and 2 (2 = torch's own default on a 2-core machine), each with the machine as it
is ("idle": no load added by this script) and with one extra busy process (a Python spin loop, the
"other core busy" case of a laptop compiling or a second job). Rounds interleave every condition (the
order rotates) so that drift of a shared machine hits all alike; the table gives medians over rounds
and the load average seen during the run.

    OMP_NUM_THREADS=1 python bench/threads.py [--rounds 5] [--out docs/results/threads.md]

(OMP_NUM_THREADS only sets the start; the script sets the threads of each block itself.)
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mmvae.config import Config
from mmvae.data.registry import load_dataset
from mmvae.models.registry import build_model, modalities_for
from mmvae.data.select import select_modalities

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {"default": dict(), "polymnist-conv": dict(model="mopoe", dataset="polymnist")}


def make(setup: str, seed: int = 0):
    cfg = Config(**SETUPS[setup], seed=seed)
    torch.manual_seed(seed)
    splits = load_dataset(cfg.dataset, seed=seed, **cfg.data)
    splits = select_modalities(splits, modalities_for(cfg, splits.specs))
    model = build_model(splits.specs, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return cfg, splits.train, model, opt


def steps_per_second(cfg, data, model, opt, steps: int, threads: int, gen: torch.Generator) -> float:
    torch.set_num_threads(threads)
    model.train()
    order = torch.randperm(len(data), generator=gen)
    batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(steps)]
    loss, _ = model.loss(data.batch(batches[0]), 1.0)    # warm-up step, not timed
    loss.backward()
    opt.zero_grad(set_to_none=True)
    t = time.perf_counter()
    for idx in batches:
        loss, _ = model.loss(data.batch(idx), 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t)


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, nargs=2, default=(20, 6), metavar=("DEFAULT", "POLYMNIST"),
                    help="timed steps per block for the two setups")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "threads.md"))
    args = ap.parse_args(argv)
    t0 = time.time()
    built = {s: make(s) for s in SETUPS}
    steps = dict(zip(SETUPS, args.steps))
    conditions = [(threads, busy) for busy in (False, True) for threads in (1, 2)]
    rates: dict[tuple, list[float]] = {}
    loads = []
    gen = torch.Generator().manual_seed(0)
    for r in range(args.rounds):
        for i in range(len(conditions)):
            threads, busy = conditions[(i + r) % len(conditions)]
            proc = busy_process() if busy else None
            try:
                if proc:
                    time.sleep(0.5)
                for setup, (cfg, data, model, opt) in built.items():
                    sps = steps_per_second(cfg, data, model, opt, steps[setup], threads, gen)
                    rates.setdefault((setup, threads, busy), []).append(sps)
                loads.append(os.getloadavg()[0])
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k[0]} t{k[1]}{' busy' if k[2] else ''} "
                                                           f"{v[-1]:.2f}" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = ["# Threads: training steps/s at 1 and 2 torch threads", "",
             f"Command: `OMP_NUM_THREADS=1 python bench/threads.py --rounds {args.rounds} --steps "
             f"{args.steps[0]} {args.steps[1]}`; torch {torch.__version__}, {platform.machine()}, "
             f"{os.cpu_count()} cores; {time.time() - t0:.0f} s in all.", "",
             f"**Conditions**: a machine shared with other jobs (load average during the blocks: median "
             f"{statistics.median(loads):.2f}, range {min(loads):.2f}–{max(loads):.2f}); 'idle' adds no load, "
             f"'busy' adds one Python spin loop. Medians over {args.rounds} interleaved rounds; batch 128.", "",
             "| setup | condition | 1 thread (steps/s) | 2 threads (steps/s) | 2 threads / 1 thread |",
             "|---|---|---|---|---|"]
    for setup in SETUPS:
        for busy in (False, True):
            one, two = med[(setup, 1, busy)], med[(setup, 2, busy)]
            lines.append(f"| {setup} | {'other core busy' if busy else 'idle'} | {one:.2f} | {two:.2f} | "
                         f"{two / one:.2f} |")
    lines += ["", "Per-round figures (steps/s):", ""]
    for k, v in rates.items():
        lines.append(f"* {k[0]}, {k[1]} thread(s), {'busy' if k[2] else 'idle'}: " + ", ".join(f"{x:.2f}" for x in v))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
