"""Where a whole ``Trainer.fit`` spends its time beyond the bare training loop (issue 15, item 3).

The default run's setting (``mmvae train`` with no arguments: MoPoE on mnist-label, batch 128, 32 steps
an epoch, a validation split), small epochs, one process, one thread. Each round runs, in rotating order:

* ``bare``: the same number of epochs of a bare loop (``model.loss``, ``backward``, the Trainer's fused
  Adam) over the same training rows in batches of the same size, no validation, no files;
* one ``Trainer.fit`` per ``--every`` value (``checkpoint_every`` seconds; 0 = a checkpoint on disk after
  every epoch), each on a fresh copy of the same initial weights into a new temporary run folder.

Inside each fit every piece of the Trainer's work is timed by wrapping it on the instance (wall and process
CPU time): the optimizer steps (``Trainer._step``), the progress line, validation, the finiteness check,
the in-memory snapshot (the rollback point), the disk commits (``integrity.commit``: temporary file,
fsync, rename, sha256), metrics.jsonl, the printed epoch line, samples.png; "other" is the rest of the fit.
Figures are medians over rounds, as ratios to the bare loop of the same round (the machine is shared).

    OMP_NUM_THREADS=1 python bench/trainer_overhead.py [--epochs 10] [--rounds 3] [--every 0 60]

``--cli`` times the whole default run instead: ``mmvae train --seed S --out TMP`` in a subprocess (start-up,
data, 60 epochs, checkpoints, samples.png), alternating between variants each round: ``--set`` lists
(e.g. ``checkpoint_every=0`` against the default) and ``--src`` source trees (another checkout's ``src``,
e.g. one exported with ``git archive``: before/after a change). It reports each run's wall time and the
epochs' own seconds from metrics.jsonl::

    OMP_NUM_THREADS=1 python bench/trainer_overhead.py --cli --rounds 3 --variants "" "checkpoint_every=0"

``--per-step`` times single optimizer steps instead, in one process: in each round ``--block`` steps of
the bare loop (``model.loss``, ``zero_grad``, ``backward``, the Trainer's fused Adam), of ``Trainer._step``,
and of ``Trainer._step`` with the divergence guard's former per-step pass over the gradients put back
(the total norm, ``torch._foreach_norm``, and its finiteness test before ``optimizer.step``: the guard
until issue 15 item 3), each on its own copy of the same weights, on the same batches, rotating order;
CPU time, medians of the per-round ratios::

    OMP_NUM_THREADS=1 python bench/trainer_overhead.py --per-step --rounds 40 --models mopoe mvae mmvae
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stderr
from io import StringIO
from pathlib import Path

import torch

import mmvae
from mmvae.config import Config
from mmvae.data.dataset import validation_split
from mmvae.data.registry import load_dataset
from mmvae.models.registry import build_model
from mmvae.train import integrity
from mmvae.train import trainer as trainer_module
from mmvae.train.trainer import Trainer, make_adam

PARTS = ("steps", "progress", "validate", "finite check", "snapshot", "disk commits", "metrics.jsonl",
         "epoch line", "samples.png")


REPORT: list[str] = []


def say(text: str) -> None:
    """Print a line of the report (also written to ``--out``)."""
    print(text, flush=True)
    REPORT.append(text)


class Clock:
    """Wall and CPU seconds accumulated per part."""

    def __init__(self):
        self.wall = {p: 0.0 for p in PARTS}
        self.cpu = {p: 0.0 for p in PARTS}
        self.calls = {p: 0 for p in PARTS}

    def wrap(self, part: str, fn):
        def timed(*a, **k):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.wall[part] += time.perf_counter() - w
                self.cpu[part] += time.process_time() - c
                self.calls[part] += 1
        return timed


def timed_fit(cfg: Config, splits, model, every: float | None) -> tuple[float, float, Clock]:
    """One Trainer.fit with every part timed: (wall s, CPU s, parts)."""
    clock = Clock()
    cfg = copy.deepcopy(cfg)
    if every is not None:
        cfg.checkpoint_every = every
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out = str(Path(tmp) / "run")
        t = Trainer(cfg, splits=splits, model=model, show_progress=False)
        finite = "_state_finite" if hasattr(t, "_state_finite") else "_params_finite"   # (the name before item 3)
        for name, part in (("_step", "steps"), ("validate", "validate"), (finite, "finite check"),
                           ("_snapshot", "snapshot"), ("_log", "metrics.jsonl"), ("_say", "epoch line"),
                           ("_finish", "samples.png")):
            setattr(t, name, clock.wrap(part, getattr(t, name)))
        make_line = t._progress_line

        def progress_line(epoch):
            bar = clock.wrap("progress", make_line)(epoch)
            bar.update = clock.wrap("progress", bar.update)
            bar.close = clock.wrap("progress", bar.close)
            return bar

        t._progress_line = progress_line
        commit = integrity.commit
        integrity.commit = clock.wrap("disk commits", commit)
        try:
            with redirect_stderr(StringIO()):
                w, c = time.perf_counter(), time.process_time()
                t.fit()
                return time.perf_counter() - w, time.process_time() - c, clock
        finally:
            integrity.commit = commit


def bare_epochs(cfg: Config, train, model, epochs: int) -> tuple[float, float]:
    """The same epochs as a bare loop: (wall s, CPU s)."""
    opt = make_adam(model.parameters(), lr=cfg.lr)
    model.train()
    w, c = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), cfg.batch_size):
            loss, _ = model.loss(train.batch(order[i:i + cfg.batch_size]), cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - w, time.process_time() - c


def cli_run(src: str, sets: list[str], seed: int) -> tuple[float, float]:
    """One ``mmvae train`` with the default settings: (wall s, the epochs' own seconds)."""
    import json
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "mmvae", "train", "--seed", str(seed), "--out", str(out), "--quiet"]
        for item in sets:
            cmd += ["--set", item]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        epochs = sum(r.get("seconds", 0.0) for r in recs if "event" not in r)
    return wall, epochs


def cli_main(args) -> None:
    here = str(Path(__file__).resolve().parents[1] / "src")
    variants = [(src, v) for src in (args.src or [here]) for v in args.variants]
    label = {(src, v): (f"src {i} " if len(args.src or [here]) > 1 else "") + (v or "defaults")
             for i, src in enumerate(args.src or [here]) for v in args.variants}
    walls = {k: [] for k in variants}
    epochs = {k: [] for k in variants}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for k in order:
            w, e = cli_run(k[0], [x for x in k[1].split() if x], args.seed + r)
            walls[k].append(w)
            epochs[k].append(e)
            print(f"round {r + 1}: {label[k]:30s} wall {w:6.2f} s, epochs {e:6.2f} s", flush=True)
    load_after = os.getloadavg()
    base = variants[0]
    say(f"\n`mmvae train --seed S --out TMP --quiet`, seeds {args.seed}..{args.seed + args.rounds - 1} (one per "
          f"round, the same for every variant); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    say(f"| variant | wall s (median) | epochs' own s (median) | wall - epochs s | wall / {label[base]} (paired median) |")
    say("|---|---|---|---|---|")
    for k in variants:
        rel = statistics.median(a / b for a, b in zip(walls[k], walls[base]))
        rest = statistics.median(w - e for w, e in zip(walls[k], epochs[k]))
        say(f"| {label[k]} | {statistics.median(walls[k]):.2f} | {statistics.median(epochs[k]):.2f} | {rest:.2f} | "
              f"{rel:.3f} |")


def former_guard(optimizer, model):
    """``optimizer`` whose ``step`` first computes the total gradient norm and tests it (the former guard)."""
    step = optimizer.step
    params = list(model.parameters())

    def guarded_step(*a, **k):
        grads = [q.grad for q in params if q.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if not bool(torch.isfinite(norm)):
            raise RuntimeError("non-finite gradient")
        return step(*a, **k)

    optimizer.step = guarded_step
    return optimizer


def per_step_main(args) -> None:
    """Per-step CPU time: bare loop, Trainer._step, Trainer._step with the former gradient-norm guard."""
    torch.set_num_threads(1)
    say(f"\nper optimizer step, CPU time, {args.rounds} rounds of {args.block} steps per contender (rotating order); "
        f"mmvae {mmvae.__version__}, torch {torch.__version__}, 1 thread; load average {os.getloadavg()[0]:.2f} before")
    say("\n| model | bare ms/step | Trainer._step / bare | with the former norm guard / bare | Trainer._step / with the former guard |")
    say("|---|---|---|---|---|")
    for name in args.models:
        cfg = Config(seed=args.seed, epochs=1, device="cpu", amp="off")   # float32, as the bare loop
        cfg.model, cfg.dataset = name, args.dataset or cfg.dataset
        splits = load_dataset(cfg.dataset, seed=cfg.seed)
        with tempfile.TemporaryDirectory() as tmp:
            trainers = []
            for i in range(2):
                cfg.out = str(Path(tmp) / f"run{i}")
                torch.manual_seed(cfg.seed)
                trainers.append(Trainer(copy.deepcopy(cfg), splits=splits, show_progress=False))
            trainers[1].model.load_state_dict(trainers[0].model.state_dict())
            former_guard(trainers[1].optimizer, trainers[1].model)
            for t in trainers:
                t.started = time.time()
            data = trainers[0].train_data
            model = copy.deepcopy(trainers[0].model)
            opt = make_adam(model.parameters(), lr=cfg.lr)
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size)]

            def bare(k):
                loss, _ = model.loss(data.batch(batches[k % len(batches)]), 1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            runs = {"bare": bare, "trainer": lambda k: trainers[0]._step(batches[k % len(batches)], 1.0),
                    "former": lambda k: trainers[1]._step(batches[k % len(batches)], 1.0)}
            times = {n: [] for n in runs}
            for f in runs.values():      # warm-up: first-call allocations, Adam state
                f(0)
                f(1)
            for r in range(args.rounds):
                names = list(runs)
                for n in names[r % 3:] + names[:r % 3]:
                    c = time.process_time()
                    for k in range(args.block):
                        runs[n](r * args.block + k)
                    times[n].append(time.process_time() - c)
        med = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
        say(f"| {name} on {cfg.dataset} | {statistics.median(times['bare']) / args.block * 1e3:.2f} | "
            f"{med('trainer', 'bare'):.3f} | {med('former', 'bare'):.3f} | {med('trainer', 'former'):.3f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", action="store_true", help="time whole `mmvae train` runs in subprocesses instead")
    ap.add_argument("--variants", nargs="+", default=["", "checkpoint_every=0"],
                    help="--cli: space-separated --set items per variant ('' = the defaults)")
    ap.add_argument("--src", nargs="+", default=None, help="--cli: source trees to alternate (default: this one)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per fit (and per bare round)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--every", type=float, nargs="+", default=[0.0, 60.0],
                    help="checkpoint_every values to fit with (seconds; 0: a checkpoint after every epoch)")
    ap.add_argument("--per-step", action="store_true", help="time single optimizer steps instead (see above)")
    ap.add_argument("--models", nargs="+", default=["mopoe"], help="--per-step: the models (default data)")
    ap.add_argument("--block", type=int, default=8, help="--per-step: steps per contender per round")
    ap.add_argument("--model", default=None, help="default: the no-argument run's")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="append the report (markdown) to this file")
    args = ap.parse_args(argv)
    if args.cli:
        cli_main(args)
    elif args.per_step:
        per_step_main(args)
    else:
        fit_main(args)
    if args.out:
        cmd = "OMP_NUM_THREADS=1 python bench/trainer_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.out, "a") as f:
            f.write(f"\nCommand: `{cmd.strip()}`\n\n" + "\n".join(REPORT) + "\n")


def fit_main(args) -> None:
    torch.set_num_threads(1)
    cfg = Config(seed=args.seed, epochs=args.epochs, device="cpu", amp="off")   # float32, as the bare loop
    cfg.model, cfg.dataset = args.model or cfg.model, args.dataset or cfg.dataset
    if not hasattr(cfg, "checkpoint_every"):     # a checkout before the option: today's behaviour only
        args.every = [None]
    splits = load_dataset(cfg.dataset, seed=cfg.seed)
    train, _ = validation_split(splits.train, cfg.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    initial = build_model(splits.specs, cfg).state_dict()

    def fresh():
        m = build_model(splits.specs, cfg)
        m.load_state_dict(initial)
        return m

    names = ["bare"] + [f"fit every={e:g}" if e is not None else "fit" for e in args.every]
    totals = {n: [] for n in names}          # (wall, cpu) per round
    parts = {n: [] for n in names[1:]}       # Clock per round
    load_before = os.getloadavg()
    bare_epochs(cfg, train, fresh(), 1)      # warm-up
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            if n == "bare":
                totals[n].append(bare_epochs(cfg, train, fresh(), args.epochs))
            else:
                every = args.every[names.index(n) - 1]
                wall, cpu, clock = timed_fit(cfg, splits, fresh(), every)
                totals[n].append((wall, cpu))
                parts[n].append(clock)
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {totals[n][-1][0]:.2f}s wall {totals[n][-1][1]:.2f}s cpu"
                                                          for n in names), flush=True)
    load_after = os.getloadavg()

    def med_ratio(values, ref, i):
        return statistics.median(v / b[i] for v, b in zip(values, ref))

    steps = args.epochs * -(-len(train) // cfg.batch_size)
    say(f"\n{cfg.model} on {cfg.dataset}: {args.epochs} epochs of {steps // args.epochs} steps, {args.rounds} "
          f"rounds; mmvae {mmvae.__version__}, torch {torch.__version__}, 1 thread; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    bare = totals["bare"]
    say(f"bare loop: median {statistics.median(w for w, _ in bare):.2f} s wall, "
          f"{statistics.median(c for _, c in bare):.2f} s CPU")
    head = "| part | " + " | ".join(f"{n}: wall / bare | {n}: CPU / bare | {n}: calls" for n in names[1:]) + " |"
    say("\n" + head + "\n|" + "---|" * (1 + 3 * len(names[1:])))
    rows = ["whole fit"] + list(PARTS) + ["other"]
    for row in rows:
        cells = []
        for n in names[1:]:
            if row == "whole fit":
                vals, calls = totals[n], ""
            elif row == "other":
                vals = [(tw - sum(c.wall.values()), tc - sum(c.cpu.values())) for (tw, tc), c in zip(totals[n], parts[n])]
                calls = ""
            else:
                vals = [(c.wall[row], c.cpu[row]) for c in parts[n]]
                calls = str(parts[n][0].calls[row])
            cells += [f"{med_ratio([v[0] for v in vals], bare, 0):.3f}", f"{med_ratio([v[1] for v in vals], bare, 1):.3f}",
                      calls]
        say(f"| {row} | " + " | ".join(cells) + " |")
    say("\n(whole fit / bare = 1 + overhead; 'steps' / bare is the per-step part alone; the rows below "
        "'steps' sum with it and 'other' to the whole fit)")
    # The same parts as shares of the fit's own optimizer steps: both timed inside one fit, so this is
    # robust to the machine's drift between the rounds (the bare loop runs at another moment).
    head = "| part | " + " | ".join(f"{n}: wall / its steps | {n}: CPU / its steps" for n in names[1:]) + " |"
    say("\n" + head + "\n|" + "---|" * (1 + 2 * len(names[1:])))
    for row in ["whole fit"] + [r for r in PARTS if r != "steps"] + ["other"]:
        cells = []
        for n in names[1:]:
            for i, attr in ((0, "wall"), (1, "cpu")):
                per_round = []
                for (tw, tc), c in zip(totals[n], parts[n]):
                    own = getattr(c, attr)
                    total = (tw, tc)[i]
                    value = total if row == "whole fit" else total - sum(own.values()) if row == "other" else own[row]
                    per_round.append(value / own["steps"])
                cells.append(f"{statistics.median(per_round):.3f}")
        say(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
