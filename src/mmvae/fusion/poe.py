"""Product of Gaussian experts (Wu & Goodman 2018, MVAE, Sec. 2 and eq. 4).

q(z | X) ∝ p(z) prod_m q(z | x_m): precision-weighted mean, variance = 1 / sum of precisions. Missing
experts contribute zero precision, so masks need no special case. With several subset masks at once
(``(S, B)``) all subset products are computed in one batched pass.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Normal

from ..errors import UserError

EPS = 1e-8


def poe_params(locs: Tensor, scales: Tensor, masks: Tensor, prior_expert: bool = True) -> tuple[Tensor, Tensor]:
    """Product of M diagonal Gaussians.

    ``locs``, ``scales``: (M, B, D); ``masks``: (..., M, B) bool, which experts enter each product.
    Returns loc, scale of shape (..., B, D). A product with no expert and no prior expert falls back to
    N(0, I) (callers give such products zero weight).
    """
    precision = 1.0 / (scales.pow(2) + EPS)                             # (M, B, D)
    w = masks.unsqueeze(-1).to(locs.dtype) * precision                  # (..., M, B, D)
    total = w.sum(-3)
    weighted = (w * locs).sum(-3)
    if prior_expert:
        total = total + 1.0                                             # N(0, I): precision 1, mean 0
    else:
        empty = ~masks.any(-2)                                          # (..., B)
        total = torch.where(empty.unsqueeze(-1), torch.ones_like(total), total)
    var = 1.0 / total
    return weighted * var, var.sqrt()


def require_normal(experts: dict, who: str) -> None:
    for name, q in experts.items():
        if not isinstance(q, Normal):
            raise UserError(f"{who} multiplies Gaussian experts, but modality '{name}' has a "
                            f"{type(q).__name__} posterior: use --set posterior=normal")
