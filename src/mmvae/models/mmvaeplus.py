"""MMVAE+ (Palumbo, Daunhawer & Vogt, ICLR 2023): a mixture-of-experts shared latent, a private latent per
modality, and cross-modal reconstructions whose private code comes from an auxiliary prior r_n, scored
by a stratified IWAE ("looser": the mean over experts outside the log). Equations, defaults and
deviations: docs/models/mmvaeplus.md. The machinery is the core's: ``models/private_latents.py`` (the
model), ``fusion/factorised.py`` (the strata), ``objectives/estimators.py`` (the bound and its gradient).
"""
from __future__ import annotations

from ..config import Config
from ..data.batch import Batch
from ..fusion.factorised import auxiliary_strata
from ..fusion.fusions import mixture_of_experts
from ..objectives.estimators import Strata
from .private_latents import PrivateLatentVAE, build_private_model, model_option
from .registry import register_model

AUX_PRIORS = ("learned", "standard")


def mmvaeplus_strata(model: PrivateLatentVAE, experts: dict, private: dict, batch: Batch):
    """Stratum m: z ~ q(z | x_m), w_m ~ q(w_m | x_m), w_n ~ r_n (n ≠ m); lw scores z by q(z | X) and w_m."""
    shared = model.fusion(experts, batch.mask)
    aux = {n: model.aux_prior(n) for n in model.specs}
    return auxiliary_strata(shared, list(experts), model.layout, private, batch.mask, aux), Strata(stratified=True)


def aux_option(cfg: Config) -> str:
    """r_n's scales: learned (the authors' code and MultiVae's learn_modality_prior) or fixed at 1."""
    return model_option(cfg, "aux_prior", "learned", str, lambda v: v in AUX_PRIORS, "learned or standard")


@register_model("mmvaeplus", "Palumbo, Daunhawer & Vogt 2023, MMVAE+: Enhancing the Generative Quality of "
                "Multimodal VAEs without Compromises",
                "mixture-of-experts shared latent + a private latent per modality; cross reconstructions draw the "
                "target's private code from a learned auxiliary prior; stratified IWAE/DReG (options private_dim, "
                "aux_prior=learned|standard)",
                dict(objective="dreg", kl="mc", posterior="laplace", weights="uniform"),
                min_modalities=2, options=("private_dim", "aux_prior"))
def build_mmvaeplus(specs, cfg: Config, encoders=None, decoders=None) -> PrivateLatentVAE:
    return build_private_model(specs, cfg, mixture_of_experts, mmvaeplus_strata, encoders, decoders,
                               aux=aux_option(cfg), stratified=True)
