"""MLP encoders/decoders over the flattened input: fit any array shape a user brings."""
from __future__ import annotations

import math

from torch import Tensor, nn


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())  # Swish, as in the MVAE networks (Wu & Goodman 2018, App. A)
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x of shape (N, *shape) -> (loc, raw_scale), each (N, latent_dim)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden: tuple[int, ...] = (512, 512)):
        super().__init__()
        self.body = mlp([math.prod(shape), *hidden])
        self.act = nn.SiLU()
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.act(self.body(x.flatten(1)))
        return self.head(h).chunk(2, dim=-1)


class MLPDecoder(nn.Module):
    """z of shape (N, latent_dim) -> likelihood parameters (N, *shape)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden: tuple[int, ...] = (512, 512)):
        super().__init__()
        self.shape = tuple(shape)
        self.net = mlp([latent_dim, *hidden, math.prod(shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.shape)
