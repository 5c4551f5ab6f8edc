"""Blocks of a multimodal ladder VAE (MHVAE: Dorent et al. 2023, Fig. 1; MultiVae's ``MHVAE``), for L levels
of latents z_1 (next to the data) … z_L (deepest), all of ``latent_dim`` dimensions.

* ``bottom_up[m]``: L − 1 blocks per modality. The modality's encoder gives features d_1 (its (loc, raw)
  heads concatenated, ``nets/joint.features``); blocks 1 … L − 2 map d_l to d_{l+1}; the last maps d_{L−1}
  to the Gaussian expert of z_L, (loc, raw).
* ``top_down``: L − 1 blocks, z_{l+1} → h_l (features of width ``width``).
* ``prior``: L − 1 Gaussian heads, h_l → p(z_l | z_{>l}).
* ``posterior[m]``: L − 1 Gaussian heads per modality, [h_l, d_l] → the expert q(z_l | x_m, z_{>l}).

Block l − 1 of each list serves level l (l = 1 … L − 1), as in MultiVae. Gaussian heads give (loc, raw)
like every encoder of the library (σ = softplus(raw) + 1e-6). Activations: ReLU inside the MLPs and SiLU
on the features d and h, or ``activation`` (``nets/activations.py``) everywhere when given (MHVAE: silu).
"""
from __future__ import annotations

from torch import nn

from .activations import activation_class
from .mlp import MLPEncoder, mlp


def ladder_blocks(modalities: list[str], levels: int, latent_dim: int, width: int, hidden: int,
                  activation=None) -> nn.ModuleDict:
    """Default blocks (MLPs with one hidden layer of ``hidden`` units) for ``levels`` ≥ 2 latent levels."""
    if levels < 2:
        raise ValueError(f"a ladder needs at least 2 latent levels, got {levels}")
    n = levels - 1
    act, out = activation_class(activation), activation_class(activation, nn.SiLU)

    def features(width_in: int) -> nn.Sequential:
        return nn.Sequential(mlp([width_in, hidden, width], act), out())

    def gaussian(width_in: int) -> MLPEncoder:
        return MLPEncoder((width_in,), latent_dim, (hidden,), activation=act)

    return nn.ModuleDict({
        "bottom_up": nn.ModuleDict({m: nn.ModuleList([features(width) for _ in range(n - 1)] + [gaussian(width)])
                                    for m in modalities}),
        "top_down": nn.ModuleList(features(latent_dim) for _ in range(n)),
        "prior": nn.ModuleList(gaussian(width) for _ in range(n)),
        "posterior": nn.ModuleDict({m: nn.ModuleList(gaussian(2 * width) for _ in range(n)) for m in modalities}),
    })
