"""mmJSD (Sutter, Daunhawer & Vogt 2020): mixture of experts whose experts and prior are pulled toward their
dynamic prior by a multimodal Jensen-Shannon divergence. Equations and deviations: docs/models/mmjsd.md."""
from __future__ import annotations

from ..config import Config
from ..errors import UserError
from ..objectives.mmjsd import MMJSDObjective
from .mvtcae import closed_form_only
from .registry import fusion_model, register_model


def mmjsd_objective(cfg: Config) -> MMJSDObjective:
    closed_form_only(cfg, "mmjsd")
    if cfg.posterior != "normal":
        raise UserError(f"model 'mmjsd' multiplies Gaussian experts in its dynamic prior: posterior "
                        f"'{cfg.posterior}' does not fit; use --set posterior=normal")
    return MMJSDObjective(cfg.k)


register_model("mmjsd", "Sutter, Daunhawer & Vogt 2020, Multimodal Generative Learning Utilizing Jensen-Shannon Divergence",
               "mixture of experts; reconstruction from unimodal samples − β multimodal JS divergence to the "
               "dynamic prior (weighted product of the experts and the prior)",
               dict(objective="elbo", kl="analytic", posterior="normal", weights="rescale"),
               min_modalities=2)(fusion_model("moe", stratified=False, objective=mmjsd_objective))
