"""CRMVAE (Suzuki & Matsuo 2023) against a formula written here following MultiVae 1.0.3's CRMVAE.forward
(no official code is public; docs/models/crmvae.md): float64, fixed noise, loss and gradients to 1e-6,
complete and partially observed batches; plus a learning test on the toy data. The reference pieces
(Gaussian head, likelihoods, closed-form KL, batch) are those of tests/test_model_mvtcae.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import check_learns_agreement
from mmvae.config import Config
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from test_model_mvtcae import B, D, SPECS, gaussian_kl, log_lik, make_batch

LAMBDA = {"a": 5 / 5, "b": 5 / 3, "c": 5 / 4}                            # weights=rescale


def make_model(k: int = 1):
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="crmvae", latent_dim=D, hidden=16, weights="rescale", k=k)).double()


def reference_loss(model, batch, eps_joint, eps_uni, beta, unimodal=True):
    mus, variances = {}, {}
    for m in SPECS:
        mu, raw = model.encoders[m](batch.data[m])
        mus[m], variances[m] = mu, (F.softplus(raw) + 1e-6) ** 2
    inf = torch.full_like(mus["a"], float("inf"))
    var_m = {m: torch.where(batch.mask[m][:, None], variances[m], inf) for m in SPECS}   # MultiVae's masking
    t = sum(1 / (var_m[m] + 1e-8) for m in SPECS)
    mu = sum(mus[m] / (var_m[m] + 1e-8) for m in SPECS) / t
    var = 1 / t
    z = mu + var.sqrt() * eps_joint                                            # (K, B, D)
    rec = 0.0
    for m in SPECS:
        rec = rec + batch.mask[m] * LAMBDA[m] * log_lik(model, m, z, batch.data[m]).mean(0)
        if unimodal:
            z_m = mus[m] + variances[m].sqrt() * eps_uni[m]
            rec = rec + batch.mask[m] * LAMBDA[m] * log_lik(model, m, z_m, batch.data[m]).mean(0)
    kl = gaussian_kl(mu, var, torch.zeros_like(mu), torch.ones_like(var))
    kl = kl + sum(batch.mask[m] * gaussian_kl(mu, var, mus[m], variances[m]) for m in SPECS)
    n = len(SPECS)
    return (-rec / (2 * (n + 1)) + beta * kl / (n + 1)).mean()


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("beta,k", [(2.5, 1), (1.0, 3)])
def test_loss_and_gradients_match_the_formula(missing, beta, k):
    model = make_model(k)
    batch = make_batch(missing)
    g = torch.Generator().manual_seed(2)
    eps_joint = torch.randn(k, 1, B, D, generator=g, dtype=torch.float64)
    eps_uni = {m: torch.randn(k, B, D, generator=g, dtype=torch.float64) for m in SPECS}
    noise = FixedNoise({"z": eps_joint, **{f"z/{m}": e for m, e in eps_uni.items()}}, seed=None)
    loss, _ = model.loss(batch, beta, noise=noise)
    ref = reference_loss(model, batch, eps_joint[:, 0], eps_uni, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    params = list(model.parameters())
    g_lib = torch.autograd.grad(loss, params, retain_graph=True)
    g_ref = torch.autograd.grad(ref, params)
    for (name, _), a, b in zip(model.named_parameters(), g_lib, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=name: f"{n}: {s}")
    # the comparison can fail: without the unimodal reconstructions (MVTCAE-like) the loss differs
    other = reference_loss(model, batch, eps_joint[:, 0], eps_uni, beta, unimodal=False)
    assert abs(float(other.detach()) - float(loss.detach())) > 1e-4


def test_refusals():
    with pytest.raises(UserError, match="objective"):
        build_model(SPECS, Config(model="crmvae", objective="dreg"))
    with pytest.raises(UserError, match="posterior=normal"):
        build_model(SPECS, Config(model="crmvae", posterior="laplace"))


def test_crmvae_learns_cross_modal_agreement():
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="crmvae", latent_dim=8, hidden=64))
    check_learns_agreement(model, toy, epochs=4, lr=4e-3, floor=0.9)  # reconstructions weigh 1/(2(M+1)): a larger step
