"""Assembled models and the registry by name."""
from .multimodal import MultimodalVAE, modality_weights
from .registry import MODELS, build_model, register_model

__all__ = ["MultimodalVAE", "modality_weights", "MODELS", "build_model", "register_model"]
