"""Estimators: turn what a model produced (fused posterior, samples, log-likelihoods) into a loss.

Like pyro's ``Trace_ELBO`` / ``RenyiELBO``, an estimator knows nothing of the fusion: swapping
``--set objective=dreg`` changes the bound for any model. All work is batched: the K samples of every
stratum go through each decoder in one call.

Notation: strata g (one per mixture component when sampling is stratified, otherwise one), samples k,
rows b; log-weights lw[g, k, b] = sum_m λ_m log p(x_m | z) + β (log p(z) − log q(z | X)).

* ``elbo``: mean_k lw (Kingma & Welling 2014); with ``kl="analytic"`` the KL term is closed form.
  For MMVAE this is the naive per-expert ELBO (Shi et al. 2019, eq. 3 with K = 1 per expert).
* ``iwae``: log mean_k exp lw (Burda et al. 2016); stratified over experts for a mixture, averaged
  over strata outside the log (MMVAE's "looser" bound, Shi et al. 2019, eq. 4 and App. B).
* ``dreg``: the IWAE value with doubly reparameterised encoder gradients (Tucker et al. 2019, eq. 7),
  unbiased for any KL weight β and for mixtures: decoders get Σ w̃ ∇lw; the encoders' per-sample
  weight is (1 − β)·w̃ + β·w̃² for one component or draws from the whole mixture (MoPoE), and for
  stratified draws of expert m (MMVAE) w̃ − β w̃ (1 − w̃) r_m on ∂lw/∂z, plus −β w̃ ∂r_m/∂z and the
  score terms of the other experts (r_j: responsibilities). Derivation: docs/models/dreg.md.
* ``dreg-authors``: the MMVAE authors' estimator (``m_dreg_looser``): the one-component weight applied
  to stratified draws too. Biased for MMVAE (docs/models/dreg.md has the measurement); the same as
  ``dreg`` wherever sampling is not stratified.

``w̃`` = softmax of lw over k, without gradient. Randomness comes from ``noise``
(``distributions/noise.py``); the default draws from torch's global generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributions.noise import GLOBAL_NOISE, Noise
from ..fusion.mixture import DiagonalMixture

ESTIMATORS: dict[str, type["Estimator"]] = {}


def register_estimator(name: str):
    def deco(cls):
        cls.name = name
        ESTIMATORS[name] = cls
        return cls

    return deco


@dataclass
class Strata:
    """How a fused posterior is sampled and how its strata add up to the objective.

    ``stratified``: K samples from every component (MMVAE) instead of K from the mixture (MoPoE).
    ``independent``: each component is its own posterior (MVAE's subset ELBOs), so log q is the
    component's density and ``members`` lists the modalities each stratum scores.
    ``weight``: (G, B) combination weights; None means the mixture weights (or 1 when unstratified).
    """

    stratified: bool = False
    independent: bool = False
    weight: Tensor | None = None
    members: list[tuple[str, ...]] | None = None


@dataclass
class Draw:
    """Samples z (G, K, B, D) and, for stratified sampling of a mixture, the component each came from
    (G, K, B); ``source`` is None when the samples are reparameterised draws of the density in lw (one
    component, each stratum its own posterior, or K draws from the whole mixture)."""

    z: Tensor
    source: Tensor | None


class Estimator:
    """Base: sample z, score it, reduce over k; subclasses choose the reduction and the gradient."""

    name = "base"

    def __init__(self, k: int = 1, kl: str = "mc"):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.kl = kl

    def reduce(self, lw: Tensor) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ pieces
    def draw(self, post: DiagonalMixture, strata: Strata, noise: Noise) -> Draw:
        if strata.stratified or strata.independent:
            # (the default noise is not passed on: tests may replace rsample_stratified(k) by a stub)
            z = post.rsample_stratified(self.k) if noise is GLOBAL_NOISE else post.rsample_stratified(self.k, noise)
            if strata.independent or post.num_components == 1:
                return Draw(z, None)
            g = torch.arange(post.num_components, device=z.device).view(-1, 1, 1)
            return Draw(z, g.expand(z.shape[:-1]))
        # K samples from the mixture (MoPoE): the random pick is independent of the parameters, so the
        # mixture as a whole is reparameterised and needs no per-component treatment (docs/models/dreg.md)
        return Draw(post.rsample(self.k, noise).unsqueeze(0), None)              # (1, K, B, D)

    @staticmethod
    def log_weights(model, batch, beta: float, q: DiagonalMixture, strata: Strata, z: Tensor):
        """rec, log p(z), log q(z | X) and lw = rec + β (log p − log q), each (G, K, B)."""
        rec = model.reconstruction(z, batch, strata.members)
        log_q = q.log_prob_strata(z, strata.independent)   # the mixture, or each stratum's own component
        log_p = q.log_prior(model.prior, z)
        return rec, log_p, log_q, rec + beta * (log_p - log_q)

    def objective(self, model, batch, beta: float, post: DiagonalMixture, strata: Strata,
                  draw: Draw) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """What is differentiated, (G, B), and (rec, log_p, log_q, lw); by default the bound itself."""
        parts = self.log_weights(model, batch, beta, post, strata, draw.z)
        return self.reduce(parts[3]), parts

    # ------------------------------------------------------------------------------------- call
    def __call__(self, model, batch, beta: float, post: DiagonalMixture | None = None,
                 strata: Strata | None = None, noise: Noise | None = None) -> tuple[Tensor, dict]:
        if post is None:
            post = model.posterior(batch)
        strata = strata or Strata(stratified=model.stratified)
        many = strata.stratified or strata.independent
        weight = (post.weight if strata.weight is None else strata.weight) if many else torch.ones_like(post.weight[:1])
        draw = self.draw(post, strata, noise or GLOBAL_NOISE)
        if self.kl == "analytic":
            rec = model.reconstruction(draw.z, batch, strata.members)            # (G, K, B)
            kl = post.kl_components(model.prior) if many else post.kl_average(model.prior).unsqueeze(0)
            objective = rec.mean(1) - beta * kl
            value, divergence = objective, kl
        else:
            objective, (rec, log_p, log_q, lw) = self.objective(model, batch, beta, post, strata, draw)
            value = None
        loss = -(weight * objective).sum(0).mean()
        with torch.no_grad():  # logs only: no graph is recorded for them
            if value is None:
                value, divergence = self.reduce(lw), (log_q - log_p).mean(1)
            logs: dict[str, Tensor] = {"rec": (weight * rec.mean(1)).sum(0).mean(),
                                       "kl": (weight * divergence).sum(0).mean(),
                                       "bound": (weight * value).sum(0).mean()}
        return loss, logs


@register_estimator("elbo")
class ELBO(Estimator):
    def reduce(self, lw):
        return lw.mean(1)


@register_estimator("iwae")
class IWAE(Estimator):
    def reduce(self, lw):
        return torch.logsumexp(lw, dim=1) - math.log(lw.shape[1])


@register_estimator("dreg")
class DReG(IWAE):
    """Unbiased doubly reparameterised IWAE gradients for any β and any mixture (docs/models/dreg.md).

    The surrogate's value is the IWAE bound (so losses and validation losses are the bound); only its
    gradient differs. With q's parameters detached in lw:

    * decoders (and a learned prior): Σ_k w̃_k ∇lw_k;
    * one component, or K draws from the whole mixture (MoPoE: the pick does not depend on the
      parameters, so the mixture is reparameterised as a whole): (1 − β) w̃_k + β w̃_k² on ∂lw_k/∂z_k;
    * stratified sampling (MMVAE), the sample z_k of expert m:
      [w̃_k − β w̃_k (1 − w̃_k) r_m(z_k)] ∂lw_k/∂z_k − β w̃_k ∂r_m(z_k)/∂z_k, through z_k = loc + scale·ε;
    * every other component j: the score term −β Σ_k w̃_k r_j(z_k) ∇_{φ_j} log q_j(z_k) at fixed z_k.

    r_j(z) = π_j q_j(z) / q(z | X) are the responsibilities; with one component r = 1 and the stratified
    weight reduces to (1 − β) w̃ + β w̃².
    """

    exact_mixture = True   # the responsibility terms for stratified mixtures (False: the authors' DReG)
    detach_q = True        # log q with detached parameters in lw (Tucker et al. 2019, eq. 5)

    @staticmethod
    def encoder_factor(w: Tensor, beta: float) -> Tensor:
        """What multiplies w̃ ∂lw/∂z for one component: 1 − β (1 − w̃), i.e. the weight (1 − β) w̃ + β w̃²."""
        return 1 - beta * (1 - w)

    def objective(self, model, batch, beta, post, strata, draw):
        z = draw.z
        # lw is computed on a view of z whose gradient is reweighted per sample below (a hook), so that
        # the responsibility term, computed on z itself, keeps its own weight.
        z_lw = z.view_as(z) if z.requires_grad else z
        parts = self.log_weights(model, batch, beta, post.detached() if self.detach_q else post, strata, z_lw)
        lw = parts[3]
        value = self.reduce(lw)
        if not z.requires_grad:                                # nothing reaches the encoders
            return value, parts
        w = torch.softmax(lw.detach(), dim=1)                                      # w̃ over k
        surrogate = (w * lw).sum(1)                            # decoders: w̃ ∇lw; encoders: w̃ ∂lw/∂z (reweighted)
        mixture = draw.source is not None
        if mixture and self.exact_mixture and beta != 0:
            log_r = self._log_responsibilities(post.detached(), z)                 # (G, K, J, B), live in z
            r_own = log_r.gather(-2, draw.source.unsqueeze(-2)).squeeze(-2).exp()  # r_m(z_k), (G, K, B)
            factor = 1 - beta * (1 - w) * r_own.detach()                           # r = 1: encoder_factor
            surrogate = surrogate - beta * (w * r_own).sum(1)                      # −β w̃ ∂r_m/∂z (pathwise)
            r_other = log_r.detach().exp().scatter(-2, draw.source.unsqueeze(-2), 0.0)  # r_j, j ≠ m
            log_q_live = post.log_components(z.detach())                          # (G, K, J, B), live in φ
            score = torch.where(r_other > 0, r_other * log_q_live, torch.zeros_like(log_q_live)).sum(-2)
            surrogate = surrogate - beta * (w * score).sum(1)                      # other components' score
        else:
            factor = self.encoder_factor(w, beta)
        factor = post.path_factor(factor, self.encoder_factor(w, beta))          # per latent dimension
        if z_lw is not z:
            z_lw.register_hook(lambda grad: (grad * factor).to(grad.dtype))   # bf16 autocast: z may be bf16
        return surrogate + (value - surrogate).detach(), parts

    @staticmethod
    def _log_responsibilities(q: DiagonalMixture, z: Tensor) -> Tensor:
        """log r_j(z) = log π_j q_j(z) − log q(z | X) for z (G, K, B, D) -> (G, K, J, B)."""
        lp = q.log_weighted_components(z)
        return lp - torch.logsumexp(lp, dim=-2, keepdim=True)


@register_estimator("dreg-authors")
class AuthorsDReG(DReG):
    """The MMVAE authors' DReG (iffsid/mmvae, ``m_dreg_looser``): every sample of a mixture gets the
    one-component weight ((1 − β) w̃ + β w̃², at β = 1 the authors' w̃²) and the mixture density with
    detached parameters; the other experts' score terms are dropped. Biased for mixtures: kept to
    reproduce the published training, see docs/models/dreg.md for the measured bias."""

    exact_mixture = False


def make_estimator(name: str, k: int = 1, kl: str = "mc") -> Estimator:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown objective {name!r}: use one of {sorted(ESTIMATORS)}")
    if kl not in ("mc", "analytic"):
        raise ValueError(f"unknown kl {kl!r}: use analytic or mc")
    if name != "elbo":
        kl = "mc"  # IWAE-type bounds need log-weights, not a closed-form KL
    return ESTIMATORS[name](k=k, kl=kl)
