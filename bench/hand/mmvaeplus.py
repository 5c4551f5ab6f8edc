"""MMVAE+ by hand (Palumbo, Daunhawer & Vogt, ICLR 2023, eq. 4; official code epalu/mmvaeplus,
src/objectives.py ``m_dreg`` / ``_m_dreg``): the stratified IWAE ("looser") with the authors' DReG, β = 1.

Stratum m (one per modality, K samples): z ~ q(z | x_m), w_m ~ q(w_m | x_m), w̃_n ~ r_n for n ≠ m;
    lw = Σ_n λ_n log p(x_n | z, w_n) + log p(z, w_m) − log q(z | X) − log q(w_m | x_m),
q(z | X) = (1/M) Σ_j q(z | x_j); Laplace posteriors with scale softmax(raw)·dim + 1e-6, p(z, w) and r_n
Laplace(0, softmax(ρ)·dim). DReG as the authors: q's parameters detached in lw, the posterior samples
(z, w_m) hooked by w̃ = softmax_k(lw), the surrogate Σ_k w̃ lw (so encoders see w̃², decoders and priors
w̃); the value reported is the IWAE bound. The library's networks are black boxes.

Noise: ``noise["z"]`` standard Laplace ε (K, M, B, S + M·P) in the library's layout (stratum m's z from
ε[:, m, :, :S], its w_n from the slot of n); None draws it.
"""
import math

import torch
import torch.nn.functional as F
from torch.distributions import Laplace

from .common import log_lik_kind as log_lik


def laplace_lp(z, loc, scale):
    return (-(z - loc).abs() / scale - torch.log(2 * scale)).sum(-1)


def learned_prior(model, z, w):
    """log p(z, w_m): Laplace(0, softmax(ρ)·dim) over [z, w_m] (the authors' learned ``pu``)."""
    pu = F.softmax(model.latent_prior.scale_logits, -1) * (z.shape[-1] + w.shape[-1])
    return laplace_lp(torch.cat([z, w], -1), 0.0, pu)


def loss(model, x, noise=None, log_prior=learned_prior):
    """``log_prior(model, z, w)``: log p(z, w_m) of the samples (CMVAE replaces it)."""
    names, k = list(model.specs), model.objective.estimator.k
    s, p, m = model.latent_dim, model.private_dim, len(names)
    enc = [model.encoders[n](x[n]) for n in names]
    penc = [model.private_encoders[n](x[n]) for n in names]
    loc = torch.stack([e[0] for e in enc])                                      # (M, B, S)
    scale = torch.stack([F.softmax(e[1], -1) * s + 1e-6 for e in enc])
    ploc = torch.stack([e[0] for e in penc])                                    # (M, B, P)
    pscale = torch.stack([F.softmax(e[1], -1) * p + 1e-6 for e in penc])
    eps = noise["z"] if noise is not None else Laplace(0.0, 1.0).sample((k, m, loc.shape[1], s + m * p)).to(loc)
    own = torch.stack([eps[:, i, :, s + i * p: s + (i + 1) * p] for i in range(m)], 1)
    z = loc + scale * eps[..., :s]                                              # (K, M, B, S)
    w = ploc + pscale * own                                                     # (K, M, B, P)
    rs = [F.softmax(model.aux[n].scale_logits, -1) * p for n in names]          # r_n scales
    # lw with q detached; the posterior samples' gradients reweighted by w̃ (hook below)
    z_, w_ = z.view_as(z), w.view_as(w)
    rec = 0.0
    for i, n in enumerate(names):
        wn = eps[..., s + i * p: s + (i + 1) * p] * rs[i]                       # w̃_n ~ r_n in every stratum
        wn = torch.cat([wn[:, :i], w_[:, i:i + 1], wn[:, i + 1:]], 1)           # stratum n: its own w_n
        out = model.decoders[n](torch.cat([z_, wn], -1).flatten(0, 2)).view(k, m, -1, *x[n].shape[1:])
        rec = rec + model.weights[n] * log_lik(model.specs[n].likelihood, out, x[n])
    log_p = log_prior(model, z_, w_)
    log_qz = torch.logsumexp(laplace_lp(z_.unsqueeze(2), loc.detach(), scale.detach()), 2) - math.log(m)
    lw = rec + log_p - log_qz - laplace_lp(w_, ploc.detach(), pscale.detach())  # (K, M, B)
    wt = torch.softmax(lw.detach(), 0)
    z_.register_hook(lambda g: g * wt.unsqueeze(-1))
    w_.register_hook(lambda g: g * wt.unsqueeze(-1))
    surrogate = (wt * lw).sum(0)
    value = torch.logsumexp(lw, 0) - math.log(k)
    return -(surrogate + (value - surrogate).detach()).mean()
