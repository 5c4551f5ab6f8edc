"""The prior p(z) of the fusion models: fixed, or with learned parameters (``--set prior=...``).

* ``standard`` (the default, also ``None``): N(0, I) or Laplace(0, 1), no parameters.
* ``learned``: zero location, learned scale = softmax(logits) · D, logits starting at 0 (scale 1). This
  is the MMVAE authors' ``--learn-prior`` (iffsid/mmvae, ``_pz_params``: the location a fixed zero
  parameter, the scale logits trainable, the same softmax · D normalisation as the Laplace posteriors):
  the scales of the D dimensions are learned relative to each other and keep a sum of D. The same
  parameterisation is used for Gaussian priors.
* ``learned-loc-scale``: the location is learned as well (starting at 0).

The parameters live in the model's state_dict (so in model.safetensors, and a resumed run keeps them);
every user of ``model.prior`` (the estimators' log p(z) and KL, ``generate``, the evaluation's
likelihoods) sees the learned values.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Laplace, Normal

from .posteriors import posterior_from

PRIORS = ("standard", "learned", "learned-loc-scale")


def prior_kind(kind: str | None) -> str:
    """The canonical name of a prior option (None is ``standard``); ValueError for an unknown one."""
    kind = "standard" if kind in (None, "", "none", "fixed") else str(kind)
    if kind not in PRIORS:
        raise ValueError(f"unknown prior {kind!r}: use one of {', '.join(PRIORS)} "
                         f"(standard: fixed N(0, I) / Laplace(0, 1); learned: learned scale, as MMVAE's "
                         f"--learn-prior; learned-loc-scale: learned location and scale)")
    return kind


class Prior(nn.Module):
    """p(z) of ``family`` (``normal`` or ``laplace``) over ``dim`` latent dimensions; see the module docs."""

    def __init__(self, family: str, dim: int, kind: str | None = None):
        super().__init__()
        if family not in ("normal", "laplace"):
            raise ValueError(f"unknown prior family {family!r}: use normal or laplace")
        self.family = family
        self.dim = int(dim)
        self.kind = prior_kind(kind)
        self.register_buffer("_anchor", torch.zeros(self.dim), persistent=False)   # device and dtype
        if self.kind != "standard":
            self.scale_logits = nn.Parameter(torch.zeros(self.dim))
        if self.kind == "learned-loc-scale":
            self.loc = nn.Parameter(torch.zeros(self.dim))

    @property
    def learned(self) -> bool:
        return self.kind != "standard"

    def distribution(self) -> Distribution:
        if self.kind == "standard":
            loc, scale = self._anchor, torch.ones_like(self._anchor)
        else:
            scale = F.softmax(self.scale_logits, dim=-1) * self.dim
            loc = self.loc if self.kind == "learned-loc-scale" else torch.zeros_like(scale)
        cls = Normal if self.family == "normal" else Laplace
        return cls(loc, scale, validate_args=False)

    def extra_repr(self) -> str:
        return f"{self.family}, dim={self.dim}, kind={self.kind}"


def conditional_normal(net: Callable | None, inputs: Mapping[str, Tensor], dim: int) -> Normal:
    """A conditional prior p(z | c) (CVAE's prior network, Sohn, Lee & Yan 2015): the Gaussian that the
    encoder-shaped ``net`` gives for the inputs c ((loc, raw_scale), scale = softplus(raw) + 1e-6), or
    N(0, I) for every row of c when ``net`` is None."""
    if net is not None:
        return posterior_from("normal", net(inputs), dim)
    first = next(iter(inputs.values()))
    zeros = first.new_zeros(first.shape[0], dim)
    return Normal(zeros, torch.ones_like(zeros), validate_args=False)
