"""MVAE's subsampled training objective (Wu & Goodman 2018, Sec. 3, eq. 5).

Sum of the ELBOs of the joint subset, every unimodal subset and ``k`` random further subsets (drawn per
step), each with the product-of-experts posterior of its members. All subsets are computed in one
batched pass: S products of experts, and each decoder called once on the subsets that contain it. A
subset counts for a row only when the row observes all its members, so a partially observed row
contributes the ELBO of its observed subset (and its unimodal parts), as in the paper.
"""
from __future__ import annotations

import torch

from ..fusion.fusions import nonempty_subsets, subset_products
from ..fusion.mixture import DiagonalMixture
from ..fusion.poe import require_normal
from .estimators import Estimator, Strata


def training_subsets(names: list[str], k: int) -> list[tuple[str, ...]]:
    """Joint, unimodal, and ``k`` random other subsets (torch's RNG, so resuming replays the draws)."""
    joint = tuple(names)
    unimodal = [(m,) for m in names]
    others = [s for s in nonempty_subsets(names) if 1 < len(s) < len(names)]
    extra = [others[i] for i in torch.randperm(len(others))[: min(k, len(others))].tolist()] if k else []
    return [joint] + (unimodal if len(names) > 1 else []) + extra


class SubsampledObjective:
    """Wraps any estimator (ELBO by default) into MVAE's sum over subsets."""

    def __init__(self, inner: Estimator, k: int = 0):
        self.inner = inner
        self.k = int(k)
        self.name = f"subsampled-{inner.name}"

    def __call__(self, model, batch, beta: float, noise=None):
        experts = model.encode_experts(batch)
        require_normal(experts, "MVAE's product of experts")
        subsets = training_subsets(list(experts), self.k)
        loc, scale, usable = subset_products(experts, batch.mask, subsets, prior_expert=True)
        post = DiagonalMixture(type(next(iter(experts.values()))), loc, scale, usable)
        return self.inner(model, batch, beta, post, Strata(independent=True, weight=usable, members=subsets), noise)
