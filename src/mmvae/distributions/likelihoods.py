"""Decoder likelihoods p(x_m | z): decoder output -> torch distribution -> log-density summed per sample.

* ``bernoulli``: logits; accepts grey levels in [0, 1] (the cross-entropy form, as MVAE uses on MNIST).
* ``normal`` / ``laplace``: loc = sigmoid(output) for images in [0, 1] (identity for other data), scale
  fixed (default 0.75, the trade-off of the factorised-MMVAE study) or learned (one log-scale per
  modality, ``scale="learned"``).
* ``continuous_bernoulli``: logits; the normalised density on [0, 1] of Loaiza-Ganem & Cunningham 2019
  (torch.distributions.ContinuousBernoulli): the Bernoulli cross-entropy plus the log normaliser
  log C(λ), so grey levels get a proper density; its mean (not sigmoid(logits)) is what decoders show.
* ``categorical``: logits over the last axis against one-hot targets; all-zero rows (text padding) score 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import ContinuousBernoulli, Laplace, Normal

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "normal", "laplace", "categorical")


class Likelihood(nn.Module):
    """Turns decoder outputs of shape (N, *shape) into per-sample log-likelihoods (N,) and means."""

    name = "base"

    def __init__(self, event_dims: int):
        super().__init__()
        self.event_dims = event_dims

    def _sum(self, lp: Tensor) -> Tensor:
        return lp.flatten(-self.event_dims).sum(-1) if self.event_dims else lp

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    name = "bernoulli"

    def log_prob(self, out, x):
        # Bernoulli(logits).log_prob(x) = -BCE-with-logits, valid for x anywhere in [0, 1]. Negated after
        # the sum: negating the full (K·B, *shape) tensor first costs a pass forward and one backward.
        out, x = torch.broadcast_tensors(out, x)
        return -self._sum(F.binary_cross_entropy_with_logits(out, x, reduction="none"))

    def mean(self, out):
        return torch.sigmoid(out)


class ContinuousBernoulliLikelihood(Likelihood):
    name = "continuous_bernoulli"

    def log_prob(self, out, x):
        out, x = torch.broadcast_tensors(out, x)
        return self._sum(ContinuousBernoulli(logits=out, validate_args=False).log_prob(x))

    def mean(self, out):
        return ContinuousBernoulli(logits=out, validate_args=False).mean


class LocScaleLikelihood(Likelihood):
    def __init__(self, event_dims: int, family: str, scale: float | str = 0.75, squash: bool = True):
        super().__init__(event_dims)
        self.name = family
        self.family = Normal if family == "normal" else Laplace
        self.squash = squash
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(()))
            self.fixed_scale = None
        else:
            self.log_scale = None
            self.fixed_scale = float(scale)
            if not self.fixed_scale > 0:
                raise ValueError(f"likelihood scale must be positive, got {scale}")

    def scale(self) -> Tensor | float:
        return self.fixed_scale if self.log_scale is None else self.log_scale.exp()

    def mean(self, out):
        return torch.sigmoid(out) if self.squash else out

    def log_prob(self, out, x):
        # The densities of torch.distributions' Normal / Laplace written out: with a fixed scale torch
        # would broadcast it to the full image shape and spend several extra passes over every pixel
        # (2·scale, its log, a division) that the sum over pixels can take as one constant instead.
        s = self.scale()
        diff = x - self.mean(out)
        if self.name == "laplace":
            lp, log_norm = self._sum(diff.abs()) / -s, _log(2 * s)
        else:
            lp, log_norm = self._sum(diff.square()) / (-2 * s * s), _log(s) + 0.5 * math.log(2 * math.pi)
        pixels = math.prod(diff.shape[diff.dim() - self.event_dims:]) if self.event_dims else 1
        return lp - pixels * log_norm


def _log(v: Tensor | float) -> Tensor | float:
    return torch.log(v) if isinstance(v, Tensor) else math.log(v)


class CategoricalLikelihood(Likelihood):
    name = "categorical"

    def log_prob(self, out, x):
        # One-hot (or soft) targets over the last axis; zero rows are padding and contribute nothing.
        lp = (x * F.log_softmax(out, dim=-1)).sum(-1)
        return lp.flatten(-(self.event_dims - 1)).sum(-1) if self.event_dims > 1 else lp

    def mean(self, out):
        return F.softmax(out, dim=-1)


def make_likelihood(kind: str, shape: tuple[int, ...], modality_kind: str, scale: float | str = 0.75) -> Likelihood:
    """The likelihood ``kind`` for a modality of per-sample ``shape`` and ``modality_kind``."""
    dims = len(shape)
    if kind == "bernoulli":
        return BernoulliLikelihood(dims)
    if kind == "continuous_bernoulli":
        return ContinuousBernoulliLikelihood(dims)
    if kind in ("normal", "laplace"):
        return LocScaleLikelihood(dims, kind, scale, squash=modality_kind == "image")
    if kind == "categorical":
        return CategoricalLikelihood(dims)
    raise ValueError(f"unknown likelihood {kind!r}: use one of {LIKELIHOODS}")

