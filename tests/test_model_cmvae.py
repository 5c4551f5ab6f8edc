"""CMVAE (Palumbo et al. 2024) against formulas written here from the paper's objective as MultiVae's
``CMVAE._compute_k_lws`` writes it: the explicit expectation over q(c | z, X) = p(c | z) of
log π_c + log p(z | c) + log p(w_m) − log q(z | X) − log q(w_m | x_m) − log q(c | z, X), on MMVAE+'s
strata (cross terms decoded with w̃_n ~ r_n). Float64, fixed noise, loss values and the gradients of every
parameter (encoders, decoders, cluster weights and centres, r_n) to 1e-6. Then cluster prediction,
post-hoc selection and a tiny learning test.
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
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from reference import laplace_logpdf, softmax_laplace_head as heads
from test_learning import agreement, fit

SPECS = {"a": ModalitySpec("a", "vector", (5,), "laplace"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3)}
NAMES = list(SPECS)
S, P, K, B, C = 3, 2, 3, 6, 4
D = S + len(NAMES) * P


def make_model(objective: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = Config(model="cmvae", latent_dim=S, hidden=16, objective=objective, k=K,
                 extra={"private_dim": P, "clusters": C})
    model = build_model(SPECS, cfg).double()
    with torch.no_grad():
        model.clusters.logits.copy_(torch.tensor([0.2, -0.4, 0.5, 0.0]))
        for i, m in enumerate(NAMES):
            model.aux[m].scale_logits.copy_(torch.tensor([0.4, -0.3]) * (i + 1))
    return model


def make_batch(missing: bool) -> Batch:
    return toy_batch(B, {"b": [0, 1], "a": [2]} if missing else None, names=tuple(SPECS))


def log_lik(model, d, z, w, x):
    zw = torch.cat([z, w], -1)
    out = model.decoders[d](zw.reshape(-1, S + P)).reshape(*zw.shape[:-1], -1)
    if d == "a":
        return laplace_logpdf(x, out, torch.tensor(0.75, dtype=z.dtype)).sum(-1)
    return (x * F.log_softmax(out, dim=-1)).sum(-1)


def stratum(model, batch, eps, r, m, detach=False, hook=None, entropy=True):
    """lw (K, B) of expert m's stratum: MMVAE+'s terms with the cluster prior's explicit expectation."""
    obs = {j: batch.mask[j].double() for j in NAMES}
    qz = {j: heads(model.encoders[j], batch.data[j], S, detach) for j in NAMES}
    qw = heads(model.private_encoders[m], batch.data[m], P, detach)
    loc, scale = heads(model.encoders[m], batch.data[m], S)
    ploc, pscale = heads(model.private_encoders[m], batch.data[m], P)
    z, w = loc + scale * eps[:, r, :, :S], ploc + pscale * eps[:, r, :, S + r * P: S + (r + 1) * P]
    if hook is not None:
        z, w = hook(z), hook(w)
    lqz = torch.logsumexp(torch.stack([laplace_logpdf(z, *qz[j]).sum(-1) + torch.log(obs[j]) for j in NAMES]), 0) \
        - torch.log(sum(obs.values()))
    lqw = laplace_logpdf(w, *qw).sum(-1)
    lpw = laplace_logpdf(w, torch.zeros(P, dtype=z.dtype), torch.ones(P, dtype=z.dtype)).sum(-1)
    lpc = F.log_softmax(model.clusters.logits, -1)
    lpzc = torch.stack([laplace_logpdf(z, model.clusters.centres[c], torch.ones(S, dtype=z.dtype)).sum(-1)
                        for c in range(C)])                                     # (C, K, B)
    qc = torch.softmax(lpc.view(-1, 1, 1) + lpzc, 0)                            # q(c | z, X) = p(c | z)
    lpx = 0.0
    for n_idx, d in enumerate(NAMES):
        slot = eps[:, r, :, S + n_idx * P: S + (n_idx + 1) * P]
        wd = w if d == m else F.softmax(model.aux[d].scale_logits, -1) * P * slot
        lpx = lpx + obs[d] * log_lik(model, d, z, wd, batch.data[d])
    prior_terms = (qc * (lpc.view(-1, 1, 1) + lpzc - (torch.log(qc) if entropy else 0.0))).sum(0)
    return lpx + model.beta_test * (prior_terms + lpw - lqz - lqw)


def reference_loss(model, batch, eps, beta, objective, entropy=True):
    model.beta_test = beta
    obs = {m: batch.mask[m].double() for m in NAMES}
    total = 0.0
    for r, m in enumerate(NAMES):
        if objective == "dreg-authors":
            lw = stratum(model, batch, eps, r, m, detach=True)
            wt = torch.softmax(lw.detach(), 0)
            lw = stratum(model, batch, eps, r, m, detach=True, hook=lambda t: _scaled(t, wt))
            bound = (wt * lw).sum(0)
        else:
            lw = stratum(model, batch, eps, r, m, entropy=entropy)
            bound = lw.mean(0) if objective == "elbo" else torch.logsumexp(lw, 0) - math.log(K)
        total = total + obs[m] / sum(obs.values()) * bound
    return -total.mean()


def _scaled(t, wt):
    t.register_hook(lambda g: wt.unsqueeze(-1) * g)
    return t


def draw_eps():
    return standard_noise(torch.distributions.Laplace, (K, len(NAMES), B, D), torch.Generator().manual_seed(2),
                          torch.float64)


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "one-missing"])
@pytest.mark.parametrize("objective,beta", [("elbo", 1.0), ("iwae", 1.0), ("iwae", 0.5), ("dreg-authors", 1.0)])
def test_loss_and_gradients_match_the_formulas(objective, beta, missing):
    model, batch, eps = make_model(objective), make_batch(missing), draw_eps()
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, beta, objective)
    if objective == "dreg-authors":
        torch.testing.assert_close(loss, reference_loss(model, batch, eps, beta, "iwae"), rtol=1e-6, atol=1e-9)
    else:
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    reached = assert_same_gradients(model, loss, ref)
    assert len(reached) >= 20 and {"shared_prior.logits", "shared_prior.centres", "aux.b.scale_logits"} <= reached


def test_the_comparison_sees_a_wrong_detail():
    """Leaving out the −log q(c | z, X) term of the explicit expectation changes the loss."""
    model, batch, eps = make_model("iwae"), make_batch(False), draw_eps()
    loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(loss, reference_loss(model, batch, eps, 1.0, "iwae", entropy=False),
                                   rtol=1e-6, atol=1e-9)


def test_options_are_checked():
    for extra, cfg in (({"clusters": 0}, {}), ({}, {"prior": "learned"}), ({}, {"objective": "elbo", "kl": "analytic"})):
        with pytest.raises(UserError):
            build_model(SPECS, Config(model="cmvae", latent_dim=S, hidden=16, extra=extra, **cfg))


def test_cmvae_learns_clusters_and_selects_their_number():
    """Toy data with 10 classes, 12 clusters: coherent translations, clusters that carry the class (NMI well
    above the ~0.03 of a random assignment), and the selection keeps the weights of the best count."""
    from sklearn.metrics import normalized_mutual_info_score

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="cmvae", latent_dim=8, hidden=64, k=3,
                                          extra={"private_dim": 2, "clusters": 12}))
    fit(model, toy.train, ["a", "b"], epochs=4)
    for s, t in (("a", "b"), ("b", "a")):
        assert agreement(model, toy.test, s, t) > 0.9
    assert normalized_mutual_info_score(toy.test.label, model.predict_clusters(toy.test.data)) > 0.3
    scores = model.select_clusters(toy.train.subset(torch.arange(600)))
    assert sorted(scores) == list(range(2, 13))
    best = min(scores, key=scores.get)
    assert model.clusters.num_clusters == best
    used = model.predict_clusters(toy.test.data).unique()
    assert torch.isfinite(model.clusters.logits[used]).all()
