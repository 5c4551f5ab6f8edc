"""DMVAE (Lee & Pavlovic 2021, "Private-shared disentangled multimodal VAE for learning of latent
representations"): a shared latent fused by a product of experts with a prior expert, a private latent
per modality, and a sum of ELBOs: the joint one (z from the product) and one per modality (z from that
modality's expert alone), each reconstructing every observed modality from [z, w_m] with w_m from its own
posterior. Equations and deviations: docs/models/dmvae.md. The machinery is the core's:
``models/private_latents.py``, ``fusion/factorised.py`` (``private_posterior``), the library's estimators
on independent strata.
"""
from __future__ import annotations

import torch

from ..config import Config
from ..data.batch import Batch
from ..errors import UserError
from ..fusion.factorised import private_posterior
from ..fusion.fusions import product_of_experts
from ..fusion.mixture import DiagonalMixture
from ..objectives.estimators import Strata
from .private_latents import PrivateLatentVAE, build_private_model
from .registry import register_model


def dmvae_strata(model: PrivateLatentVAE, experts: dict, private: dict, batch: Batch):
    """Strata: the product of experts (weight 1) and each expert alone (weight: the row observes it); every
    stratum draws each w_m from q(w_m | x_m) and scores the observed ones (one ELBO per stratum)."""
    joint = model.fusion(experts, batch.mask)
    names = list(experts)
    loc = torch.cat([joint.loc, torch.stack([experts[m].loc for m in names])])
    scale = torch.cat([joint.scale, torch.stack([experts[m].scale for m in names])])
    weight = torch.cat([torch.ones_like(joint.weight), torch.stack([batch.mask[m] for m in names]).to(loc.dtype)])
    shared = DiagonalMixture(joint.family, loc, scale, weight)
    fill = {m: model.private_prior(m) for m in model.specs}
    return private_posterior(shared, model.layout, private, batch.mask, fill), Strata(independent=True, weight=weight)


@register_model("dmvae", "Lee & Pavlovic 2021, Private-Shared Disentangled Multimodal VAE for Learning of Latent "
                "Representations",
                "product-of-experts shared latent + a private latent per modality; joint ELBO + one ELBO per "
                "modality's shared expert, each reconstructing every modality (option private_dim)",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
                min_modalities=2, options=("private_dim",))
def build_dmvae(specs, cfg: Config, encoders=None, decoders=None) -> PrivateLatentVAE:
    if cfg.posterior != "normal":
        raise UserError(f"model 'dmvae' multiplies Gaussian experts: posterior '{cfg.posterior}' does not fit; "
                        f"use --set posterior=normal")
    return build_private_model(specs, cfg, product_of_experts, dmvae_strata, encoders, decoders)
