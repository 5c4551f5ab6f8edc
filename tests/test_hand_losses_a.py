"""bench/hand's losses of MVTCAE, JMVAE, mmJSD, CRMVAE, CVAE and TELBO (the ``hand`` contender of
bench/speed_models.py) are the library's objectives: the model built as bench/speed_models.py builds it (the
parity script's Config, here at toy size and in float64, without MultiVae), the same batch and the same fixed
noise give the same loss and the same gradient of every parameter (1e-6). Each comparison can fail: another
value of the hand loss's constant gives another loss. The hand losses also run on fresh noise (noise=None),
as in the benchmark."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from helpers import TOY_SPECS, assert_same_gradients, toy_data
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

BENCH = Path(__file__).resolve().parents[1] / "bench"
D, B = 4, 8


def hand(name: str):
    """bench/hand/<name>.py (bench/ on the path only while it is imported)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(f"hand.{name}")
    finally:
        sys.path.remove(str(BENCH))


def make_model(**cfg):
    torch.manual_seed(0)
    return build_model(TOY_SPECS, Config(latent_dim=D, hidden=32, **cfg)).double()


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def check(model, module, x, lib_noise, hand_noise, constant: str, other: float):
    """Same loss and gradients; another value of ``constant`` in the hand loss gives another loss."""
    lib, _ = model.loss(Batch(dict(x)), 1.0, noise=lib_noise)
    ref = module.loss(model, x, hand_noise)
    torch.testing.assert_close(ref, lib, rtol=1e-6, atol=1e-9)
    reached = assert_same_gradients(model, lib, ref)
    assert reached == {n for n, _ in model.named_parameters()}         # every network is trained
    fresh = module.loss(model, x)                                       # the benchmark's call
    assert fresh.dim() == 0 and bool(torch.isfinite(fresh))
    kept = getattr(module, constant)
    try:
        setattr(module, constant, other)
        assert abs(float(module.loss(model, x, hand_noise).detach()) - float(lib.detach())) > 1e-4
    finally:
        setattr(module, constant, kept)


def test_mvtcae():
    module = hand("mvtcae")
    model = make_model(model="mvtcae", beta=1.0, extra={"alpha": 5 / 6})      # bench/parity/mvtcae.py
    assert model.objective.alpha == module.ALPHA
    eps = randn(torch.Generator().manual_seed(2), B, D)
    check(model, module, toy_data(B), FixedNoise({"z": eps[None, None]}, seed=None), {"z": eps}, "ALPHA", 0.5)


def test_jmvae():
    module = hand("jmvae")
    model = make_model(model="jmvae", extra={"alpha": 0.1})                   # bench/parity/jmvae.py
    assert model.objective.alpha == module.ALPHA
    eps = randn(torch.Generator().manual_seed(2), B, D)
    check(model, module, toy_data(B), FixedNoise({"z": eps[None]}, seed=None), {"z": eps}, "ALPHA", 0.5)


def test_mmjsd():
    module = hand("mmjsd")
    model = make_model(model="mmjsd")                         # bench/speed_models.py: Config(model="mmjsd")
    assert model.weights == {"a": 1.0, "b": 5 / 3, "c": 5 / 4}                 # rescale, as the hand loss
    g = torch.Generator().manual_seed(2)
    eps, pick = randn(g, B, D), torch.randint(3, (B,), generator=g)
    assert set(pick.tolist()) == {0, 1, 2}                                     # every expert decodes a row
    check(model, module, toy_data(B), FixedNoise({"z": eps[None]}, {"z": pick[None]}, seed=None),
          {"z": eps, "pick": pick}, "BETA", 2.0)


def test_crmvae():
    module = hand("crmvae")
    model = make_model(model="crmvae", beta=1.0)                              # bench/parity/crmvae.py
    g = torch.Generator().manual_seed(2)
    eps = {"z": randn(g, B, D), **{f"z/{m}": randn(g, B, D) for m in TOY_SPECS}}
    lib = FixedNoise({"z": eps["z"][None, None], **{n: e[None] for n, e in eps.items() if n != "z"}}, seed=None)
    check(model, module, toy_data(B), lib, eps, "BETA", 2.0)


def test_cvae():
    module = hand("cvae")
    model = make_model(model="cvae", extra={"target": "a", "conditional_prior": True})   # speed_models' cvae
    assert model.target == module.TARGET and model.prior_net is not None
    eps = randn(torch.Generator().manual_seed(2), B, D)
    check(model, module, toy_data(B), FixedNoise({"z": eps[None]}, seed=None), {"z": eps}, "BETA", 2.0)


def test_telbo():
    module = hand("telbo")
    model = make_model(model="telbo")                                         # bench/parity/telbo.py
    g = torch.Generator().manual_seed(2)
    eps = {"z": randn(g, B, D), **{f"z/{m}": randn(g, B, D) for m in TOY_SPECS}}
    check(model, module, toy_data(B), FixedNoise({n: e[None] for n, e in eps.items()}, seed=None), eps,
          "BETA", 2.0)
