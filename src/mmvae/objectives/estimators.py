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
* ``dreg``: the IWAE value with doubly reparameterised encoder gradients (Tucker et al. 2019, eq. 7):
  log q evaluated with detached parameters, decoders weighted by w̃, encoders by w̃² through a hook
  on the samples (w̃ = softmax of lw over k, no gradient).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributions.posteriors import log_density
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


class Estimator:
    """Base: sample z, score it, reduce over k; subclasses choose the reduction and the gradient."""

    name = "base"
    detach_q = False

    def __init__(self, k: int = 1, kl: str = "mc"):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.kl = kl

    def reduce(self, lw: Tensor) -> Tensor:
        raise NotImplementedError

    def surrogate(self, lw: Tensor, z: Tensor) -> Tensor:
        """What is differentiated; by default the bound itself."""
        return self.reduce(lw)

    def __call__(self, model, batch, beta: float, post: DiagonalMixture | None = None,
                 strata: Strata | None = None) -> tuple[Tensor, dict]:
        if post is None:
            post = model.posterior(batch)
        strata = strata or Strata(stratified=model.stratified)
        many = strata.stratified or strata.independent
        if many:
            z = post.rsample_stratified(self.k)                                   # (G, K, B, D)
            weight = post.weight if strata.weight is None else strata.weight
        else:
            z = post.rsample(self.k).unsqueeze(0)                                 # (1, K, B, D)
            weight = torch.ones_like(post.weight[:1])
        rec = model.reconstruction(z, batch, strata.members)                      # (G, K, B)
        if self.kl == "analytic":
            kl = post.kl_components(model.prior) if many else post.kl_average(model.prior).unsqueeze(0)
            objective = rec.mean(1) - beta * kl
            value, divergence = objective, kl
        else:
            q = post.detached() if self.detach_q else post
            if strata.independent:
                log_q = log_density(q.components, z.transpose(0, 1)).transpose(0, 1)  # own component
            else:
                log_q = q.log_prob(z)
            log_p = log_density(model.prior, z)
            lw = rec + beta * (log_p - log_q)
            objective = self.surrogate(lw, z)
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
    detach_q = True

    def surrogate(self, lw, z):
        w = torch.softmax(lw.detach(), dim=1)                                      # w̃ over k
        if z.requires_grad:
            z.register_hook(lambda g: g * w.unsqueeze(-1))                         # encoders: w̃²
        return (w * lw).sum(1)                                                     # decoders: w̃


def make_estimator(name: str, k: int = 1, kl: str = "mc") -> Estimator:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown objective {name!r}: use one of {sorted(ESTIMATORS)}")
    if kl not in ("mc", "analytic"):
        raise ValueError(f"unknown kl {kl!r}: use analytic or mc")
    if name != "elbo":
        kl = "mc"  # IWAE-type bounds need log-weights, not a closed-form KL
    return ESTIMATORS[name](k=k, kl=kl)
