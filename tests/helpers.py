"""Builders shared by the tests: the small three-modality spec of the float64 parity tests, its fixed batch,
the gradient comparison, the cross-modal learning check on the toy data, and the smallest CLI run folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from mmvae.cli import main
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from test_learning import agreement, fit

# A real vector (Gaussian decoder), a one-hot label of 3 classes, a real vector (Laplace decoder).
TOY_SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
             "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
             "c": ModalitySpec("c", "vector", (4,), "laplace")}


def toy_data(n: int, names=("a", "b", "c")) -> dict[str, torch.Tensor]:
    """Fixed float64 data (generator seed 1, drawn in the order a, b, c): a ~ N(0, I_5), b one-hot of 3
    classes, c ~ N(0, I_4); ``names`` keeps a prefix of them (the values do not depend on what follows)."""
    g = torch.Generator().manual_seed(1)
    draw = {"a": lambda: torch.randn(n, 5, generator=g, dtype=torch.float64),
            "b": lambda: F.one_hot(torch.randint(0, 3, (n,), generator=g), 3).double(),
            "c": lambda: torch.randn(n, 4, generator=g, dtype=torch.float64)}
    return {m: draw[m]() for m in names}


def toy_batch(n: int, missing: dict | None = None, names=("a", "b", "c")) -> Batch:
    """``toy_data`` with explicit masks: ``missing[m]`` holds the rows where modality m is not observed."""
    mask = {m: torch.ones(n, dtype=torch.bool) for m in names}
    for m, rows in (missing or {}).items():
        mask[m][rows] = False
    return Batch(toy_data(n, names), mask)


def check_learns_agreement(model, toy, train=None, *, epochs: int, lr: float = 2e-3, floor: float = 0.9):
    """Untrained translation a <-> b is below 0.5 (chance is 0.1), after ``fit`` it is above ``floor``."""
    assert max(agreement(model.eval(), toy.test, "a", "b"), agreement(model, toy.test, "b", "a")) < 0.5
    fit(model, toy.train if train is None else train, ["a", "b"], epochs=epochs, lr=lr)
    after = {"a->b": agreement(model, toy.test, "a", "b"), "b->a": agreement(model, toy.test, "b", "a")}
    assert min(after.values()) > floor, after


def assert_same_gradients(model, lib_loss, ref_loss, retain_graph: bool = False) -> set[str]:
    """The library's and the reference's gradients of every parameter agree to 1e-6 (a missing gradient
    counts as zeros); returns the names of the parameters the library's gradient reaches (non-zero)."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters()])
    g_lib = torch.autograd.grad(lib_loss, params, allow_unused=True, retain_graph=True)
    g_ref = torch.autograd.grad(ref_loss, params, allow_unused=True, retain_graph=retain_graph)
    reached = set()
    for n, p, a, b in zip(names, params, g_lib, g_ref):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=n: f"{n}: {s}")
        if a.abs().sum() > 0:
            reached.add(n)
    return reached


# The smallest CLI training run: toy data, one epoch, tiny networks, CPU.
SMALL_RUN = ["--dataset", "toy", "--set", "data.n=120", "--epochs", "1", "--batch-size", "32", "--set", "hidden=16",
             "--latent-dim", "3", "--device", "cpu"]


def train_small(folder: Path) -> Path:
    """``mmvae train`` with SMALL_RUN into ``folder``/run; returns the run folder."""
    out = folder / "run"
    assert main(["train", *SMALL_RUN, "--out", str(out)]) == 0
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A private copy of a (module-scoped) run folder, which a test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy
