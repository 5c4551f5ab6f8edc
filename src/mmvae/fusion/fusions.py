"""Fusions: how unimodal experts q(z | x_m) meet, each returning a DiagonalMixture over observed experts.

* ``poe``    MVAE (Wu & Goodman 2018): one component, product with a prior expert.
* ``moe``    MMVAE (Shi et al. 2019): one component per observed modality, uniform weights.
* ``mopoe``  MoPoE (Sutter et al. 2021, eq. 5): one component per non-empty subset, each the product of
             the subset's experts (no prior expert), uniform over the subsets that a row fully observes.
A new fusion is one decorated function here or in its own module.
"""
from __future__ import annotations

from itertools import combinations
from typing import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from .mixture import DiagonalMixture
from .poe import poe_params, require_normal

Fusion = Callable[[dict[str, Distribution], dict[str, Tensor]], DiagonalMixture]
FUSIONS: dict[str, Fusion] = {}


def register_fusion(name: str):
    def deco(fn):
        FUSIONS[name] = fn
        return fn

    return deco


def _stack(experts: dict[str, Distribution], masks: dict[str, Tensor]):
    names = list(experts)
    locs = torch.stack([experts[m].loc for m in names])
    scales = torch.stack([experts[m].scale for m in names])
    obs = torch.stack([masks[m] for m in names])                         # (M, B)
    return names, locs, scales, obs


@register_fusion("poe")
def product_of_experts(experts, masks, prior_expert: bool = True) -> DiagonalMixture:
    require_normal(experts, "the product of experts")
    _, locs, scales, obs = _stack(experts, masks)
    loc, scale = poe_params(locs, scales, obs, prior_expert)
    return DiagonalMixture(Normal, loc[None], scale[None], torch.ones_like(obs[:1], dtype=loc.dtype))


@register_fusion("moe")
def mixture_of_experts(experts, masks) -> DiagonalMixture:
    _, locs, scales, obs = _stack(experts, masks)
    family = type(next(iter(experts.values())))
    w = obs.to(locs.dtype)
    return DiagonalMixture(family, locs, scales, w / w.sum(0).clamp_min(1.0))


def nonempty_subsets(names: list[str]) -> list[tuple[str, ...]]:
    return [s for r in range(1, len(names) + 1) for s in combinations(names, r)]


def subset_masks(names: list[str], subsets: list[tuple[str, ...]], device=None) -> Tensor:
    """(S, M) bool membership matrix."""
    return torch.tensor([[m in s for m in names] for s in subsets], dtype=torch.bool, device=device)


def subset_products(experts, masks, subsets: list[tuple[str, ...]], prior_expert: bool):
    """The product of experts of every subset at once: loc, scale (S, B, D), and (S, B) whether each
    row observes all of a subset's members. Only those rows may use a subset's product (callers weight
    the others by zero; their products of placeholder experts are finite and never scored)."""
    names, locs, scales, obs = _stack(experts, masks)
    member = subset_masks(names, subsets, locs.device)                   # (S, M)
    loc, scale = poe_params(locs, scales, member.unsqueeze(-1).expand(-1, -1, obs.shape[1]), prior_expert)
    usable = (~member.unsqueeze(-1) | obs.unsqueeze(0)).all(1).to(locs.dtype)
    return loc, scale, usable


@register_fusion("mopoe")
def mixture_of_products(experts, masks) -> DiagonalMixture:
    require_normal(experts, "the mixture of products of experts")
    loc, scale, usable = subset_products(experts, masks, nonempty_subsets(list(experts)), prior_expert=False)
    return DiagonalMixture(Normal, loc, scale, usable / usable.sum(0).clamp_min(1.0))
