"""The hand-written losses of bench/hand/ (hand-b's six models) are the library's objectives: float64, the
library model built as bench/parity/<model>.py's ``models()`` builds it (without MultiVae), a complete batch
and fixed noise -> the same loss and the same gradient of every parameter to 1e-6. Each case also checks
that the comparison can fail (a perturbed constant or a different gradient estimator is told apart)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise, standard_noise
from mmvae.models.registry import build_model

ROOT = Path(__file__).resolve().parents[1]


def hand(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(f"hand.{name}")
    finally:
        sys.path.remove(str(ROOT / "bench"))


def vec(m, n, lik):
    return ModalitySpec(m, "vector", (n,), lik)


LABEL = ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3)


def toy_inputs(batch: int) -> dict:
    """bench/parity/common.py's batch: a (5-d), b (one-hot of 3), c (4-d), generator seed 1."""
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randn(batch, 5, generator=g, dtype=torch.float64),
            "b": F.one_hot(torch.randint(0, 3, (batch,), generator=g), 3).double(),
            "c": torch.randn(batch, 4, generator=g, dtype=torch.float64)}


def params(model):
    return [p for p in model.parameters() if p.requires_grad]


def grads(loss, model):
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params(model), torch.autograd.grad(loss, params(model), allow_unused=True))]


def assert_same(model, lib_loss, hand_loss):
    """Value and every parameter's gradient equal (float64, 1e-6); returns how many gradients are non-zero."""
    torch.testing.assert_close(hand_loss, lib_loss, rtol=1e-6, atol=1e-9)
    reached = 0
    for p, a, b in zip(params(model), grads(lib_loss, model), grads(hand_loss, model)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
        reached += bool(a.abs().sum() > 0)
    return reached


def assert_grads_differ(model, loss_a, loss_b):
    assert any(not torch.allclose(a, b, rtol=1e-4, atol=1e-8)
               for a, b in zip(grads(loss_a, model), grads(loss_b, model)))


# ------------------------------------------------------------------------------------------- MMVAE+
def mmvaeplus_model(objective="dreg-authors"):
    torch.manual_seed(0)
    specs = {"a": vec("a", 5, "laplace"), "b": LABEL, "c": vec("c", 4, "normal")}
    cfg = Config(model="mmvaeplus", latent_dim=4, hidden=16, objective=objective, k=3, prior="learned", beta=1.0,
                 weights="rescale", extra={"private_dim": 3})
    model = build_model(specs, cfg).double()
    with torch.no_grad():                      # learned priors away from their start (as the parity script)
        model.latent_prior.scale_logits.copy_(torch.linspace(-0.5, 0.5, 7))
        for i, m in enumerate(specs):
            model.aux[m].scale_logits.copy_(torch.linspace(0.3, -0.3, 3) * (i + 1))
    return model


def test_mmvaeplus_hand_loss_is_the_library_objective(monkeypatch):
    h, model, x = hand("mmvaeplus"), mmvaeplus_model(), toy_inputs(8)
    eps = standard_noise(torch.distributions.Laplace, (3, 3, 8, 4 + 3 * 3), torch.Generator().manual_seed(2),
                         torch.float64)
    lib = model.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))[0]
    mine = h.loss(model, x, {"z": eps})
    assert assert_same(model, lib, mine) >= 20
    # can fail: the plain IWAE gradient (same value) is not the authors' DReG; a wrong likelihood scale
    iwae = mmvaeplus_model("iwae")
    iwae.load_state_dict(model.state_dict())
    plain = iwae.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))[0]
    torch.testing.assert_close(plain, lib)
    assert_grads_differ(iwae, plain, h.loss(iwae, x, {"z": eps}))
    monkeypatch.setattr(hand("common"), "SCALE", 0.7)   # the shared likelihood scale
    assert not torch.allclose(h.loss(model, x, {"z": eps}), lib)


# ------------------------------------------------------------------------------------------- DMVAE
def test_dmvae_hand_loss_is_the_library_objective(monkeypatch):
    h, x = hand("dmvae"), toy_inputs(8)
    torch.manual_seed(0)
    specs = {"a": vec("a", 5, "normal"), "b": LABEL, "c": vec("c", 4, "laplace")}
    model = build_model(specs, Config(model="dmvae", latent_dim=4, hidden=16, beta=1.0, weights="rescale",
                                      extra={"private_dim": 2})).double()
    eps = torch.randn(1, 4, 8, 4 + 3 * 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lib = model.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))[0]
    assert assert_same(model, lib, h.loss(model, x, {"z": eps})) >= 20
    # can fail: another noise draw, a wrong likelihood scale
    assert not torch.allclose(h.loss(model, x, {"z": eps.flip(1)}), lib)
    monkeypatch.setattr(hand("common"), "SCALE", 0.7)   # the shared likelihood scale
    assert not torch.allclose(h.loss(model, x, {"z": eps}), lib)


# ------------------------------------------------------------------------------------------- MHVAE
def test_mhvae_hand_loss_is_the_library_objective(monkeypatch):
    h, x = hand("mhvae"), toy_inputs(6)
    torch.manual_seed(0)
    specs = {"a": vec("a", 5, "normal"), "b": LABEL, "c": vec("c", 4, "laplace")}
    model = build_model(specs, Config(model="mhvae", latent_dim=4, hidden=16, weights="rescale", beta=1.0,
                                      extra={"levels": 3})).double()
    g = torch.Generator().manual_seed(2)
    eps = {f"z{lv}": torch.randn(7, 6, 4, generator=g, dtype=torch.float64) for lv in (1, 2, 3)}
    lib = model.loss(Batch(dict(x)), 1.0, noise=FixedNoise(eps, seed=None))[0]
    assert assert_same(model, lib, h.loss(model, x, eps)) >= 30
    # can fail: the levels' noise swapped, a wrong likelihood scale
    assert not torch.allclose(h.loss(model, x, {"z1": eps["z2"], "z2": eps["z1"], "z3": eps["z3"]}), lib)
    monkeypatch.setattr(hand("common"), "SCALE", 0.7)   # the shared likelihood scale
    assert not torch.allclose(h.loss(model, x, eps), lib)


# ------------------------------------------------------------------------------------------- CMVAE
def cmvae_model(objective="dreg-authors"):
    torch.manual_seed(0)
    specs = {"a": vec("a", 5, "laplace"), "b": LABEL, "c": vec("c", 4, "normal")}
    cfg = Config(model="cmvae", latent_dim=4, hidden=16, objective=objective, k=3, beta=1.0, weights="rescale",
                 extra={"private_dim": 3, "clusters": 5})
    model = build_model(specs, cfg).double()
    with torch.no_grad():                      # cluster weights and r_n away from their start (as the parity script)
        model.clusters.logits.copy_(torch.linspace(-0.5, 0.5, 5))
        for i, m in enumerate(specs):
            model.aux[m].scale_logits.copy_(torch.linspace(0.3, -0.3, 3) * (i + 1))
    return model


def test_cmvae_hand_loss_is_the_library_objective(monkeypatch):
    h, model, x = hand("cmvae"), cmvae_model(), toy_inputs(8)
    eps = standard_noise(torch.distributions.Laplace, (3, 3, 8, 4 + 3 * 3), torch.Generator().manual_seed(2),
                         torch.float64)
    lib = model.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))[0]
    assert assert_same(model, lib, h.loss(model, x, {"z": eps})) >= 20
    # can fail: the plain IWAE gradient (same value) is not the authors' DReG; one cluster weight changed
    iwae = cmvae_model("iwae")
    iwae.load_state_dict(model.state_dict())
    plain = iwae.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))[0]
    assert_grads_differ(iwae, plain, h.loss(iwae, x, {"z": eps}))
    with torch.no_grad():
        model.clusters.logits[0] += 0.5
    assert not torch.allclose(h.loss(model, x, {"z": eps}), lib)


# ------------------------------------------------------------------------------------------- Nexus
@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["no-dropout", "dropout"])
def test_nexus_hand_loss_is_the_library_objective(dropout, monkeypatch):
    """bench/parity/nexus.py's model (dropout 0, β 1.5, bottom β 0.7, γ 2) after the warm-up, and with forced
    perceptual dropout (the same subset pick handed to both)."""
    h, x = hand("nexus"), toy_inputs(8)
    torch.manual_seed(0)
    specs = {"a": vec("a", 5, "normal"), "b": LABEL, "c": vec("c", 4, "laplace")}
    model = build_model(specs, Config(model="nexus", latent_dim=4, hidden=16, weights="rescale", beta=1.5,
                                      extra={"modality_dim": 3, "message_dim": 6, "dropout": dropout,
                                             "bottom_beta": 0.7, "gamma": 2.0})).double()
    g = torch.Generator().manual_seed(2)
    eps = {f"z/{m}": torch.randn(8, 3, generator=g, dtype=torch.float64) for m in specs}
    eps["nexus"] = torch.randn(8, 4, generator=g, dtype=torch.float64)
    picks = {"dropout": torch.tensor([[6, 0, 3, 6, 5, 1, 2, 4]])}
    lib = model.loss(Batch(dict(x)), 1.5, noise=FixedNoise(eps, picks, seed=None))[0]
    assert assert_same(model, lib, h.loss(model, x, {**eps, **picks})) >= 20
    # can fail: another pick (with dropout), a wrong likelihood scale
    if dropout:
        assert not torch.allclose(h.loss(model, x, {**eps, "dropout": picks["dropout"].flip(1)}), lib)
    monkeypatch.setattr(hand("common"), "SCALE", 0.7)   # the shared likelihood scale
    assert not torch.allclose(h.loss(model, x, {**eps, **picks}), lib)


# ------------------------------------------------------------------------------------------- JNF
@pytest.mark.parametrize("k", [1, 3])
def test_jnf_stage0_hand_loss_is_the_library_objective(k, monkeypatch):
    """bench/parity/jnf.py's model (β 1, joint epochs 10; the library's default MAF flows) in stage 0."""
    h, x = hand("jnf"), toy_inputs(8)
    torch.manual_seed(0)
    specs = {"a": vec("a", 5, "normal"), "b": LABEL, "c": vec("c", 4, "laplace")}
    model = build_model(specs, Config(model="jnf", latent_dim=4, hidden=32, beta=1.0, weights="rescale", k=k,
                                      extra={"joint_epochs": 10})).double()
    assert model.stage == 0
    eps = torch.randn(k, 8, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lib = model.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))[0]
    assert assert_same(model, lib, h.loss(model, x, {"z": eps})) >= 10
    # can fail: another KL weight, a wrong likelihood scale
    model.beta = 2.0
    assert not torch.allclose(h.loss(model, x, {"z": eps}), lib)
    model.beta = 1.0
    monkeypatch.setattr(hand("common"), "SCALE", 0.7)   # the shared likelihood scale
    assert not torch.allclose(h.loss(model, x, {"z": eps}), lib)
