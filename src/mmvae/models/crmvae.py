"""CRMVAE (Suzuki & Matsuo 2023): product of experts + coordination KLs + unimodal reconstructions.
Equations and deviations: docs/models/crmvae.md."""
from __future__ import annotations

from ..config import Config
from ..objectives.crmvae import CRMVAEObjective
from .mvtcae import closed_form_only
from .registry import fusion_model, register_model


def crmvae_objective(cfg: Config) -> CRMVAEObjective:
    closed_form_only(cfg, "crmvae")
    return CRMVAEObjective(cfg.k)


register_model("crmvae", "Suzuki & Matsuo 2023, Mitigating the Limitations of Multimodal VAEs with Coordination-based Approach",
               "product of experts (no prior expert); joint + unimodal reconstructions − β [KL(q(z|X)‖p) + "
               "Σ_m KL(q(z|X)‖q(z|x_m))], MultiVae's weighting",
               dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
               min_modalities=2)(fusion_model("poe", stratified=False, objective=crmvae_objective, prior_expert=False))
