"""MEME's objective terms (Joy, Shi, Torr & Siddharth 2022, "Learning multimodal VAEs through mutual
supervision", ICLR): per-row tensors in, per-row bounds out. The model (``models/meme.py``) does the
plumbing (which rows are paired, which networks see which samples); these functions are the maths.

Direction s -> t on a paired row (eq. 1, the semi-supervised bound of Joy et al. 2020, with the
estimator of App. B / D, eq. 6):

    L(s->t) = w * [ λ_s log p(s|z) - log q(t|z) - β KL(q(z|s) || p(z|t)) ] + c * log q(t|s),
    z ~ q(z|s),  w = q(t|z) / q(t|s) held constant (stop-gradient, App. B),
    log q(t|s) ≈ log 1/(K+1) [ q(t|z) + Σ_k q(t|z_k) ],  z_k ~ q(z|s) fresh (App. D).

p(z|t) is t's own encoder (shared weights, App. C) and q(t|z) is t's decoder. Including z itself in
the log-sum-exp bounds the weight by K + 1, which is what keeps it stable. c = 1 is the bound of the
paper; the authors' code uses c = 10.

A row that observes only s is a plain ELBO whose prior is the VampPrior of eq. 4,
p(z) = 1/N Σ_i q(z | u_i) over learnable pseudo-samples u_i of the *missing* modality t, with a
one-sample KL estimate (the mixture has no closed-form KL).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..distributions.posteriors import log_density


def log_cross_likelihood(log_q_t: Tensor) -> Tensor:
    """log q(t|s) from log q(t|z_j) of (K+1, B) samples of q(z|s), the bound's own sample first
    (App. D): log-mean-exp over the K+1 samples, (B,)."""
    return torch.logsumexp(log_q_t, dim=0) - math.log(log_q_t.shape[0])


def importance_weight(log_q_t_z: Tensor, log_q_t_s: Tensor) -> Tensor:
    """w = q(t|z) / q(t|s), detached (App. B): it reweights the bound, it is not optimised."""
    return torch.exp(log_q_t_z - log_q_t_s).detach()


def mutual_supervision_bound(log_p_s: Tensor, log_q_t: Tensor, kl: Tensor, beta: float = 1.0,
                             classifier_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """L(s->t) per paired row (eq. 1 / 6).

    ``log_p_s``: λ_s log p(s|z) (B,); ``log_q_t``: log q(t|z_j) (K+1, B) with the bound's own z first;
    ``kl``: KL(q(z|s) || p(z|t)) (B,) (closed form or a one-sample estimate). Returns the objective
    (to maximise) and its parts; ``parts["bound"]`` is the same expression with c = 1, the bound itself.
    """
    log_q_t_s = log_cross_likelihood(log_q_t)
    w = importance_weight(log_q_t[0], log_q_t_s)
    inner = w * (log_p_s - log_q_t[0] - beta * kl)
    objective = inner + classifier_weight * log_q_t_s
    parts = {"bound": (inner + log_q_t_s).detach(), "log_q_cross": log_q_t_s.detach(), "weight": w}
    return objective, parts


def mixture_log_density(components: Distribution, z: Tensor) -> Tensor:
    """log 1/N Σ_i q(z | u_i) for a batch of diagonal components (N, D) and z (B, D) -> (B,) (eq. 4)."""
    lp = log_density(components, z.unsqueeze(-2))                         # (B, N)
    return torch.logsumexp(lp, dim=-1) - math.log(lp.shape[-1])


def unpaired_elbo(log_p_s: Tensor, log_q_z: Tensor, log_prior_z: Tensor, beta: float = 1.0) -> Tensor:
    """L(s) for a row observing only s: λ_s log p(s|z) - β [log q(z|s) - log p(z)] at z ~ q(z|s) (eq. 5)."""
    return log_p_s - beta * (log_q_z - log_prior_z)
