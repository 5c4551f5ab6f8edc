"""Reference formulas shared by the float64 parity tests, written here from the densities themselves: they
use torch arithmetic only, never mmvae's distributions, likelihoods or KLs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def toy_log_lik(m: str, out, x):
    """log p(x | decoder output) for helpers.TOY_SPECS, summed over the last axis: a Normal(out, 0.75²),
    c Laplace(out, 0.75), b categorical with logits ``out``."""
    if m == "a":
        return (-0.5 * ((x - out) / 0.75) ** 2 - math.log(0.75) - 0.5 * math.log(2 * math.pi)).sum(-1)
    if m == "c":
        return (-(x - out).abs() / 0.75 - math.log(2 * 0.75)).sum(-1)
    return (x * F.log_softmax(out, dim=-1)).sum(-1)


def head_var(out):
    """Gaussian head of an encoder output (μ, raw): (μ, variance (softplus(raw) + 1e-6)²)."""
    mu, raw = out
    return mu, (F.softplus(raw) + 1e-6) ** 2


def head_std(out):
    """Gaussian head of an encoder output (μ, raw): (μ, standard deviation softplus(raw) + 1e-6)."""
    mu, raw = out
    return mu, F.softplus(raw) + 1e-6


def gaussian_kl(mu1, var1, mu2, var2):
    """KL(N(mu1, var1) ‖ N(mu2, var2)) summed over the last axis."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mu1 - mu2) ** 2) / var2 - 1).sum(-1)


def laplace_logpdf(x, loc, scale):
    """log Laplace(x; loc, scale), elementwise."""
    return -torch.log(2 * scale) - (x - loc).abs() / scale


def softmax_laplace_head(net, x, dim, detach=False):
    """The MMVAE/MMVAE+ authors' Laplace head of an encoder (loc, raw): scale softmax(raw)·dim + 1e-6;
    ``detach``: both parameters cut from the graph (the DReG reparametrisation)."""
    loc, raw = net(x)
    scale = F.softmax(raw, dim=-1) * dim + 1e-6
    return (loc.detach(), scale.detach()) if detach else (loc, scale)
