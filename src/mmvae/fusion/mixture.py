"""The fused posterior of every fusion: a weighted mixture of diagonal components, one row at a time.

A product of experts is a mixture with one component; a mixture of experts has one component per
modality; MoPoE one per subset. Weights are per row (``(G, B)``), zero for components a row cannot use
because its modalities are missing, so masks flow into sampling and densities without special cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..distributions.noise import GLOBAL_NOISE, Noise
from ..distributions.posteriors import kl_to_prior, log_density


@dataclass
class DiagonalMixture:
    """q(z | X) = sum_g w[g, b] q_g(z | X), with q_g diagonal of one family.

    ``loc`` and ``scale`` are ``(G, B, D)``; ``weight`` is ``(G, B)`` with rows summing to 1 (a row with
    no usable component keeps the prior's place: all its weight on component 0, which fusions set to
    the prior).
    """

    family: type  # torch.distributions.Normal or Laplace
    loc: Tensor
    scale: Tensor
    weight: Tensor

    @staticmethod
    def single(q: Distribution) -> "DiagonalMixture":
        """One diagonal posterior q(z | X) with (B, D) parameters as a one-component mixture."""
        return DiagonalMixture(type(q), q.loc[None], q.scale[None], torch.ones_like(q.loc[None, :, 0]))

    @property
    def components(self) -> Distribution:
        return self.family(self.loc, self.scale, validate_args=False)

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    def detached(self) -> "DiagonalMixture":
        return DiagonalMixture(self.family, self.loc.detach(), self.scale.detach(), self.weight)

    @property
    def mean(self) -> Tensor:
        """E[z] per row, (B, D)."""
        return (self.weight.unsqueeze(-1) * self.loc).sum(0)

    def log_components(self, z: Tensor) -> Tensor:
        """log q_g(z | X) of every component for z of shape (..., B, D) -> (..., G, B)."""
        return log_density(self.components, z.unsqueeze(-3))

    def log_weighted_components(self, z: Tensor) -> Tensor:
        """log w_g + log q_g(z | X) for z of shape (..., B, D) -> (..., G, B); −inf where w_g = 0."""
        lq = self.log_components(z)                                               # (..., G, B)
        logw = torch.where(self.weight > 0, self.weight.log(), torch.full_like(self.weight, -math.inf))
        return lq + logw

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z | X) for z of shape (..., B, D) -> (..., B); log-sum-exp over usable components."""
        if self.num_components == 1:
            return log_density(self.components, z.unsqueeze(-3)).squeeze(-2)
        return torch.logsumexp(self.log_weighted_components(z), dim=-2)

    # ------------------------------------------------ how the estimators score stratified samples
    # z (G, K, B, D): the K samples of each stratum g. A fused posterior whose strata score different
    # parts of the latent (fusion/factorised.py: shared + private latents) overrides these four.
    def log_prob_strata(self, z: Tensor, independent: bool = False) -> Tensor:
        """log q of each stratum's samples, (G, K, B): the mixture density, or each component's own
        density when the components are separate posteriors (``Strata(independent=True)``)."""
        if independent:
            return log_density(self.components, z.transpose(0, 1)).transpose(0, 1)
        return self.log_prob(z)

    def log_prior(self, prior: Distribution, z: Tensor) -> Tensor:
        """log p(z) of each stratum's samples, (G, K, B)."""
        return log_density(prior, z)

    def path_factor(self, mixture: Tensor, single: Tensor) -> Tensor:
        """DReG's weight on ∂lw/∂z per latent dimension, broadcastable to z: ``mixture`` (G, K, B) where
        the samples' density in lw is the mixture, ``single`` where it is the sampling component alone."""
        return mixture.unsqueeze(-1)

    def rsample_stratified(self, k: int, noise: Noise = GLOBAL_NOISE, name: str = "z") -> Tensor:
        """K reparameterised samples from *each* component: (G, K, B, D) (stratified sampling)."""
        return noise.rsample(self.components, (k,), name).transpose(0, 1)

    def rsample(self, k: int = 1, noise: Noise = GLOBAL_NOISE, name: str = "z") -> Tensor:
        """K samples from the mixture, the component drawn per row and sample: (K, B, D)."""
        return self.rsample_with_source(k, noise, name)[0]

    def rsample_with_source(self, k: int = 1, noise: Noise = GLOBAL_NOISE,
                            name: str = "z") -> tuple[Tensor, Tensor | None]:
        """K samples from the mixture (K, B, D) and the component each was drawn from (K, B), None when
        there is one component. Only the location within the component is reparameterised: the mixture
        weights do not depend on the encoders, so the discrete pick needs no gradient."""
        if self.num_components == 1:
            return noise.rsample(self.components, (k,), name)[:, 0], None
        g, b, d = self.loc.shape
        pick = noise.choice(self.weight, k, name)                                # (K, B)
        idx = pick.unsqueeze(-1).expand(k, b, d)
        loc = torch.gather(self.loc, 0, idx)
        scale = torch.gather(self.scale, 0, idx)
        return noise.rsample(self.family(loc, scale, validate_args=False), (), name), pick

    def kl_components(self, prior: Distribution) -> Tensor:
        """KL(q_g || p) per component, (G, B)."""
        return kl_to_prior(self.components, prior)

    def kl_average(self, prior: Distribution) -> Tensor:
        """sum_g w_g KL(q_g || p), (B,): exact for one component, an upper bound on KL(q || p) otherwise
        (the bound MoPoE optimises, Sutter et al. 2021, eq. 6)."""
        return (self.weight * self.kl_components(prior)).sum(0)
