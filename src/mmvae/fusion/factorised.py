"""Shared and private latents (MMVAE+, DMVAE, CMVAE): one latent vector per sample, u = [z, w_1, …, w_M].

z is the shared latent, w_m the private (modality-specific) latent of modality m; decoder m reads
[z, w_m]. A stratum g of an objective draws the whole vector: z from the shared posterior's component g
and every w_m from a distribution the model chooses per stratum (the private posterior q(w_m | x_m), or
MMVAE+'s auxiliary prior r_m). The stratum's importance weight scores z and only *some* private blocks:

    lw_g = Σ_d λ_d log p(x_d | z, w_d) + β [log p(z) + Σ_{m scored in g} log p(w_m)
                                            − log q(z | ·) − Σ_{m scored in g} log q_g(w_m)],

where q(z | ·) is the mixture q(z | X) = Σ_j π_j q_j(z) for stratified strata (MMVAE+) or the stratum's
own component (independent strata: DMVAE's joint and unimodal ELBOs). A private block that is sampled
but not scored (MMVAE+'s w̃_n ∼ r_n) enters lw only through the decoder.

:class:`FactorisedMixture` is a :class:`DiagonalMixture` over u that knows which private dimensions each
stratum scores, so the library's estimators (elbo, iwae, dreg, dreg-authors) compute these objectives
unchanged: they ask the posterior for log q, log p and DReG's weight per dimension (``log_prob_strata``,
``log_prior``, ``path_factor``). DReG's weights per block (docs/models/mmvaeplus.md): the shared block
keeps the mixture weight of docs/models/dreg.md, a scored private block the one-component weight
(1 − β) w̃ + β w̃² (Tucker et al.'s identity: the block is drawn from the density lw scores it by), an
unscored block weight w̃ (it is a reparameterised sample that no density of lw depends on, like a
decoder input).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution, kl_divergence

from ..distributions.posteriors import log_density
from .mixture import DiagonalMixture


class PrivateLayout:
    """Where each block sits in u = [z (shared_dim), w_1, …, w_M (private_dim each)], modalities in order."""

    def __init__(self, names: list[str], shared_dim: int, private_dim: int):
        self.names, self.shared_dim, self.private_dim = list(names), int(shared_dim), int(private_dim)
        self.full_dim = self.shared_dim + len(self.names) * self.private_dim

    def slot(self, m: str) -> slice:
        """The columns of w_m in u."""
        start = self.shared_dim + self.names.index(m) * self.private_dim
        return slice(start, start + self.private_dim)

    def decoder_input(self, u: Tensor, m: str) -> Tensor:
        """[z, w_m] (..., shared_dim + private_dim): what decoder m reads."""
        return torch.cat([u[..., : self.shared_dim], u[..., self.slot(m)]], -1)


@dataclass
class BlockPrior:
    """p(u) = p(z) Π_m p(w_m). ``shared``: a diagonal torch Distribution over z, or any object with
    ``log_prob(z) -> (...)`` and ``sample(shape)`` (CMVAE's cluster prior); ``private``: a diagonal
    Distribution over the M · private_dim private columns."""

    shared: object
    private: Distribution

    def log_prob_shared(self, z: Tensor) -> Tensor:
        if isinstance(self.shared, Distribution):
            return log_density(self.shared, z)
        return self.shared.log_prob(z)

    def sample(self, shape: tuple[int, ...]) -> Tensor:
        return torch.cat([self.shared.sample(shape), self.private.sample(shape)], -1)

    def diagonal(self) -> Distribution:
        """p(u) as one diagonal distribution (for closed-form KLs); only when p(z) is diagonal."""
        if not isinstance(self.shared, Distribution):
            raise ValueError(f"the shared prior ({type(self.shared).__name__}) is not a diagonal distribution: "
                             f"no closed-form KL; use --set kl=mc")
        return type(self.private)(torch.cat([self.shared.loc, self.private.loc], -1),
                                  torch.cat([self.shared.scale, self.private.scale], -1), validate_args=False)


@dataclass
class FactorisedMixture(DiagonalMixture):
    """A DiagonalMixture over u whose first ``shared_dim`` columns are the shared block and whose strata
    score only the private columns where ``scored`` (G, B, P) is True (see the module docstring)."""

    shared_dim: int = 0
    scored: Tensor | None = None

    def detached(self) -> "FactorisedMixture":
        return replace(self, loc=self.loc.detach(), scale=self.scale.detach())

    @property
    def shared(self) -> DiagonalMixture:
        s = self.shared_dim
        return DiagonalMixture(self.family, self.loc[..., :s], self.scale[..., :s], self.weight)

    def log_components(self, z: Tensor) -> Tensor:
        """log q_g(z) of the shared block only: the responsibilities of DReG's mixture terms."""
        return self.shared.log_components(z[..., : self.shared_dim])

    def log_prob(self, z: Tensor) -> Tensor:
        """The mixture density of whole vectors u (..., B, D) -> (..., B), every block scored (the
        likelihood estimates' proposal, ``private_posterior``); the estimators use ``log_prob_strata``."""
        lq = log_density(self.components, z.unsqueeze(-3)) + torch.log(self.weight)
        return torch.logsumexp(lq, dim=-2)

    def _scored(self, private: Tensor) -> Tensor:
        """Σ over the scored private columns of per-column values (G, K, B, P) -> (G, K, B)."""
        return torch.where(self.scored.unsqueeze(1), private, torch.zeros_like(private)).sum(-1)

    def log_prob_strata(self, z: Tensor, independent: bool = False) -> Tensor:
        s = self.shared_dim
        per = self.family(self.loc.unsqueeze(1), self.scale.unsqueeze(1), validate_args=False).log_prob(z)
        shared = per[..., :s].sum(-1) if independent else self.shared.log_prob(z[..., :s])
        return shared + self._scored(per[..., s:])

    def log_prior(self, prior: BlockPrior, z: Tensor) -> Tensor:
        s = self.shared_dim
        return prior.log_prob_shared(z[..., :s]) + self._scored(prior.private.log_prob(z[..., s:]))

    def kl_components(self, prior: BlockPrior) -> Tensor:
        """KL(q_g(z) || p(z)) + Σ_{scored m} KL(q_g(w_m) || p(w_m)) per component, (G, B)."""
        kl = kl_divergence(self.components, prior.diagonal())                          # (G, B, D)
        private = kl[..., self.shared_dim:]
        return kl[..., : self.shared_dim].sum(-1) + torch.where(self.scored, private, torch.zeros_like(private)).sum(-1)

    def path_factor(self, mixture: Tensor, single: Tensor) -> Tensor:
        shared = mixture.unsqueeze(-1).expand(*mixture.shape, self.shared_dim)
        private = torch.where(self.scored.unsqueeze(1), single.unsqueeze(-1), torch.ones_like(single).unsqueeze(-1))
        return torch.cat([shared, private], -1)


def _rows(dist: Distribution, b: int) -> tuple[Tensor, Tensor]:
    """loc and scale of a private distribution as (B, P): a prior's (P,) parameters are expanded."""
    return dist.loc.expand(b, -1), dist.scale.expand(b, -1)


def private_posterior(shared: DiagonalMixture, layout: PrivateLayout, private: Mapping[str, Distribution],
                      masks: Mapping[str, Tensor], fill: Mapping[str, Distribution]) -> FactorisedMixture:
    """q(z, W | X) = q(z | X) Π_m q(w_m | x_m): the same private posteriors in every component, ``fill[m]``
    (the prior p(w_m)) for a modality a row does not observe; the observed private blocks are scored.
    Components differ only in the shared block, so this is also an ordinary mixture density over u
    (its log_prob is log q(z | X) + Σ_m log q(w_m | ·)): the proposal of the likelihood estimates."""
    g, b, _ = shared.loc.shape
    locs, scales, scored = [], [], []
    for m in layout.names:
        loc, scale = _rows(fill[m], b)
        seen = masks[m] if m in private else torch.zeros(b, dtype=torch.bool, device=loc.device)
        if m in private:
            loc = torch.where(seen.unsqueeze(-1), private[m].loc, loc)
            scale = torch.where(seen.unsqueeze(-1), private[m].scale, scale)
        locs.append(loc)
        scales.append(scale)
        scored.append(seen.unsqueeze(-1).expand(b, layout.private_dim))
    loc, scale, scored = torch.cat(locs, -1), torch.cat(scales, -1), torch.cat(scored, -1)
    return FactorisedMixture(shared.family, torch.cat([shared.loc, loc.expand(g, -1, -1)], -1),
                             torch.cat([shared.scale, scale.expand(g, -1, -1)], -1), shared.weight,
                             layout.shared_dim, scored.expand(g, -1, -1))


def auxiliary_strata(shared: DiagonalMixture, sources: list[str], layout: PrivateLayout,
                     private: Mapping[str, Distribution], masks: Mapping[str, Tensor],
                     aux: Mapping[str, Distribution]) -> FactorisedMixture:
    """MMVAE+'s strata (Palumbo et al. 2023, eq. 4): stratum g (expert ``sources[g]`` = m) draws z from
    q(z | x_m), w_m from q(w_m | x_m) and every other w_n from the auxiliary prior r_n = ``aux[n]``;
    it scores z by the mixture and w_m only."""
    g, b, _ = shared.loc.shape
    locs, scales, scored = [], [], []
    for m in sources:
        parts_loc, parts_scale, parts_scored = [], [], []
        for n in layout.names:
            loc, scale = (private[n].loc, private[n].scale) if n == m else _rows(aux[n], b)
            parts_loc.append(loc)
            parts_scale.append(scale)
            own = masks[m] if n == m else torch.zeros(b, dtype=torch.bool, device=loc.device)
            parts_scored.append(own.unsqueeze(-1).expand(b, layout.private_dim))
        locs.append(torch.cat(parts_loc, -1))
        scales.append(torch.cat(parts_scale, -1))
        scored.append(torch.cat(parts_scored, -1))
    return FactorisedMixture(shared.family, torch.cat([shared.loc, torch.stack(locs)], -1),
                             torch.cat([shared.scale, torch.stack(scales)], -1), shared.weight,
                             layout.shared_dim, torch.stack(scored))
