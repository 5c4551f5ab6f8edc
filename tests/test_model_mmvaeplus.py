"""MMVAE+ (Palumbo et al. 2023) against formulas written here from the paper (eq. 4) and the authors' code
(epalu/mmvaeplus, src/objectives.py ``_m_iwae`` / ``_m_dreg`` / ``m_dreg``, src/models/mmvae.py
``forward``): float64, fixed noise, loss values and the gradients of every parameter (shared and private
encoders, decoders, the learned prior p(z, w), the learned auxiliary priors r_n) to 1e-6.

The reference uses the model's networks as black boxes and nothing else of the library: its own
Laplace parameterisation (softmax · D + 1e-6), densities, mixture and reductions; the cross terms draw
the target's private code from r_n. It follows the authors' code (β on log p − log q, every modality
observed) and MultiVae's treatment of partially observed rows (the mixture over observed experts, only
observed modalities scored, strata of missing experts dropped). Also: DReG is unbiased for the IWAE
gradient on this model, and a tiny learning test.
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
from mmvae.data.toy import toy_bimodal
from mmvae.distributions.noise import FixedNoise, standard_noise
from mmvae.models.registry import build_model
from mmvae.objectives.estimators import IWAE, DReG
from reference import laplace_logpdf, softmax_laplace_head as heads
from test_learning import agreement, fit

SPECS = {"a": ModalitySpec("a", "vector", (5,), "laplace"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3)}
NAMES = list(SPECS)
S, P, K, B = 3, 2, 3, 6                               # shared dim, private dim, samples per expert, rows
D = S + len(SPECS) * P
LAMBDA = {"a": 1.0, "b": 5 / 3}                       # weights=rescale: largest dimension / own dimension


def make_model(objective: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Config(model="mmvaeplus", latent_dim=S, hidden=16, objective=objective, k=K, prior="learned",
                 weights="rescale", extra={"private_dim": P, **extra})
    model = build_model(SPECS, cfg).double()
    with torch.no_grad():                              # learned priors away from their start
        model.latent_prior.scale_logits.copy_(torch.tensor([0.3, -0.2, 0.5, -0.6, 0.1]))
        if extra.get("aux_prior", "learned") == "learned":
            for i, m in enumerate(NAMES):
                model.aux[m].scale_logits.copy_(torch.tensor([0.4, -0.3]) * (i + 1))
    return model


def make_batch(missing: bool) -> Batch:
    # rows 0, 1: only a; row 2: only b
    return toy_batch(B, {"b": [0, 1], "a": [2]} if missing else None, names=tuple(SPECS))


def draw_eps() -> torch.Tensor:
    return standard_noise(torch.distributions.Laplace, (K, len(SPECS), B, D), torch.Generator().manual_seed(2),
                          torch.float64)


# ------------------------------------------------------------------------------------ the reference
def softmax_scale(logits):
    return F.softmax(logits, dim=-1) * logits.shape[-1]           # the authors' pu/pw parameters, loc 0


def log_lik(model, d, z, w, x):
    zw = torch.cat([z, w], -1)
    out = model.decoders[d](zw.reshape(-1, S + P)).reshape(*zw.shape[:-1], -1)
    if d == "a":
        return laplace_logpdf(x, out, torch.tensor(0.75, dtype=z.dtype)).sum(-1)
    return (x * F.log_softmax(out, dim=-1)).sum(-1)


def stratum(model, batch, eps, r, m, detach=False, hook=None, cross="aux"):
    """lw (K, B) of expert m's stratum r, and its posterior samples (z, w_m) (the authors' uss).
    ``cross="posterior"``: the wrong detail of the test below (target's own posterior private code)."""
    qz = {j: heads(model.encoders[j], batch.data[j], S, detach) for j in NAMES}
    qw = heads(model.private_encoders[m], batch.data[m], P, detach)
    loc, scale = heads(model.encoders[m], batch.data[m], S)       # the sample is always live
    ploc, pscale = heads(model.private_encoders[m], batch.data[m], P)
    z = loc + scale * eps[:, r, :, :S]
    w = ploc + pscale * eps[:, r, :, S + r * P: S + (r + 1) * P]
    if hook is not None:
        z, w = hook(z), hook(w)
    obs = {j: batch.mask[j].double() for j in NAMES}
    lqz = torch.logsumexp(torch.stack([laplace_logpdf(z, *qz[j]).sum(-1) + torch.log(obs[j]) for j in NAMES]), 0) \
        - torch.log(sum(obs.values()))                               # mixture over the observed experts
    lqw = laplace_logpdf(w, *qw).sum(-1)
    pu = softmax_scale(model.latent_prior.scale_logits)
    lpu = laplace_logpdf(torch.cat([z, w], -1), torch.zeros(S + P, dtype=z.dtype), pu).sum(-1)
    lpx = 0.0
    for n_idx, d in enumerate(NAMES):
        slot = eps[:, r, :, S + n_idx * P: S + (n_idx + 1) * P]
        if d == m:
            wd = w
        elif cross == "aux":                                         # w̃_d ~ r_d (eq. 4; mmvae.py forward)
            wd = softmax_scale(model.aux[d].scale_logits) * slot
        else:
            dloc, dscale = heads(model.private_encoders[d], batch.data[d], P)
            wd = dloc + dscale * slot
        lpx = lpx + obs[d] * LAMBDA[d] * log_lik(model, d, z, wd, batch.data[d])
    return lpx + model.beta_test * (lpu - lqz - lqw), (z, w), qz


def stratum_weights(batch):
    obs = {m: batch.mask[m].double() for m in NAMES}
    return {m: obs[m] / sum(obs.values()) for m in NAMES}


def reference_loss(model, batch, eps, beta, objective, cross="aux"):
    model.beta_test = beta
    pi, total = stratum_weights(batch), 0.0
    for r, m in enumerate(NAMES):
        if objective == "dreg-authors":                              # m_dreg: detached q, hook w̃ on (z, w)
            lw, _, _ = stratum(model, batch, eps, r, m, detach=True)
            wt = torch.softmax(lw.detach(), 0)
            lw, _, _ = stratum(model, batch, eps, r, m, detach=True,
                               hook=lambda t: _scaled(t, wt))
            bound = (wt * lw).sum(0)
        else:
            lw, _, _ = stratum(model, batch, eps, r, m, cross=cross)
            bound = lw.mean(0) if objective == "elbo" else torch.logsumexp(lw, 0) - math.log(K)
        total = total + pi[m] * bound
    return -total.mean()


def _scaled(t, wt):
    if t.requires_grad:
        t.register_hook(lambda g: wt.unsqueeze(-1) * g)
    return t


def reference_dreg(model, batch, eps, beta):
    """The unbiased DReG of docs/models/mmvaeplus.md from explicit per-sample vector-Jacobian products: the
    shared block as MMVAE's (docs/models/dreg.md eqs. 4-5), the own private block with the one-component
    weight w̃ − β w̃ (1 − w̃), the auxiliary samples and decoders with w̃ (the surrogate)."""
    model.beta_test = beta
    pi, total = stratum_weights(batch), 0.0
    obs = {j: batch.mask[j].double() for j in NAMES}
    for r, m in enumerate(NAMES):
        _, (z, w), _ = stratum(model, batch, eps, r, m, detach=True)
        zl, wl = z.detach().requires_grad_(), w.detach().requires_grad_()
        lw_leaf = _lw_at(model, batch, eps, r, m, zl, wl)     # decoders, priors and r_n live; q detached
        wt = torch.softmax(lw_leaf.detach(), 0)
        dz, dw = torch.autograd.grad(lw_leaf.sum(), (zl, wl), retain_graph=True)
        qz = {j: heads(model.encoders[j], batch.data[j], S, detach=True) for j in NAMES}
        log_pj = torch.stack([laplace_logpdf(zl, *qz[j]).sum(-1) + torch.log(obs[j] / sum(obs.values()))
                              for j in NAMES])
        resp = torch.softmax(log_pj, 0)
        d_r = torch.autograd.grad(resp[r].sum(), zl)[0]
        r_m = resp[r].detach()
        path_z = ((wt - beta * wt * (1 - wt) * r_m).unsqueeze(-1) * dz - beta * wt.unsqueeze(-1) * d_r).detach()
        path_w = ((wt - beta * wt * (1 - wt)).unsqueeze(-1) * dw).detach()
        pathwise = (path_z * z).sum(-1) + (path_w * w).sum(-1)      # reaches φ through z, w = loc + scale·ε
        score = 0.0
        for j, other in enumerate(NAMES):
            if other != m:
                live = heads(model.encoders[other], batch.data[other], S)
                score = score + resp[j].detach() * laplace_logpdf(z.detach(), *live).sum(-1)
        surrogate = (wt * lw_leaf).sum(0) + pathwise.sum(0) - beta * (wt * score).sum(0)
        total = total + pi[m] * surrogate
    return -total.mean()


def _lw_at(model, batch, eps, r, m, z, w):
    """lw of stratum r at given samples (z, w) with q detached (the reference's DReG log-weights)."""
    return stratum(model, batch, eps, r, m, detach=True, hook=_Replace(z, w))[0]


class _Replace:
    """A 'hook' that swaps the stratum's samples for given tensors (first z, then w)."""

    def __init__(self, z, w):
        self.items = [z, w]

    def __call__(self, _):
        return self.items.pop(0)


# ---------------------------------------------------------------------------------------- the tests
CASES = [("elbo", 1.0), ("iwae", 1.0), ("iwae", 0.4), ("dreg-authors", 1.0)]


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "one-missing"])
@pytest.mark.parametrize("objective,beta", CASES)
def test_loss_and_gradients_match_the_authors_formulas(objective, beta, missing):
    model, batch, eps = make_model(objective), make_batch(missing), draw_eps()
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, beta, objective)
    if objective == "dreg-authors":                 # the library's value is the bound, the code's a surrogate
        torch.testing.assert_close(loss, reference_loss(model, batch, eps, beta, "iwae"), rtol=1e-6, atol=1e-9)
    else:
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(-logs["bound"], ref.detach(), rtol=1e-6, atol=1e-9)
    reached = len(assert_same_gradients(model, loss, ref))
    names = {n.split(".")[0] for n, p in model.named_parameters()}
    assert reached >= 20 and {"encoders", "private_encoders", "decoders", "latent_prior", "aux"} <= names


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "one-missing"])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_unbiased_dreg_matches_its_derivation(beta, missing):
    model, batch, eps = make_model("dreg"), make_batch(missing), draw_eps()
    loss, _ = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    torch.testing.assert_close(loss, reference_loss(model, batch, eps, beta, "iwae"), rtol=1e-6, atol=1e-9)
    assert len(assert_same_gradients(model, loss, reference_dreg(model, batch, eps, beta))) >= 20


def test_the_comparison_sees_a_wrong_detail():
    """The check can fail: cross terms decoded with the target's *posterior* private code (the factorised
    variant, ``mmvaefactorized`` in the authors' code) instead of r_n change the loss; the authors' DReG
    is not the unbiased one; with ``aux_prior=standard`` the auxiliary priors have no parameters."""
    model, batch, eps = make_model("iwae"), make_batch(False), draw_eps()
    loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(loss, reference_loss(model, batch, eps, 1.0, "iwae", cross="posterior"),
                                   rtol=1e-6, atol=1e-9)
    model = make_model("dreg-authors")
    loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    with pytest.raises(AssertionError):
        assert_same_gradients(model, loss, reference_dreg(model, batch, eps, 1.0))
    fixed = make_model("iwae", aux_prior="standard")
    assert not any(n.startswith("aux.") for n, _ in fixed.named_parameters())


# ------------------------------------------------------------------------------ unbiased DReG, learning
class _Table(torch.nn.Module):
    """An encoder whose output is a parameter (the same (loc, raw scale) for every row)."""

    def __init__(self, values):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(values))

    def forward(self, x):
        return self.p.expand(x.shape[0], -1).chunk(2, -1)


class _Squared(DReG):
    """Known wrong for β ≠ 1: the weight w̃² on every block whatever β."""

    exact_mixture = False

    @staticmethod
    def encoder_factor(w, beta):
        return w


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_dreg_encoder_gradient_is_unbiased_for_iwae(beta):
    """E[∇ DReG] = E[∇ IWAE] for the shared and private encoders (same draws, 32 of them; z-scores of the
    mean difference, as tests/test_estimators.py), while a known wrong weight is rejected by the same test."""
    toy = toy_bimodal(n=300, dim=4, classes=3)
    torch.manual_seed(0)
    shared = {"a": [0.6, -0.4, 0.2, -0.3], "b": [-0.2, 0.5, -0.2, 0.1]}
    private = {"a": [0.3, 0.1, 0.0, 0.4], "b": [-0.5, 0.2, 0.3, -0.1]}
    model = build_model(toy.specs, Config(model="mmvaeplus", latent_dim=2, hidden=16, k=5, extra={"private_dim": 2}),
                        encoders={m: _Table(v) for m, v in shared.items()})
    model.private_encoders = torch.nn.ModuleDict({m: _Table(v) for m, v in private.items()})
    batch = toy.train.batch(slice(0, 128))
    params = list(model.encoders.parameters()) + list(model.private_encoders.parameters())

    def grad(estimator, seed):
        model.objective.estimator = estimator
        g = torch.autograd.grad(model.loss(batch, beta, noise=FixedNoise(seed=seed))[0], params)
        return torch.cat([x.flatten() for x in g])

    def z2(estimator):
        diff = torch.stack([grad(estimator, d) - grad(IWAE(k=5), d) for d in range(32)])
        z = diff.mean(0) / (diff.std(0) / math.sqrt(len(diff)))
        return float((z ** 2).mean())

    assert z2(DReG(k=5)) < 3.0
    if beta != 1.0:
        assert z2(_Squared(k=5)) > 30.0


def test_mmvaeplus_learns_cross_modal_agreement():
    toy = toy_bimodal(n=3000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="mmvaeplus", latent_dim=8, hidden=64, k=4,
                                          extra={"private_dim": 2}))
    fit(model, toy.train, ["a", "b"], epochs=5)
    for s, t in (("a", "b"), ("b", "a")):
        hit = agreement(model, toy.test, s, t)
        assert hit > 0.9, (s, t, hit)
