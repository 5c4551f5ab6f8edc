"""TELBO (Vedantam et al. 2018): a joint encoder and unimodal encoders trained by the triple ELBO, the
unimodal ELBOs with fixed decoders. Equations and deviations: docs/models/telbo.md."""
from __future__ import annotations

from ..config import Config
from ..objectives.telbo import TELBOObjective
from .joint_encoder import build_joint_model
from .mvtcae import closed_form_only
from .registry import register_model


@register_model("telbo", "Vedantam, Fischer, Huang & Murphy 2018, Generative Models of Visually Grounded Imagination",
                "joint encoder + unimodal encoders; triple ELBO: joint ELBO + one ELBO per modality whose "
                "decoders are held fixed (one stage, as the paper); partially observed rows allowed",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
                min_modalities=2)
def build_telbo(specs, cfg: Config, encoders=None, decoders=None, joint_encoder=None):
    closed_form_only(cfg, "telbo")
    return build_joint_model(specs, cfg, TELBOObjective(cfg.k), "telbo", encoders, decoders, joint_encoder)
