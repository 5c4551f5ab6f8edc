"""The arithmetic every hand-written loss of bench/hand shares, in plain torch: the benchmark's likelihoods by
modality name (bench/speed_models.py and the parity scripts: ``a`` Normal(out, 0.75²), ``b`` categorical with
logits ``out``, ``c`` Laplace(out, 0.75)), an encoder's Gaussian head and the closed-form Gaussian KLs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCALE = 0.75
NORMAL_CONST = -math.log(SCALE) - 0.5 * math.log(2 * math.pi)   # per dimension
LAPLACE_CONST = -math.log(2 * SCALE)


KIND = {"a": "normal", "b": "categorical", "c": "laplace"}


def log_lik_kind(kind: str, out, x):
    """log p(x | decoder output) of a likelihood kind (``normal``/``laplace`` with scale 0.75 or
    ``categorical`` logits), summed over the last axis."""
    if kind == "normal":
        return (-0.5 / SCALE ** 2) * (x - out).pow(2).sum(-1) + NORMAL_CONST * x.shape[-1]
    if kind == "laplace":
        return (-1 / SCALE) * (x - out).abs().sum(-1) + LAPLACE_CONST * x.shape[-1]
    if kind == "categorical":
        return (x * F.log_softmax(out, dim=-1)).sum(-1)
    raise KeyError(f"no benchmark likelihood of kind {kind!r}")


def log_lik(m: str, out, x):
    """log p(x_m | decoder output) by modality name, summed over the last axis."""
    if m not in KIND:
        raise KeyError(f"no benchmark likelihood for modality {m!r}")
    return log_lik_kind(KIND[m], out, x)


def head(out):
    """(μ, σ) of an encoder output (μ, raw): σ = softplus(raw) + 1e-6 (the library's Gaussian encoders)."""
    mu, raw = out
    return mu, F.softplus(raw) + 1e-6


def kl_normal(mu1, s1, mu2, s2):
    """KL(N(μ1, σ1²) ‖ N(μ2, σ2²)), summed over the last axis."""
    return (torch.log(s2 / s1) + (s1.pow(2) + (mu1 - mu2).pow(2)) / (2 * s2.pow(2)) - 0.5).sum(-1)


def kl_std(mu, s):
    """KL(N(μ, σ²) ‖ N(0, I)), summed over the last axis."""
    return (0.5 * (mu.pow(2) + s.pow(2) - 1) - torch.log(s)).sum(-1)


def product_of_experts(mu_e, s_e):
    """The official codes' Gaussian product of the experts (M, B, D) without a prior expert (precision
    1 / (σ² + 1e-8)): its (μ, σ)."""
    precision = 1 / (s_e.pow(2) + 1e-8)
    var = 1 / precision.sum(0)
    return var * (precision * mu_e).sum(0), var.sqrt()


def draw(noise, name: str, like):
    """Standard-normal ε like ``like``: ``noise[name]`` when given (the tests' fixed noise), else fresh."""
    return torch.randn_like(like) if noise is None else noise[name]
