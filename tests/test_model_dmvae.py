"""DMVAE (Lee & Pavlovic 2021) against formulas written here from the paper and MultiVae's ``DMVAE``
(``_infer_latent_parameters``, ``forward``, ``_compute_elbo``): float64, fixed noise, loss values and the
gradients of every parameter to 1e-6; plus a tiny learning test.

The reference uses the model's networks as black boxes: its own Gaussian heads (softplus + 1e-6), the
product of experts with a N(0, I) prior expert (exact precisions), the closed-form Gaussian KLs, and
L = ELBO(q(z | X)) + Σ_m [m observed] ELBO(q(z | x_m)), each ELBO reconstructing every observed modality
from [z, w_n] with w_n ~ q(w_n | x_n) and paying β Σ_n KL(q(w_n | x_n) ‖ p) for the observed n.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import TOY_SPECS, assert_same_gradients, toy_batch
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.toy import toy_bimodal
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model
from test_learning import agreement, fit

SPECS = TOY_SPECS
NAMES = list(SPECS)
S, P, B = 3, 2, 6
D = S + len(NAMES) * P
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}


def make_model(objective="elbo", kl="analytic", k=None):
    torch.manual_seed(0)
    cfg = Config(model="dmvae", latent_dim=S, hidden=16, objective=objective, kl=kl, k=k, weights="rescale",
                 extra={"private_dim": P})
    return build_model(SPECS, cfg).double()


def make_batch(missing: bool) -> Batch:
    return toy_batch(B, {"b": [0, 1], "c": [1, 2, 5], "a": [3]} if missing else None)


def draw_eps(k: int) -> torch.Tensor:
    return torch.randn(k, len(NAMES) + 1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


# ------------------------------------------------------------------------------------ the reference
def gauss(net, x):
    loc, raw = net(x)
    return loc, F.softplus(raw) + 1e-6


def normal_logpdf(x, loc, scale):
    return -0.5 * math.log(2 * math.pi) - torch.log(scale) - 0.5 * ((x - loc) / scale) ** 2


def kl_std(loc, scale):
    """KL(N(loc, scale²) ‖ N(0, 1)) per row, summed over dimensions."""
    return (0.5 * (scale ** 2 + loc ** 2 - 1) - torch.log(scale)).sum(-1)


def log_lik(model, m, z, w, x):
    zw = torch.cat([z, w], -1)
    out = model.decoders[m](zw.reshape(-1, S + P)).reshape(*zw.shape[:-1], -1)
    if m == "a":
        return normal_logpdf(x, out, torch.tensor(0.75, dtype=z.dtype)).sum(-1)
    if m == "c":
        return (-torch.log(torch.tensor(1.5, dtype=z.dtype)) - (x - out).abs() / 0.75).sum(-1)
    return (x * F.log_softmax(out, dim=-1)).sum(-1)


def poe(shared, obs, prior_expert=True):
    """Precision-weighted product of the observed experts (and N(0, I))."""
    prec = sum(obs[m].unsqueeze(-1) / shared[m][1] ** 2 for m in NAMES) + (1.0 if prior_expert else 0.0)
    loc = sum(obs[m].unsqueeze(-1) * shared[m][0] / shared[m][1] ** 2 for m in NAMES) / prec
    return loc, prec.rsqrt()


def reference_loss(model, batch, eps, beta, objective="elbo", kl="analytic", shared_kl_per_target=False):
    """``shared_kl_per_target``: the official code's count of the shared KL (once per reconstructed
    modality), a wrong detail for the test below."""
    obs = {m: batch.mask[m].double() for m in NAMES}
    shared = {m: gauss(model.encoders[m], batch.data[m]) for m in NAMES}
    private = {m: gauss(model.private_encoders[m], batch.data[m]) for m in NAMES}
    sources = [("joint", poe(shared, obs), torch.ones(B, dtype=torch.float64))] + \
        [(m, shared[m], obs[m]) for m in NAMES]
    total = 0.0
    for g, (_, (loc, scale), weight) in enumerate(sources):
        z = loc + scale * eps[:, g, :, :S]
        ws = {n: private[n][0] + private[n][1] * eps[:, g, :, S + i * P: S + (i + 1) * P] for i, n in enumerate(NAMES)}
        rec = sum(obs[n] * LAMBDA[n] * log_lik(model, n, z, ws[n], batch.data[n]) for n in NAMES)   # (K, B)
        if objective == "elbo" and kl == "analytic":
            kls = kl_std(loc, scale) * (sum(obs.values()) if shared_kl_per_target else 1.0)
            kls = kls + sum(obs[n] * kl_std(*private[n]) for n in NAMES)
            bound = rec.mean(0) - beta * kls
        else:
            log_pq = normal_logpdf(z, 0.0, torch.tensor(1.0)).sum(-1) - normal_logpdf(z, loc, scale).sum(-1)
            for n in NAMES:
                log_pq = log_pq + obs[n] * (normal_logpdf(ws[n], 0.0, torch.tensor(1.0)).sum(-1)
                                            - normal_logpdf(ws[n], *private[n]).sum(-1))
            lw = rec + beta * log_pq
            bound = lw.mean(0) if objective == "elbo" else torch.logsumexp(lw, 0) - math.log(lw.shape[0])
        total = total + weight * bound
    return -total.mean()


CASES = [("elbo", "analytic", 1, 1.0), ("elbo", "analytic", 1, 0.5), ("elbo", "mc", 1, 1.0), ("iwae", "mc", 3, 0.7)]


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("objective,kl,k,beta", CASES)
def test_loss_and_gradients_match_the_formulas(objective, kl, k, beta, missing):
    model, batch, eps = make_model(objective, kl, k), make_batch(missing), draw_eps(k)
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, beta, objective, kl)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(-logs["bound"], ref.detach(), rtol=1e-6, atol=1e-9)
    assert len(assert_same_gradients(model, loss, ref)) >= 30


def test_the_comparison_sees_a_wrong_detail():
    """The check fails for the official code's count of the shared KL (once per target modality) and for
    a product of experts without the prior expert."""
    model, batch, eps = make_model(), make_batch(False), draw_eps(1)
    loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(loss, reference_loss(model, batch, eps, 1.0, shared_kl_per_target=True),
                                   rtol=1e-6, atol=1e-9)
    global poe
    right = poe
    try:
        poe = lambda shared, obs: right(shared, obs, prior_expert=False)  # noqa: E731
        with pytest.raises(AssertionError):
            torch.testing.assert_close(loss, reference_loss(model, batch, eps, 1.0), rtol=1e-6, atol=1e-9)
    finally:
        poe = right


def test_dmvae_learns_cross_modal_agreement():
    toy = toy_bimodal(n=3000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="dmvae", latent_dim=8, hidden=64, extra={"private_dim": 1}))
    fit(model, toy.train, ["a", "b"], epochs=5)
    for s, t in (("a", "b"), ("b", "a")):
        hit = agreement(model, toy.test, s, t)
        assert hit > 0.9, (s, t, hit)
