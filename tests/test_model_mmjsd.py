"""mmJSD (Sutter et al. 2020) against a formula written here from the official code (thomassutter/mmjsd:
``alpha_poe``, ``calc_alphaJSD_modalities``, ``calc_kl_divergence``, ``mixture_component_selection`` and the
``modality_jsd`` branch of ``run_epoch``): float64, fixed noise, loss and gradients to 1e-6. The mixture
picks given to the library are the official block assignment (rows split into consecutive blocks, one
per expert), so the reference is the official estimator itself. Plus a learning test on the toy data.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import TOY_SPECS, check_learns_agreement, toy_batch
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from reference import toy_log_lik as log_prob

SPECS = TOY_SPECS
NAMES = list(SPECS)
D, B = 4, 9
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}                             # weights=rescale (official rec_w)


def make_model(k: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="mmjsd", latent_dim=D, hidden=16, k=k)).double()


def make_batch(missing: bool) -> Batch:
    return toy_batch(B, {"b": [0, 4], "c": [4, 7]} if missing else None)


# ------------------------------------------------------------------------------------ the reference
def alpha_poe(alpha, mu, logvar, eps=1e-8):
    t = 1 / (torch.exp(logvar) + eps)
    var = 1.0 / torch.sum(alpha[:, None] * t, dim=0)
    return var * torch.sum(alpha[:, None] * mu * t, dim=0), torch.log(var)


def kl(mu0, logvar0, mu1, logvar1):
    return -0.5 * torch.sum(1 - logvar0.exp() / logvar1.exp() - (mu0 - mu1).pow(2) / logvar1.exp() + logvar0 - logvar1)


def reference_loss(model, batch, picks, eps, beta):
    mus, logvars = {}, {}
    for m in NAMES:
        mu, raw = model.encoders[m](batch.data[m])
        mus[m], logvars[m] = mu, 2 * torch.log(F.softplus(raw) + 1e-6)
    rec, jsd = 0.0, 0.0
    for b in range(B):                                                      # row by row: the available experts
        avail = [m for m in NAMES if batch.mask[m][b]]
        mu_j = torch.stack([torch.zeros(D, dtype=torch.float64)] + [mus[m][b] for m in avail])
        lv_j = torch.stack([torch.zeros(D, dtype=torch.float64)] + [logvars[m][b] for m in avail])
        w = torch.full((len(avail) + 1,), 0.25, dtype=torch.float64)        # alpha_modalities, reweighted
        w = w / w.sum()
        f_mu, f_lv = alpha_poe(w, mu_j, lv_j)
        jsd = jsd + sum(w[j] * kl(mu_j[j], lv_j[j], f_mu, f_lv) for j in range(len(avail) + 1))
        for k in range(eps.shape[0]):                                       # z from the picked unimodal expert
            m = NAMES[int(picks[k, b])]
            z = mus[m][b] + torch.exp(0.5 * logvars[m][b]) * eps[k, b]
            for t in avail:
                out = model.decoders[t](z[None])[0]
                rec = rec + LAMBDA[t] * log_prob(t, out, batch.data[t][b]) / eps.shape[0]
    return (-rec + beta * jsd) / B


def official_blocks(k: int) -> torch.Tensor:
    """mixture_component_selection with weights [0, 1/3, 1/3, 1/3] (the prior's block is empty)."""
    w = [0.0, 1 / 3, 1 / 3, 1 / 3]
    starts, ends = [], []
    for i in range(4):
        s = 0 if i == 0 else ends[-1]
        e = B if i == 3 else s + int(math.floor(B * w[i]))
        starts.append(s)
        ends.append(e)
    pick = torch.empty(B, dtype=torch.long)
    for i in range(1, 4):
        pick[starts[i]:ends[i]] = i - 1
    return pick.expand(k, B).clone()


@pytest.mark.parametrize("missing", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("beta,k", [(1.0, 1), (5.0, 2)])
def test_loss_and_gradients_match_the_official_formulas(missing, beta, k):
    model = make_model(k)
    batch = make_batch(missing)
    picks = official_blocks(k)
    if missing:                                # a row draws only from experts it observes
        picks[:, [4, 7]] = 0                   # rows 4, 7 lack c (and 4 lacks b): their blocks' expert
        picks[:, 0] = 2
    eps = torch.randn(k, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, _ = model.loss(batch, beta, noise=FixedNoise({"z": eps}, {"z": picks}, seed=None))
    ref = reference_loss(model, batch, picks, eps, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    params = list(model.parameters())
    g_lib = torch.autograd.grad(loss, params, retain_graph=True)
    g_ref = torch.autograd.grad(ref, params)
    for (name, _), a, b in zip(model.named_parameters(), g_lib, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=name: f"{n}: {s}")
    assert all(bool(g.abs().sum() > 0) for g in g_lib)
    # the comparison can fail: decoding from another expert's sample changes the loss
    other = reference_loss(model, batch, (picks + 1) % 3 if not missing else picks.flip(1), eps, beta)
    assert abs(float(other.detach()) - float(loss.detach())) > 1e-4


def test_dynamic_prior_is_the_weighted_product_and_js_vanishes_when_experts_agree():
    from torch.distributions import Normal

    from mmvae.objectives.mmjsd import js_divergence

    prior = Normal(torch.zeros(D), torch.ones(D))
    same = {m: Normal(torch.zeros(3, D), torch.ones(3, D)) for m in NAMES}
    masks = {m: torch.ones(3, dtype=torch.bool) for m in NAMES}
    js, f = js_divergence(same, masks, prior)
    assert float(js.abs().max()) < 1e-6 and torch.allclose(f.scale, torch.ones(3, D), atol=1e-6)
    other = {m: Normal(torch.full((3, D), float(i)), torch.ones(3, D)) for i, m in enumerate(NAMES)}
    js, f = js_divergence(other, masks, prior)
    torch.testing.assert_close(f.loc, torch.full((3, D), (0 + 0 + 1 + 2) / 4))   # precision-weighted mean
    assert bool((js > 0).all())


def test_refusals():
    with pytest.raises(UserError, match="objective"):
        build_model(SPECS, Config(model="mmjsd", objective="iwae"))
    with pytest.raises(UserError, match="posterior=normal"):
        build_model(SPECS, Config(model="mmjsd", posterior="laplace"))


def test_mmjsd_learns_cross_modal_agreement():
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="mmjsd", latent_dim=8, hidden=64))
    check_learns_agreement(model, toy, epochs=4, floor=0.9)
