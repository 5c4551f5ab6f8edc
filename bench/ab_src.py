"""A/B of the library's own training step from two source trees in one process (e.g. main's ``src`` checked out
under a temporary folder against this checkout's ``src``): the same model, weights, batches and Adam, built once
from each tree, then timed in interleaved rounds (CPU time, one thread, alternating order). Prints the first
loss of each (they must agree: a speed change must not change a value) and the median of the per-round
ratios old time / new time (above 1: the new tree is faster).

Models: the mlp suite of bench/speed.py (``mvae``, ``mmvae-elbo``, ``mmvae-dreg10``, ``mopoe``: 1x28x28
Bernoulli image + 10-class label) and any other registered model on bench/speed_models.py's modalities
(784-d Normal, 10-class categorical, 256-d Laplace), default MLPs (hidden 512), latent 20, batch 128.

Run (from the repository root)::

    git worktree add <tmp>/old main
    OMP_NUM_THREADS=1 python bench/ab_src.py <tmp>/old/src src --models crmvae mvtcae mvae mopoe --reps 12
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SUITE_MODELS = {
    "mvae": dict(model="mvae", objective="elbo", weights="uniform"),
    "mmvae-elbo": dict(model="mmvae", objective="elbo", k=1, posterior="laplace", weights="uniform"),
    "mmvae-dreg10": dict(model="mmvae", objective="dreg-authors", k=10, posterior="laplace", weights="uniform"),
    "mopoe": dict(model="mopoe", objective="elbo", weights="uniform"),
}
ROWS, BATCH = 2_560, 128


def load(src: str) -> dict:
    """The mmvae package of the tree ``src`` (any mmvae imported before is forgotten, not unloaded: models
    built from it keep working, as nothing on the loss path imports lazily)."""
    for k in [k for k in sys.modules if k == "mmvae" or k.startswith("mmvae.")]:
        del sys.modules[k]
    src = str(Path(src).resolve())
    sys.path.insert(0, src)
    try:
        mods = {m: importlib.import_module(m) for m in ("mmvae", "mmvae.config", "mmvae.models.registry",
                                                        "mmvae.data.dataset")}
    finally:
        sys.path.remove(src)
    if not mods["mmvae"].__file__.startswith(src):
        raise SystemExit(f"mmvae was imported from {mods['mmvae'].__file__}, not from {src}")
    return mods


def build(mods: dict, name: str):
    """A training step (loss, backward, Adam) of model ``name``, seeded: the same weights from either tree."""
    ds, config = mods["mmvae.data.dataset"], mods["mmvae.config"]
    g = torch.Generator().manual_seed(0)
    if name in SUITE_MODELS:
        specs = {"image": ds.ModalitySpec("image", "image", (1, 28, 28), "bernoulli"),
                 "label": ds.ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}
        cfg = config.Config(latent_dim=20, hidden=512, **SUITE_MODELS[name])
        label = torch.randint(10, (ROWS,), generator=g)
        data = {"image": torch.rand(ROWS, 1, 28, 28, generator=g), "label": F.one_hot(label, 10).float()}
    else:
        specs = {"a": ds.ModalitySpec("a", "vector", (784,), "normal"),
                 "b": ds.ModalitySpec("b", "categorical", (10,), "categorical", num_classes=10),
                 "c": ds.ModalitySpec("c", "vector", (256,), "laplace")}
        cfg = config.Config(latent_dim=20, hidden=512, model=name)
        data = {m: F.one_hot(torch.randint(s.shape[0], (ROWS,), generator=g), s.shape[0]).float()
                if s.kind == "categorical" else torch.randn(ROWS, *s.shape, generator=g) for m, s in specs.items()}
    torch.manual_seed(0)
    model = mods["mmvae.models.registry"].build_model(specs, cfg).train()
    dataset = ds.MultimodalDataset(dict(specs), data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(idx):
        loss = model.loss(dataset.batch(idx), 1.0)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", help="the src folder of the reference tree")
    ap.add_argument("new", help="the src folder of the tree under test")
    ap.add_argument("--models", nargs="+", default=["crmvae", "mvtcae", "jmvae", "mvae", "mmvae-elbo", "mopoe"])
    ap.add_argument("--reps", type=int, default=12, help="interleaved rounds")
    ap.add_argument("--block", type=int, default=4, help="steps per tree per round")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    steps = {}
    for tag, src in (("old", args.old), ("new", args.new)):
        mods = load(src)
        steps[tag] = {n: build(mods, n) for n in args.models}
    first = torch.arange(BATCH)
    for n in args.models:
        losses = []
        for tag in ("old", "new"):
            torch.manual_seed(1)
            losses.append(steps[tag][n](first).item())
        print(f"{n:14s} first loss: old {losses[0]:.6f}  new {losses[1]:.6f}")
    order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(3))
    for n in args.models:
        ratios = []
        for r in range(args.reps):
            idx = [order[(BATCH * (r * args.block + i)) % (ROWS - BATCH):][:BATCH] for i in range(args.block)]
            seconds = {}
            for tag in (("old", "new") if r % 2 == 0 else ("new", "old")):
                t0 = time.process_time()
                for i in idx:
                    steps[tag][n](i)
                seconds[tag] = time.process_time() - t0
            ratios.append(seconds["old"] / seconds["new"])
        print(f"{n:14s} old time / new time: median {statistics.median(ratios):.3f}  "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})", flush=True)


if __name__ == "__main__":
    main()
