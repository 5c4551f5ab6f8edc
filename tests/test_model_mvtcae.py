"""MVTCAE (Hwang et al. 2021) against a formula written here from the paper and its official code
(gr8joo/MVTCAE, run_epochs.py, method 'tc'): float64, fixed noise, loss and gradients to 1e-6; plus a
learning test on the toy data.

The reference uses the model's networks as black boxes and nothing else of the library: its own Gaussian
head (softplus + 1e-6), the official ``poe`` (precision 1/(σ² + 1e-8), no prior expert; a missing expert
has infinite variance as in MultiVae), its own likelihoods and closed-form KLs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import TOY_SPECS, check_learns_agreement, toy_batch
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from reference import gaussian_kl, toy_log_lik

SPECS = TOY_SPECS
D, B = 4, 6


def make_model(k: int = 1, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="mvtcae", latent_dim=D, hidden=16, weights="rescale", k=k,
                                     extra=extra)).double()


def make_batch(missing: bool) -> Batch:
    return toy_batch(B, {"b": [0, 1], "c": [1, 2], "a": [3]} if missing else None)


# ------------------------------------------------------------------------------------ the reference
def log_lik(model, m, z, x):
    return toy_log_lik(m, model.decoders[m](z.reshape(-1, D)).reshape(*z.shape[:-1], -1), x)


def reference_loss(model, batch, eps, alpha, beta):
    lam = {"a": 5 / 5, "b": 5 / 3, "c": 5 / 4}                      # weights=rescale
    mus, variances = {}, {}
    for m in SPECS:
        mu, raw = model.encoders[m](batch.data[m])
        mus[m], variances[m] = mu, (F.softplus(raw) + 1e-6) ** 2
    precision = sum(torch.where(batch.mask[m][:, None], 1 / (variances[m] + 1e-8), torch.zeros_like(mus[m]))
                    for m in SPECS)
    mu = sum(torch.where(batch.mask[m][:, None], mus[m] / (variances[m] + 1e-8), torch.zeros_like(mus[m]))
             for m in SPECS) / precision
    var = 1 / precision
    z = mu + var.sqrt() * eps                                              # (K, B, D)
    rec = sum(batch.mask[m] * lam[m] * log_lik(model, m, z, batch.data[m]) for m in SPECS).mean(0)
    kl_prior = gaussian_kl(mu, var, torch.zeros_like(mu), torch.ones_like(var))
    kl_views = sum(batch.mask[m] * gaussian_kl(mu, var, mus[m], variances[m]) for m in SPECS)
    n = len(SPECS)
    objective = (n - alpha) / n * rec - beta * (alpha / n * kl_views + (1 - alpha) * kl_prior)
    return -objective.mean()


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("alpha,beta,k", [(5 / 6, 1.0, 1), (0.1, 2.5, 3)])
def test_loss_and_gradients_match_the_formula(missing, alpha, beta, k):
    model = make_model(k, alpha=alpha)
    batch = make_batch(missing)
    eps = torch.randn(k, 1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps[:, 0], alpha, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    params = [p for p in model.parameters()]
    g_lib = torch.autograd.grad(loss, params, retain_graph=True)
    g_ref = torch.autograd.grad(ref, params)
    for (name, _), a, b in zip(model.named_parameters(), g_lib, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=name: f"{n}: {s}")
    assert all(bool(g.abs().sum() > 0) for g in g_lib)                  # every network gets a gradient
    # the comparison can fail: another α (or a prior expert in the product) gives another loss
    other = reference_loss(model, batch, eps[:, 0], alpha / 2, beta)
    assert abs(float(other.detach()) - float(loss.detach())) > 1e-4


def test_refusals():
    with pytest.raises(UserError, match="alpha"):
        make_model(alpha=1.5)
    with pytest.raises(UserError, match="objective"):
        build_model(SPECS, Config(model="mvtcae", objective="iwae"))
    with pytest.raises(UserError, match="posterior=normal"):
        build_model(SPECS, Config(model="mvtcae", posterior="laplace"))
    with pytest.raises(UserError, match="at least 2"):
        build_model({"a": SPECS["a"]}, Config(model="mvtcae"))


def test_mvtcae_learns_cross_modal_agreement():
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="mvtcae", latent_dim=8, hidden=64))
    check_learns_agreement(model, toy, epochs=4, floor=0.9)
