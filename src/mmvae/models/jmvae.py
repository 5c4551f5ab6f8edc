"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016): a joint encoder, unimodal encoders pulled toward it by the
JM KL terms, warm-up of the prior KL. Equations and deviations: docs/models/jmvae.md."""
from __future__ import annotations

from ..config import Config
from ..errors import UserError
from ..objectives.jmvae import NEEDS_COMPLETE_ROWS, JMVAEObjective
from .joint_encoder import build_joint_model
from .mvtcae import closed_form_only
from .registry import model_option, register_model


@register_model("jmvae", "Suzuki, Nakayama & Matsuo 2016, Joint Multimodal Learning with Deep Generative Models",
                "joint encoder q(z|X) + unimodal encoders; JMVAE-kl: ELBO − α Σ_m KL(q(z|X)‖q(z|x_m)) "
                "(option alpha, default 0.1; alpha=0 is JMVAE-zero); complete rows only",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform", warmup=10.0),
                min_modalities=2, options=("alpha",))
def build_jmvae(specs, cfg: Config, encoders=None, decoders=None, joint_encoder=None):
    closed_form_only(cfg, "jmvae")
    if cfg.paired_fraction < 1:
        raise UserError(NEEDS_COMPLETE_ROWS.format(model="jmvae") + f" (got paired_fraction={cfg.paired_fraction})")
    alpha = model_option(cfg, "alpha", 0.1, float, lambda v: v >= 0, "a weight >= 0")
    return build_joint_model(specs, cfg, JMVAEObjective(alpha, cfg.k), "jmvae", encoders, decoders, joint_encoder)
