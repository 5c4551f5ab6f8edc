"""A clustering prior over the shared latent: p(z) = Σ_c π_c p(z | c) (CMVAE, Palumbo et al. 2024, Sec. 3).

p(z | c) = family(μ_c, 1): learned centres μ_c (initialised uniformly in [−1, 1], as MultiVae's CMVAE),
unit scales kept fixed ("the scales are fixed to 1 in the original code", MultiVae's note); cluster
weights π = softmax(logits) learned, starting uniform. The estimators need only log p(z) (a
log-sum-exp over clusters), which equals the paper's explicit expectation over q(c | z, X) = p(c | z)
(Σ_c p(c|z) [log π_c + log p(z|c) − log p(c|z)] = log p(z)). A removed cluster has logit −inf
(post-hoc selection, models/cmvae.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Laplace, Normal

from .posteriors import log_density


class ClusterPrior(nn.Module):
    """p(z) = Σ_c π_c family(μ_c, 1) over ``dim`` dimensions with ``clusters`` components."""

    def __init__(self, family: str, dim: int, clusters: int):
        super().__init__()
        if family not in ("normal", "laplace"):
            raise ValueError(f"unknown prior family {family!r}: use normal or laplace")
        if int(clusters) < 1:
            raise ValueError(f"the number of clusters must be at least 1, got {clusters}")
        self.family = Normal if family == "normal" else Laplace
        self.logits = nn.Parameter(torch.zeros(int(clusters)))
        self.centres = nn.Parameter(2 * torch.rand(int(clusters), int(dim)) - 1)

    @property
    def num_clusters(self) -> int:
        """Clusters still in use (removed ones have logit −inf)."""
        return int(torch.isfinite(self.logits).sum())

    @property
    def weights(self) -> Tensor:
        return F.softmax(self.logits, -1)

    def components(self):
        return self.family(self.centres, torch.ones_like(self.centres), validate_args=False)

    def log_joint(self, z: Tensor) -> Tensor:
        """log π_c + log p(z | c) for z (..., D) -> (..., C)."""
        return F.log_softmax(self.logits, -1) + log_density(self.components(), z.unsqueeze(-2))

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z), (...)."""
        return torch.logsumexp(self.log_joint(z), -1)

    def responsibilities(self, z: Tensor) -> Tensor:
        """p(c | z) ∝ π_c p(z | c), (..., C)."""
        return F.softmax(self.log_joint(z), -1)

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...]) -> Tensor:
        c = Categorical(logits=self.logits).sample(shape)
        return self.family(self.centres[c], torch.ones_like(self.centres[c])).sample()

    def extra_repr(self) -> str:
        return f"{self.family.__name__.lower()}, clusters={self.logits.numel()}, dim={self.centres.shape[1]}"
