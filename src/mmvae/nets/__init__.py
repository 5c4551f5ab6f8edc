"""Encoders and decoders per modality kind (MLP, 28x28 and 32x32 conv; text in its own module)."""
from .registry import NETWORKS, default_networks, register_network

__all__ = ["NETWORKS", "default_networks", "register_network"]
