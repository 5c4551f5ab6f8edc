"""mmJSD's dynamic prior (Sutter, Daunhawer & Vogt 2020, "Multimodal Generative Learning Utilizing
Jensen-Shannon Divergence"; official code thomassutter/mmjsd, ``alpha_poe``): the weighted geometric mean
of Gaussian densities, f(z) ∝ Π_j q_j(z)^{π_j} with Σ_j π_j = 1, which is the Gaussian with

    1/σ_f² = Σ_j π_j / (σ_j² + 1e-8),   μ_f = σ_f² Σ_j π_j μ_j / (σ_j² + 1e-8)

(the official code's ε = 1e-8 on every variance). Weights are per row, so unobserved experts get π = 0.
"""
from __future__ import annotations

from torch import Tensor

EPS = 1e-8


def weighted_geometric_mean(locs: Tensor, scales: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """locs, scales (J, B, D); weights (J, B) summing to 1 over J -> loc, scale (B, D) of f."""
    w = weights.unsqueeze(-1) / (scales.pow(2) + EPS)
    var = 1.0 / w.sum(0)
    return var * (w * locs).sum(0), var.sqrt()
