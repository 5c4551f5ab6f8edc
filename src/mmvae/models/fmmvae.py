"""Factorised MMVAE: a shared latent fused by a mixture of experts, one private latent per modality, and
an InfoNCE term between the shared codes of paired modalities (after the factorizing-mmvae study; MMVAE:
Shi et al. 2019; InfoNCE: van den Oord et al. 2018). Equations: docs/models/fmmvae.md.

Generative model: p(s) Π_m p(w_m) p(x_m | s, w_m), decoder m reading [s, w_m].
Inference: q(s, W | X) = [1/|S| Σ_{m∈S} q(s | x_m)] · Π_m q(w_m | x_m) over the observed modalities S
(a missing modality's private code keeps its prior).

The latent is laid out as one vector z = [s, w_1, …, w_M]. Because every private factor is common to all
mixture components, q(s, W | X) is exactly a :class:`DiagonalMixture` over that vector whose G = |M|
components differ only in the shared block, and its log-density is log q(s | X) + Σ_m log q(w_m | x_m).
So the library's estimators (elbo, iwae, dreg, stratified over the experts) compute the naive MMVAE
bound of the factorised model without a line of them changing; the unimodal bounds are the same
estimators on "independent" strata (one stratum per modality, as MVAE's subset ELBOs).

Objective (maximised): L_MMVAE(X) + Σ_{m∈S} L_m(x_m) − α · InfoNCE(shared codes of paired modalities).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..config import Config
from ..data.batch import Batch
from ..distributions.posteriors import make_posterior
from ..errors import UserError
from ..fusion.fusions import mixture_of_experts
from ..fusion.mixture import DiagonalMixture
from ..nets.registry import default_networks
from ..objectives.estimators import Estimator, Strata, make_estimator
from ..objectives.infonce import paired_info_nce
from .multimodal import MultimodalVAE, _split
from .registry import register_model


def encode_observed(net: nn.Module, x: Tensor, mask: Tensor, dim: int, family: str) -> Distribution:
    """q(· | x) from ``net`` on the observed rows only; missing rows get placeholder parameters (loc 0,
    raw scale 0) that the callers replace by the prior or weight by zero."""
    if bool(mask.all()):
        loc, raw = _split(net(x), dim)
    else:
        idx = torch.nonzero(mask).squeeze(1)
        loc, raw = x.new_zeros(x.shape[0], dim), x.new_zeros(x.shape[0], dim)
        if idx.numel():
            lo, ro = _split(net(x[idx]), dim)
            loc, raw = loc.index_copy(0, idx, lo), raw.index_copy(0, idx, ro)
    return make_posterior(family, loc, raw)


class FactorisedMMVAE(MultimodalVAE):
    """MMVAE over a shared latent of ``shared_dim`` plus a private latent of ``private_dim`` per modality.

    ``latent_dim`` is the full layout ``shared_dim + M * private_dim`` ([s, w_1, …, w_M], modalities in
    ``self.modalities`` order): what ``decode``, ``generate`` and ``embed`` use.
    """

    def __init__(self, specs: Mapping, shared_dim: int, private_dim: int, objective, *,
                 posterior: str = "laplace", hidden: int = 512, encoders: Mapping[str, nn.Module] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None,
                 private_encoders: Mapping[str, nn.Module] | None = None, **kwargs):
        """``encoders`` (shared, x -> (N, shared_dim) heads), ``private_encoders`` (x -> (N, private_dim)
        heads) and ``decoders`` ((N, shared_dim + private_dim) -> parameters) replace the defaults."""
        specs = dict(specs)
        shared_dim, private_dim = int(shared_dim), int(private_dim)

        def nets(which: int, dim: int, given) -> dict[str, nn.Module]:
            given = dict(given or {})
            return {m: given[m] if m in given else default_networks(s, dim, hidden)[which] for m, s in specs.items()}

        super().__init__(specs, shared_dim + len(specs) * private_dim, mixture_of_experts, objective,
                         posterior=posterior, hidden=hidden, stratified=True,
                         encoders=nets(0, shared_dim, encoders), decoders=nets(1, shared_dim + private_dim, decoders),
                         **kwargs)
        self.shared_dim, self.private_dim = shared_dim, private_dim
        self.private_encoders = nn.ModuleDict(nets(0, private_dim, private_encoders))
        self._private_slices = {m: slice(self.shared_dim + i * self.private_dim,
                                         self.shared_dim + (i + 1) * self.private_dim)
                                for i, m in enumerate(self.specs)}

    # ------------------------------------------------------------------------------ inference
    def encode_factors(self, batch: Batch) -> tuple[dict[str, Distribution], dict[str, Distribution]]:
        """Shared experts q(s | x_m) and private posteriors q(w_m | x_m) of the modalities in the batch."""
        shared, private = {}, {}
        for m, x in batch.data.items():
            shared[m] = encode_observed(self.encoders[m], x, batch.mask[m], self.shared_dim, self.posterior_family)
            private[m] = encode_observed(self.private_encoders[m], x, batch.mask[m], self.private_dim,
                                         self.posterior_family)
        return shared, private

    def encode_experts(self, batch: Batch) -> dict[str, Distribution]:
        return self.encode_factors(batch)[0]

    def _private_block(self, private: Mapping[str, Distribution], masks: Mapping[str, Tensor],
                       rows: int, like: Tensor, only: str | None = None) -> tuple[Tensor, Tensor]:
        """(B, M·Dp) loc and scale of [w_1, …, w_M]: the posterior where observed (and, with ``only``, of
        that modality alone), the prior N(0, 1) / Laplace(0, 1) everywhere else."""
        locs, scales = [], []
        for m in self.specs:
            loc = like.new_zeros(rows, self.private_dim)
            scale = like.new_ones(rows, self.private_dim)
            if m in private and (only is None or only == m):
                seen = masks[m].unsqueeze(-1)
                loc = torch.where(seen, private[m].loc, loc)
                scale = torch.where(seen, private[m].scale, scale)
            locs.append(loc)
            scales.append(scale)
        return torch.cat(locs, -1), torch.cat(scales, -1)

    def fuse(self, shared: Mapping[str, Distribution], private: Mapping[str, Distribution],
             masks: Mapping[str, Tensor]) -> DiagonalMixture:
        """q(s, W | X): the MoE over the observed shared experts times the private posteriors."""
        moe = mixture_of_experts(shared, masks)                                   # (G, B, Ds)
        g, b, _ = moe.loc.shape
        loc, scale = self._private_block(private, masks, b, moe.loc)
        return DiagonalMixture(moe.family, torch.cat([moe.loc, loc.expand(g, -1, -1)], -1),
                               torch.cat([moe.scale, scale.expand(g, -1, -1)], -1), moe.weight)

    def unimodal_posteriors(self, shared: Mapping[str, Distribution], private: Mapping[str, Distribution],
                            masks: Mapping[str, Tensor]) -> DiagonalMixture:
        """One component per modality m: q(s | x_m) q(w_m | x_m), the other private codes at their prior
        (so they add exactly 0 to the bound). Weights: 1 where m is observed (a sum, not a mixture)."""
        names = list(shared)
        b = masks[names[0]].shape[0]
        locs, scales = [], []
        for m in names:
            loc, scale = self._private_block(private, masks, b, shared[m].loc, only=m)
            locs.append(torch.cat([shared[m].loc, loc], -1))
            scales.append(torch.cat([shared[m].scale, scale], -1))
        weight = torch.stack([masks[m] for m in names]).to(locs[0].dtype)
        return DiagonalMixture(type(shared[names[0]]), torch.stack(locs), torch.stack(scales), weight)

    def posterior(self, batch: Batch) -> DiagonalMixture:
        shared, private = self.encode_factors(batch)
        return self.fuse(shared, private, batch.mask)

    def decode_params(self, m: str, z: Tensor) -> Tensor:
        """Decoder m reads [s, w_m] of the full latent z (..., D)."""
        zm = torch.cat([z[..., : self.shared_dim], z[..., self._private_slices[m]]], -1)
        lead = zm.shape[:-1]
        out = self.decoders[m](zm.reshape(-1, zm.shape[-1]))
        return out.reshape(*lead, *out.shape[1:])

    # ------------------------------------------------------------------------------ user API
    @torch.no_grad()
    def latent_representations(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Posterior means per modality: ``{"<m>/shared": E q(s | x_m), "<m>/private": E q(w_m | x_m)}``."""
        shared, private = self.encode_factors(Batch(dict(data)))
        out = {}
        for m in data:
            out[f"{m}/shared"] = shared[m].mean
            out[f"{m}/private"] = private[m].mean
        return out

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        """Generate ``targets`` from the given modalities: the shared code of the sources (mean of their
        mixture, or one sample) with, for each target, its own private code if it is among the sources
        (reconstruction) and otherwise a private code drawn from the prior p(w_t)."""
        batch = Batch(dict(data))
        shared, private = self.encode_factors(batch)
        post = self.fuse(shared, private, batch.mask)
        z = post.rsample(1)[0] if sample else post.mean                           # (B, D)
        prior_z = self.prior.sample((z.shape[0],))
        for t in self.specs:
            if t not in data:
                sl = self._private_slices[t]
                z = torch.cat([z[:, : sl.start], prior_z[:, sl], z[:, sl.stop:]], -1)
        return self.decode(z, targets)


class FactorisedObjective:
    """L = L_MMVAE(X) + Σ_m L_m(x_m) − α · InfoNCE: the naive MMVAE bound of the factorised model
    (stratified over the shared experts), the unimodal bounds of every observed modality, and the
    contrastive term on the shared experts' means of co-observed modality pairs."""

    def __init__(self, estimator: Estimator, infonce_weight: float = 1.0, temperature: float = 0.1):
        self.estimator = estimator
        self.infonce_weight = float(infonce_weight)
        self.temperature = float(temperature)
        self.name = f"factorised-{estimator.name}"

    def __call__(self, model: FactorisedMMVAE, batch: Batch, beta: float) -> tuple[Tensor, dict]:
        shared, private = model.encode_factors(batch)
        joint_loss, joint = self.estimator(model, batch, beta, model.fuse(shared, private, batch.mask),
                                           Strata(stratified=True))
        names = list(shared)
        uni = model.unimodal_posteriors(shared, private, batch.mask)
        uni_loss, unimodal = self.estimator(model, batch, beta, uni, Strata(independent=True, weight=uni.weight,
                                                                            members=[(m,) for m in names]))
        nce = paired_info_nce({m: shared[m].mean for m in names}, batch.mask, self.temperature)
        loss = joint_loss + uni_loss + (self.infonce_weight * nce if self.infonce_weight else 0.0)
        logs = {"bound": joint["bound"] + unimodal["bound"], "joint_bound": joint["bound"],
                "unimodal_bound": unimodal["bound"], "rec": joint["rec"], "kl": joint["kl"],
                "infonce": nce.detach()}
        return loss, logs


def _option(cfg: Config, key: str, default, kind, check, rule: str):
    value = cfg.extra.get(key, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"--set {key}: expected {rule}, got {value!r}") from None
    if not check(value):
        raise UserError(f"--set {key}: expected {rule}, got {value!r}")
    return value


@register_model("fmmvae", "factorizing-mmvae study (MMVAE: Shi et al. 2019; InfoNCE: van den Oord et al. 2018)",
                "MMVAE shared latent + a private latent per modality + InfoNCE between paired shared codes "
                "(options infonce_weight, temperature, private_dim)",
                dict(objective="elbo", kl="mc", posterior="laplace", weights="rescale", warmup=3.0),
                min_modalities=2, options=("infonce_weight", "temperature", "private_dim"))
def build_fmmvae(specs, cfg: Config, encoders=None, decoders=None) -> FactorisedMMVAE:
    """``encoders`` are the shared experts' networks, ``decoders`` read [shared, private] (see the class)."""
    weight = _option(cfg, "infonce_weight", 1.0, float, lambda v: v >= 0, "a weight >= 0")
    temperature = _option(cfg, "temperature", 0.1, float, lambda v: v > 0, "a temperature > 0")
    private_dim = _option(cfg, "private_dim", cfg.latent_dim, int, lambda v: v >= 1, "an integer >= 1")
    try:
        estimator = make_estimator(cfg.objective, cfg.k, cfg.kl)
        return FactorisedMMVAE(specs, cfg.latent_dim, private_dim, FactorisedObjective(estimator, weight, temperature),
                               posterior=cfg.posterior, likelihoods=cfg.likelihood, scales=cfg.scale,
                               default_scale=cfg.default_scale, weights=cfg.weights, hidden=cfg.hidden,
                               beta=cfg.beta, encoders=encoders, decoders=decoders)
    except ValueError as e:
        raise UserError(str(e)) from None
