"""CPU time of samples.png (``evaluation.pictures.sample_grid``, drawn once per ``mmvae train`` run; issue 15,
item 3), before/after a change, in one process.

For each dataset the default model (MoPoE) is built with the default networks and trained for ``--steps``
Adam steps (so the pictures show digits, not noise: the drawing's cost does not depend on it). Then, in each
of ``--rounds`` rounds, every variant draws the grid once, in alternating order, the same seed for all:

* ``now``: this tree's ``mmvae.evaluation.pictures``;
* ``before`` (with ``--before FILE``): another version of ``pictures.py`` (e.g. ``git show
  REV:src/mmvae/evaluation/pictures.py > FILE``), loaded as a module of this tree's package (its relative
  imports resolve to this tree: only the drawing differs).

Reported: median CPU ms per grid (``time.process_time``) and the median of the per-round ratios. With
``--png-dir DIR`` each variant's last picture is kept as ``DIR/<dataset>-<variant>.png`` to look at::

    OMP_NUM_THREADS=1 python bench/picture_speed.py --before OLD_pictures.py --rounds 12 --png-dir DIR

``--cold`` measures what one ``mmvae train`` process pays instead: in each round, for each variant in
alternating order, a fresh Python process builds the (untrained) model, then times importing the pictures
module (and so whatever it imports, e.g. matplotlib.pyplot) plus its first grid::

    OMP_NUM_THREADS=1 python bench/picture_speed.py --before OLD_pictures.py --rounds 10 --cold
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mmvae
from mmvae.config import Config
from mmvae.data.registry import load_dataset
from mmvae.models.registry import build_model
from mmvae.train.trainer import make_adam

DATASETS = {"mnist-label": {}, "polymnist-3": {"modalities": 3}, "toy": {}, "mnist-text": {}}


def load_variant(name: str, before: str | None):
    """``now``: this tree's pictures module; ``before``: the file ``before`` (a pictures.py) as the module
    ``mmvae.evaluation._pictures_before``."""
    if name == "now":
        return importlib.import_module("mmvae.evaluation.pictures")
    spec = importlib.util.spec_from_file_location("mmvae.evaluation._pictures_before", before)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_cold(args) -> None:
    """(In a fresh process) print CPU ms of importing variant ``args.one`` and drawing its first grid."""
    model, test = trained_model(args.datasets[0], 0, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        c = time.process_time()
        load_variant(args.one, args.before).sample_grid(model, test, Path(tmp) / "samples.png")
        print(1000 * (time.process_time() - c))


def cold(args, names: list[str]) -> None:
    """Each variant's import + first grid, in fresh processes, alternating."""
    ratio = " | now / before (paired median)" if args.before else ""
    print(f"| dataset | {' | '.join(f'{v}: import + first grid, ms (median)' for v in names)}{ratio} |\n|---|"
          + "---|" * (len(names) + bool(args.before)))
    for dataset in args.datasets:
        cpu = {v: [] for v in names}
        for r in range(args.rounds):
            for v in (names if r % 2 else names[::-1]):
                cmd = [sys.executable, __file__, "--one", v, "--datasets", dataset, "--seed", str(args.seed)]
                out = subprocess.run(cmd + (["--before", args.before] if args.before else []), check=True,
                                     capture_output=True, text=True).stdout
                cpu[v].append(float(out.split()[-1]))
        cells = " | ".join(f"{statistics.median(cpu[v]):.0f}" for v in names)
        if args.before:
            cells += f" | {statistics.median(a / b for a, b in zip(cpu['now'], cpu['before'])):.2f}"
        print(f"| {dataset} | {cells} |", flush=True)


def trained_model(dataset: str, steps: int, seed: int):
    """(model in eval mode, test split): the default model of ``dataset`` after ``steps`` Adam steps."""
    name = dataset.split("-3")[0]
    cfg = Config(seed=seed, device="cpu", dataset=name, data=dict(DATASETS[dataset]))
    torch.manual_seed(seed)
    splits = load_dataset(name, seed=seed, **cfg.data)
    model = build_model(splits.train.specs, cfg)
    opt = make_adam(model.parameters(), lr=cfg.lr)
    for i in range(steps):
        rows = torch.randint(len(splits.train), (cfg.batch_size,), generator=torch.Generator().manual_seed(i))
        loss, _ = model.loss(splits.train.batch(rows), cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval(), splits.test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", help="another version of src/mmvae/evaluation/pictures.py to compare with")
    p.add_argument("--datasets", nargs="+", default=["mnist-label", "polymnist-3"], choices=sorted(DATASETS))
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=60, help="Adam steps before drawing (pictures of digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png-dir", help="keep each variant's picture here")
    p.add_argument("--cold", action="store_true", help="import + first grid, each in a fresh process")
    p.add_argument("--one", choices=["now", "before"], help=argparse.SUPPRESS)   # (--cold's child process)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.one:
        return one_cold(args)
    names = ["before", "now"] if args.before else ["now"]
    print(f"samples.png CPU time, {args.rounds} rounds, alternating; mmvae {mmvae.__version__}, torch "
          f"{torch.__version__}, 1 thread; load average {os.getloadavg()[0]:.2f} before\n")
    if args.cold:
        cold(args, names)
        return print(f"\nload average {os.getloadavg()[0]:.2f} after")
    variants = {v: load_variant(v, args.before) for v in names}
    head = " | ".join(f"{v} ms (median)" for v in names)
    ratio = " | now / before (paired median)" if args.before else ""
    print(f"| dataset | {head}{ratio} |\n|---|" + "---|" * (len(names) + bool(args.before)))
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            model, test = trained_model(dataset, args.steps, args.seed)
            cpu = {v: [] for v in names}
            for r in range(args.rounds + 1):              # round 0 warms up (fonts, caches), not counted
                for v in (names if r % 2 else names[::-1]):
                    path = Path(tmp) / f"{dataset}-{v}.png"
                    torch.manual_seed(args.seed)
                    c = time.process_time()
                    variants[v].sample_grid(model, test, path)
                    if r:
                        cpu[v].append(1000 * (time.process_time() - c))
            cells = " | ".join(f"{statistics.median(cpu[v]):.0f}" for v in names)
            if args.before:
                cells += f" | {statistics.median(a / b for a, b in zip(cpu['now'], cpu['before'])):.2f}"
            print(f"| {dataset} | {cells} |", flush=True)
            if args.png_dir:
                Path(args.png_dir).mkdir(parents=True, exist_ok=True)
                for v in names:
                    shutil.copy(Path(tmp) / f"{dataset}-{v}.png", Path(args.png_dir) / f"{dataset}-{v}.png")
    print(f"\nload average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
