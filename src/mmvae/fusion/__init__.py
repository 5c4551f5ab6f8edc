"""Fusion of unimodal experts: product (MVAE), mixture (MMVAE), mixture of products (MoPoE)."""
from .fusions import FUSIONS, mixture_of_experts, mixture_of_products, nonempty_subsets, product_of_experts, register_fusion
from .mixture import DiagonalMixture
from .poe import poe_params

__all__ = ["FUSIONS", "DiagonalMixture", "mixture_of_experts", "mixture_of_products", "nonempty_subsets",
           "poe_params", "product_of_experts", "register_fusion"]
