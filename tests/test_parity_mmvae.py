"""MMVAE (Shi et al. 2019) against formulas written here from the authors' code (iffsid/mmvae,
src/objectives.py and src/models/mmvae*.py): float64, fixed noise, loss values and the gradients of
every parameter (encoders, decoders, learned prior) to 1e-6.

The reference uses the model's networks as black boxes and nothing else of the library: its own
Laplace parameterisation (softmax · D + 1e-6), densities, mixture, likelihoods and reductions. It
follows the authors' code where it has one (β = 1, every modality observed) and the library's
documented extensions elsewhere (a KL weight β on log p − log q; rows with missing modalities: the
mixture over the observed experts, only observed modalities scored).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_same_gradients, toy_batch
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise, standard_noise
from mmvae.models.registry import build_model
from reference import laplace_logpdf

SPECS = {"a": ModalitySpec("a", "vector", (5,), "laplace"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3)}
D, K, B = 4, 3, 6
LAMBDA = {"a": 1.0, "b": 5 / 3}                     # weights=rescale: largest dimension / own dimension


def make_model(objective: str, kl: str = "mc") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(SPECS, Config(model="mmvae", latent_dim=D, hidden=16, objective=objective, k=K, kl=kl,
                                      prior="learned", weights="rescale", posterior="laplace")).double()
    with torch.no_grad():                            # a learned prior away from its start (--learn-prior)
        model.latent_prior.scale_logits.copy_(torch.tensor([0.3, -0.2, 0.5, -0.6]))
    return model


def make_batch(missing: bool) -> Batch:
    # rows 0, 1: only a; row 2: only b
    return toy_batch(B, {"b": [0, 1], "a": [2]} if missing else None, names=tuple(SPECS))


# ------------------------------------------------------------------------------------ the reference
def laplace_kl(loc1, scale1, loc2, scale2):
    """KL(Laplace(loc1, scale1) || Laplace(loc2, scale2)) per dimension (closed form)."""
    d = (loc1 - loc2).abs()
    return torch.log(scale2 / scale1) + d / scale2 + scale1 / scale2 * torch.exp(-d / scale1) - 1


def experts(model, batch, detach=False):
    out = {}
    for m in SPECS:
        loc, raw = model.encoders[m](batch.data[m])             # the encoder's two heads
        scale = F.softmax(raw, dim=-1) * D + 1e-6
        out[m] = (loc.detach(), scale.detach()) if detach else (loc, scale)
    return out


def prior_scale(model):
    return F.softmax(model.latent_prior.scale_logits, dim=-1) * D    # the authors' pz_params, loc 0


def log_lik(model, m, z, x):
    out = model.decoders[m](z.reshape(-1, D)).reshape(*z.shape[:-1], -1)
    if m == "a":
        return laplace_logpdf(x, out, torch.tensor(0.75, dtype=z.dtype)).sum(-1)
    return (x * F.log_softmax(out, dim=-1)).sum(-1)


def log_weights(model, batch, beta, z_r, qs):
    """lw for samples z_r (K, B, D) of one stratum: Σ_d λ_d log p(x_d|z) + β [log p(z) − log q(z|X)]."""
    obs = {m: batch.mask[m].double() for m in SPECS}
    n_obs = sum(obs.values())
    lqs = torch.stack([laplace_logpdf(z_r, *qs[m]).sum(-1) + torch.log(obs[m]) for m in SPECS])
    lq = torch.logsumexp(lqs, 0) - torch.log(n_obs)                     # mixture over observed experts
    lpz = laplace_logpdf(z_r, torch.zeros(D, dtype=z_r.dtype), prior_scale(model)).sum(-1)
    lpx = sum(obs[m] * LAMBDA[m] * log_lik(model, m, z_r, batch.data[m]) for m in SPECS)
    return lpx + beta * (lpz - lq)


def samples(qs, eps):
    return {m: qs[m][0] + qs[m][1] * eps[:, r] for r, m in enumerate(SPECS)}       # (K, B, D) per stratum


def stratum_weights(batch):
    obs = {m: batch.mask[m].double() for m in SPECS}
    n_obs = sum(obs.values())
    return {m: obs[m] / n_obs for m in SPECS}


def reference_loss(model, batch, eps, beta, objective, kl="mc"):
    """−(1/B) Σ_rows Σ_r π_r(row) bound_r(row); bound_r per objective as in the authors' code."""
    qs = experts(model, batch)
    zs = samples(qs, eps)
    pi = stratum_weights(batch)
    total = 0.0
    if objective == "elbo" and kl == "analytic":                # m_elbo_naive: per-expert KL to the prior
        zero = torch.zeros(D, dtype=torch.float64)
        for m in SPECS:
            obs = {d: batch.mask[d].double() for d in SPECS}
            lpx = sum(obs[d] * LAMBDA[d] * log_lik(model, d, zs[m], batch.data[d]) for d in SPECS)
            klm = laplace_kl(*qs[m], zero, prior_scale(model)).sum(-1)
            total = total + pi[m] * (lpx.mean(0) - beta * klm)
        return -total.mean()
    if objective == "dreg-authors":                             # _m_dreg_looser / m_dreg_looser
        qd = experts(model, batch, detach=True)
        lw = torch.stack([log_weights(model, batch, beta, zs[m], qd) for m in SPECS])   # (M, K, B)
        zss = torch.stack([zs[m] for m in SPECS])
        with torch.no_grad():
            grad_wt = (lw - torch.logsumexp(lw, 1, keepdim=True)).exp()
        zss.register_hook(lambda grad: grad_wt.unsqueeze(-1) * grad)
        # rebuild lw on the hooked stack so that every path to the encoders goes through the hook
        lw = torch.stack([log_weights(model, batch, beta, zss[r], qd) for r in range(len(SPECS))])
        surrogate = (grad_wt * lw).sum(1)
        return -sum(pi[m] * surrogate[r] for r, m in enumerate(SPECS)).mean()
    for m in SPECS:
        lw = log_weights(model, batch, beta, zs[m], qs)
        bound = lw.mean(0) if objective == "elbo" else torch.logsumexp(lw, 0) - math.log(K)   # log_mean_exp
        total = total + pi[m] * bound
    return -total.mean()


def reference_dreg(model, batch, eps, beta):
    """The unbiased stratified DReG of docs/models/dreg.md, eqs. (4)-(5), built from explicit per-sample
    vector-Jacobian products on a leaf copy of the samples (no hooks)."""
    qs, qd = experts(model, batch), experts(model, batch, detach=True)
    zs = samples(qs, eps)
    pi = stratum_weights(batch)
    obs = {m: batch.mask[m].double() for m in SPECS}
    total = 0.0
    for r, m in enumerate(SPECS):
        leaf = zs[m].detach().requires_grad_()
        lw = log_weights(model, batch, beta, leaf, qd)                       # decoders, prior: live
        w = torch.softmax(lw.detach(), 0)
        d_lw = torch.autograd.grad(lw.sum(), leaf, retain_graph=True)[0]     # ∂lw_k/∂z_k
        log_pj = torch.stack([laplace_logpdf(leaf, *qd[j]).sum(-1) + torch.log(obs[j] / sum(obs.values()))
                              for j in SPECS])                               # (J, K, B)
        resp = torch.softmax(log_pj, 0)
        d_r = torch.autograd.grad(resp[r].sum(), leaf)[0]                    # ∂r_m/∂z_k
        r_m = resp[r].detach()
        path = ((w - beta * w * (1 - w) * r_m).unsqueeze(-1) * d_lw - beta * w.unsqueeze(-1) * d_r).detach()
        pathwise = (path * zs[m]).sum(-1)                                    # reaches φ_m through z = loc + scale·ε
        score = 0.0
        for j, other in enumerate(SPECS):
            if other != m:
                lq_live = laplace_logpdf(zs[m].detach(), *qs[other]).sum(-1)
                score = score + resp[j].detach() * lq_live
        surrogate = (w * lw).sum(0) + pathwise.sum(0) - beta * (w * score).sum(0)
        total = total + pi[m] * surrogate
    return -total.mean()


# ---------------------------------------------------------------------------------------- the tests
def draw_eps():
    return standard_noise(torch.distributions.Laplace, (K, len(SPECS), B, D), torch.Generator().manual_seed(2),
                          torch.float64)


CASES = [("elbo", "mc", 1.0), ("elbo", "mc", 0.4), ("elbo", "analytic", 1.0), ("iwae", "mc", 1.0),
         ("iwae", "mc", 0.4), ("dreg-authors", "mc", 1.0)]


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "one-missing"])
@pytest.mark.parametrize("objective,kl,beta", CASES)
def test_loss_and_gradients_match_the_authors_formulas(objective, kl, beta, missing):
    model, batch, eps = make_model(objective, kl), make_batch(missing), draw_eps()
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, beta, objective, kl)
    if objective == "dreg-authors":                 # the library's value is the bound, the code's a surrogate
        bound = reference_loss(model, batch, eps, beta, "iwae")
        torch.testing.assert_close(loss, bound, rtol=1e-6, atol=1e-9)
    else:
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(-logs["bound"], ref.detach(), rtol=1e-6, atol=1e-9)
    reached = len(assert_same_gradients(model, loss, ref))
    assert reached >= 8                              # encoders, decoders and the prior all get a gradient


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "one-missing"])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_unbiased_dreg_matches_its_derivation(beta, missing):
    """`dreg` against eqs. (4)-(5) of docs/models/dreg.md built independently; the value is the IWAE bound."""
    model, batch, eps = make_model("dreg"), make_batch(missing), draw_eps()
    loss, _ = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    torch.testing.assert_close(loss, reference_loss(model, batch, eps, beta, "iwae"), rtol=1e-6, atol=1e-9)
    assert len(assert_same_gradients(model, loss, reference_dreg(model, batch, eps, beta))) >= 8


def test_the_comparison_sees_a_wrong_detail():
    """The parity check can fail: the authors' DReG is not the unbiased one (encoder gradients differ),
    and a likelihood weight off by a little is caught in the loss."""
    model, batch, eps = make_model("dreg-authors"), make_batch(False), draw_eps()
    loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    with pytest.raises(AssertionError):
        assert_same_gradients(model, loss, reference_dreg(model, batch, eps, 1.0))
    LAMBDA["b"] += 1e-4
    try:
        model = make_model("iwae")
        loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
        with pytest.raises(AssertionError):
            torch.testing.assert_close(loss, reference_loss(model, batch, eps, 1.0, "iwae"), rtol=1e-6, atol=1e-9)
    finally:
        LAMBDA["b"] -= 1e-4
