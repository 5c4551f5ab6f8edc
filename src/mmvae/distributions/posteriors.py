"""Diagonal latent distributions: the encoders' posteriors and the prior.

Two families, each a plain torch.distributions object over ``(..., D)`` whose log-density is summed over
the last axis by :func:`log_density`:

* ``normal``: loc and scale = softplus(raw) + 1e-6 (softplus rather than exp(logvar/2): the MVAE NaN
  divergences reported with the official code start with exploding exp).
* ``laplace``: loc and scale = softmax(raw) * D + 1e-6, the normalisation MMVAE uses (Shi et al. 2019,
  official code): the scales of one posterior sum to about D, which keeps the Laplace experts from
  collapsing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, Laplace, Normal, kl_divergence

POSTERIORS = ("normal", "laplace")


def make_posterior(family: str, loc: Tensor, raw_scale: Tensor) -> Distribution:
    """The posterior of ``family`` from an encoder's two heads (loc, unconstrained scale)."""
    if family == "normal":
        return Normal(loc, F.softplus(raw_scale) + 1e-6, validate_args=False)
    if family == "laplace":
        return Laplace(loc, F.softmax(raw_scale, dim=-1) * raw_scale.shape[-1] + 1e-6, validate_args=False)
    raise ValueError(f"unknown posterior family {family!r}: use one of {POSTERIORS}")


def posterior_from(family: str, out, dim: int) -> Distribution:
    """:func:`make_posterior` of an encoder's output: a (loc, raw_scale) pair or one (..., 2·dim) tensor."""
    loc, raw = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out[..., :dim], out[..., dim:])
    return make_posterior(family, loc, raw)


def standard_prior(family: str, dim: int, device=None) -> Distribution:
    """p(z): N(0, I) or Laplace(0, 1) (MMVAE's prior: zero loc, softmax(0) * D = 1 scale)."""
    zero = torch.zeros(dim, device=device)
    one = torch.ones(dim, device=device)
    return Normal(zero, one, validate_args=False) if family == "normal" else Laplace(zero, one, validate_args=False)


def log_density(dist: Distribution, z: Tensor) -> Tensor:
    """log q(z) of a diagonal distribution, summed over the latent axis."""
    return dist.log_prob(z).sum(-1)


def detached(dist: Distribution) -> Distribution:
    """The same distribution with its parameters cut from the graph (DReG, Tucker et al. 2019, eq. 5)."""
    return type(dist)(dist.loc.detach(), dist.scale.detach(), validate_args=False)


def kl_to_prior(q: Distribution, p: Distribution) -> Tensor:
    """Analytic KL(q || p) summed over the latent axis (registered KLs of torch.distributions)."""
    return kl_divergence(q, p).sum(-1)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype per-row objective terms are summed in: at least float32 (under bf16 autocast the posteriors
    and samples are bf16 while the log-likelihoods come out in float32)."""
    return torch.promote_types(dtype, torch.float32)


def expand_rows(dist: Distribution, index: Tensor) -> Distribution:
    """Rows of a batched diagonal distribution picked by ``index`` (along the batch axis)."""
    return type(dist)(dist.loc[index], dist.scale[index], validate_args=False)

