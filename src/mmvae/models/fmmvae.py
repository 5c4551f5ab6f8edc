"""Factorised MMVAE: an MMVAE over a shared latent trained together with one unimodal VAE per modality
over a private latent, and a per-modality contrast that pushes the MMVAE's encoder of m and the unimodal
encoder of m apart (the factorizing-mmvae study: its ``FUMMVAE`` model and ``m_infoNCE_naive``
objective; MMVAE: Shi et al. 2019). Equations and the deviations: docs/models/fmmvae.md.

As in the source, the parts are separate networks: the MMVAE's experts q(s | x_m) and decoders
p(x_m | s) read the shared latent only, each unimodal VAE's encoder q(w_m | x_m) and decoder p(x_m | w_m)
its private latent only; the contrast is their only link. This object *is* the MMVAE (``encode``,
``translate``, ``generate``, ``embed`` and the likelihoods are the MMVAE's, over s) and holds the unimodal
VAEs in ``self.private`` (one ``MultimodalVAE`` whose M posteriors are scored independently, each
modality by its own decoder). Cross generation is therefore the MMVAE's: the source's shared code
decoded by the target's MMVAE decoder; no private code enters it.

Objective (maximised; the loss is its negative, a batch mean):
    L_MMVAE(X) + Σ_{m∈S} L_m(x_m) − (α / B) Σ_{m∈S} CE_m         (``contrast=fission``, the source's)
    L_MMVAE(X) + Σ_{m∈S} L_m(x_m) − α · InfoNCE(paired shared means)   (``contrast=infonce``, ours)
with the source's naive MMVAE ELBO (per-expert analytic KL) and unimodal ELBOs by default; the source
adds batch *sums* of the ELBOs to batch *means* of the cross-entropies, hence α / B per row.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..config import Config
from ..data.batch import Batch
from ..distributions.noise import GLOBAL_NOISE, Noise
from ..distributions.prior import prior_kind
from ..errors import UserError
from ..fusion.fusions import mixture_of_experts
from ..fusion.mixture import DiagonalMixture
from ..objectives.estimators import Estimator, Strata, make_estimator
from ..objectives.infonce import fission_contrast, paired_info_nce
from .multimodal import MultimodalVAE
from .registry import model_option, register_model

CONTRASTS = ("fission", "infonce", "none")


class _Drawn(DiagonalMixture):
    """A DiagonalMixture that keeps the stratified samples an estimator drew from it, so the contrast
    compares the very samples of the bounds (as the source does)."""

    drawn: Tensor | None = None
    name: str = "z"     # the name of its draws in a FixedNoise (distributions/noise.py)

    @staticmethod
    def of(post: DiagonalMixture, name: str) -> "_Drawn":
        drawn = _Drawn(post.family, post.loc, post.scale, post.weight)
        drawn.name = name
        return drawn

    def rsample_stratified(self, k: int, noise: Noise = GLOBAL_NOISE, name: str | None = None) -> Tensor:
        if noise is GLOBAL_NOISE:   # (as the estimators: tests may stub rsample_stratified(k))
            self.drawn = super().rsample_stratified(k)
        else:
            self.drawn = super().rsample_stratified(k, noise, self.name if name is None else name)
        return self.drawn


def independent_experts(experts: Mapping[str, Distribution], masks: Mapping[str, Tensor]) -> DiagonalMixture:
    """The M unimodal posteriors stacked as components, weight 1 where the modality is observed: a sum of
    separate bounds (``Strata(independent=True)``), not a mixture."""
    names = list(experts)
    return DiagonalMixture(type(experts[names[0]]), torch.stack([experts[m].loc for m in names]),
                           torch.stack([experts[m].scale for m in names]),
                           torch.stack([masks[m] for m in names]).to(experts[names[0]].loc.dtype))


class FactorisedMMVAE(MultimodalVAE):
    """The MMVAE (shared latent of ``shared_dim``) with the unimodal VAEs (private latents of
    ``private_dim``) in ``self.private``. ``latent_dim`` is ``shared_dim``: what ``decode``, ``generate``
    and ``embed`` use."""

    def __init__(self, specs: Mapping, shared_dim: int, private_dim: int, objective, *,
                 posterior: str = "normal", hidden: int = 512, encoders: Mapping[str, nn.Module] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None,
                 private_encoders: Mapping[str, nn.Module] | None = None,
                 private_decoders: Mapping[str, nn.Module] | None = None, likelihoods=None, scales=None,
                 default_scale: float = 0.75, weights=None, beta: float = 1.0, prior: str | None = None):
        """``encoders``/``decoders`` replace the MMVAE's networks (x -> (N, shared_dim) heads; (N,
        shared_dim) -> parameters), ``private_encoders``/``private_decoders`` the unimodal VAEs'.
        ``prior``: standard, learned or learned-loc-scale, for the MMVAE and for each unimodal VAE (each
        its own parameters, as each of the source's VAEs has its own ``_pz_params``)."""
        common = dict(posterior=posterior, likelihoods=likelihoods, scales=scales, default_scale=default_scale,
                      hidden=hidden, beta=beta, prior=prior)
        super().__init__(specs, int(shared_dim), mixture_of_experts, objective, stratified=True, weights=weights,
                         encoders=encoders, decoders=decoders, **common)
        # The source's unimodal VAEs are standalone VAEs: likelihood weight 1 (no rescaling).
        self.private = MultimodalVAE(specs, int(private_dim), independent_experts, None, weights="uniform",
                                     encoders=private_encoders, decoders=private_decoders, **common)
        self.shared_dim, self.private_dim = int(shared_dim), int(private_dim)

    @torch.no_grad()
    def latent_representations(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Posterior means per modality: ``{"<m>/shared": E q(s | x_m), "<m>/private": E q(w_m | x_m)}``."""
        batch = Batch(dict(data))
        shared, private = self.encode_experts(batch), self.private.encode_experts(batch)
        out = {}
        for m in data:
            out[f"{m}/shared"] = shared[m].mean
            out[f"{m}/private"] = private[m].mean
        return out


class FactorisedObjective:
    """L = L_MMVAE(X) + Σ_m L_m(x_m) − contrast: the MMVAE's bound (stratified over its experts), the
    unimodal VAEs' bounds of every observed modality, and the contrast (see the module docstring)."""

    def __init__(self, estimator: Estimator, contrast: str = "fission", weight: float = 1.0,
                 temperature: float = 0.1):
        if contrast not in CONTRASTS:
            raise ValueError(f"unknown contrast {contrast!r}: use one of {', '.join(CONTRASTS)}")
        self.estimator, self.contrast = estimator, contrast
        self.weight, self.temperature = float(weight), float(temperature)
        self.name = f"factorised-{estimator.name}"

    def __call__(self, model: FactorisedMMVAE, batch: Batch, beta: float,
                 noise: Noise = GLOBAL_NOISE) -> tuple[Tensor, dict]:
        """``noise``: the draws of the shared latent are named ``s``, the private latents' ``w`` (and
        ``s-contrast`` / ``w-contrast`` where the contrast needs fresh samples)."""
        names = list(batch.data)
        shared, private = model.encode_experts(batch), model.private.encode_experts(batch)
        joint_post = _Drawn.of(mixture_of_experts(shared, batch.mask), "s")
        joint_loss, joint = self.estimator(model, batch, beta, joint_post, Strata(stratified=True), noise=noise)
        uni_post = _Drawn.of(independent_experts(private, batch.mask), "w")
        uni_loss, unimodal = self.estimator(model.private, batch, beta, uni_post,
                                            Strata(independent=True, weight=uni_post.weight,
                                                   members=[(m,) for m in names]), noise=noise)
        if self.contrast == "fission":
            term = fission_contrast(shared, private, self._samples(joint_post, names, noise),
                                    self._samples(uni_post, names, noise), batch.mask)
            scaled = term / batch.size                                   # the source: batch sum − batch mean
        elif self.contrast == "infonce":
            term = paired_info_nce({m: shared[m].mean for m in names}, batch.mask, self.temperature)
            scaled = term
        else:
            term = scaled = joint_loss.new_zeros(())
        loss = joint_loss + uni_loss + (self.weight * scaled if self.weight else 0.0)
        logs = {"bound": joint["bound"] + unimodal["bound"], "joint_bound": joint["bound"],
                "unimodal_bound": unimodal["bound"], "rec": joint["rec"], "kl": joint["kl"],
                "contrast": term.detach()}
        return loss, logs

    def _samples(self, post: _Drawn, names: list[str], noise: Noise = GLOBAL_NOISE) -> dict[str, Tensor]:
        """The samples the bound used, per modality (K, B, D); fresh ones when the estimator did not draw
        stratified samples or rescales their gradients with a hook (DReG), which the contrast must not get."""
        z = post.drawn
        if z is None or getattr(self.estimator, "detach_q", False):
            z = post.rsample_stratified(max(1, getattr(self.estimator, "k", 1)), noise, f"{post.name}-contrast")
        return {m: z[g] for g, m in enumerate(names)}


@register_model("fmmvae", "factorizing-mmvae study (FUMMVAE, m_infoNCE_naive; MMVAE: Shi et al. 2019)",
                "MMVAE (shared latent) + one unimodal VAE per modality (private latent) + a per-modality "
                "contrast pushing the two encoders of each modality apart (options contrast=fission|infonce|none, "
                "contrast_weight, temperature, private_dim)",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform", warmup=0.0),
                min_modalities=2, options=("contrast", "contrast_weight", "temperature", "private_dim"))
def build_fmmvae(specs, cfg: Config, encoders=None, decoders=None) -> FactorisedMMVAE:
    """``encoders``/``decoders`` replace the MMVAE's networks (the unimodal VAEs keep the defaults)."""
    contrast = model_option(cfg, "contrast", "fission", lambda v: "none" if v is None else str(v),  # "none" parses as None
                       lambda v: v in CONTRASTS, "fission, infonce or none")
    weight = model_option(cfg, "contrast_weight", 1.0, float, lambda v: v >= 0, "a weight >= 0")
    temperature = model_option(cfg, "temperature", 0.1, float, lambda v: v > 0, "a temperature > 0")
    private_dim = model_option(cfg, "private_dim", cfg.latent_dim, int, lambda v: v >= 1, "an integer >= 1")
    if contrast == "fission" and private_dim != cfg.latent_dim:
        raise UserError(f"--set private_dim={private_dim}: the fission contrast evaluates each encoder's density at "
                        f"the other's sample, so the private latent needs the shared latent's dimension "
                        f"({cfg.latent_dim}); drop private_dim or use --set contrast=infonce")
    try:
        estimator = make_estimator(cfg.objective, cfg.k, cfg.kl)
        cfg.prior = prior_kind(cfg.prior)               # the resolved name is what config.json keeps
        return FactorisedMMVAE(specs, cfg.latent_dim, private_dim,
                               FactorisedObjective(estimator, contrast, weight, temperature),
                               posterior=cfg.posterior, likelihoods=cfg.likelihood, scales=cfg.scale,
                               default_scale=cfg.default_scale, weights=cfg.weights, hidden=cfg.hidden,
                               beta=cfg.beta, encoders=encoders, decoders=decoders, prior=cfg.prior)
    except ValueError as e:
        raise UserError(str(e)) from None
