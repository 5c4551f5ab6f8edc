"""MVTCAE (Hwang et al., NeurIPS 2021): a product of experts (no prior expert) trained with the
total-correlation objective of ``objectives/mvtcae.py``. Equations and deviations: docs/models/mvtcae.md."""
from __future__ import annotations

from ..config import Config
from ..errors import UserError
from ..objectives.mvtcae import MVTCAEObjective
from .registry import fusion_model, model_option, register_model


def closed_form_only(cfg: Config, model: str) -> None:
    """Models whose loss is their own bound (not an ELBO/IWAE of a fused posterior) refuse other objectives."""
    if cfg.objective not in (None, "elbo"):
        raise UserError(f"model '{model}' trains its own objective: --set objective={cfg.objective} does not "
                        f"apply (leave objective unset; --set k=K averages its reconstruction over K samples)")


def mvtcae_objective(cfg: Config) -> MVTCAEObjective:
    closed_form_only(cfg, "mvtcae")
    alpha = model_option(cfg, "alpha", 5 / 6, float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    return MVTCAEObjective(alpha, cfg.k)


register_model("mvtcae", "Hwang, Kim, Hong & Kim 2021, Multi-View Representation Learning via Total Correlation Objective",
               "product of experts (no prior expert) + total-correlation objective: (M−α)/M rec − β[α/M Σ_m "
               "KL(q(z|X)‖q(z|x_m)) + (1−α) KL(q(z|X)‖p)] (option alpha, default 5/6)",
               dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
               min_modalities=2, options=("alpha",))(
    fusion_model("poe", stratified=False, objective=mvtcae_objective, prior_expert=False))
