"""Joint encoder: one network q(z | x_1, ..., x_M) over several modalities at once.

JMVAE (Suzuki et al. 2016, official code masa-su/jmvae: one dense layer per modality, concatenated, a
dense layer, then the mean and variance heads), TELBO (Vedantam et al. 2018: per-modality features,
concatenated, an MLP) and MultiVae's ``MultipleHeadJointEncoder`` (copies of the unimodal encoders, their
outputs concatenated, two hidden layers of 512) share this shape. Here each modality's features come
from the default encoder network of its kind (``nets/registry.py``) with ``feature_dim`` outputs per
head (both heads are kept: 2·feature_dim features), the concatenation goes through two layers of
``hidden`` units (ReLU, then SiLU) and a linear head gives (loc, raw_scale), like every unimodal encoder.
``activation`` (``nets/activations.py``), when given, replaces both and the heads' own activations.

Contract (as for unimodal encoders): ``forward({m: x_m}) -> (loc, raw_scale)``, each (N, latent_dim),
or one (N, 2·latent_dim) tensor; every modality of ``modalities`` must be present. User networks with
this contract replace it (``joint_encoder=`` of the models that have one).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..data.dataset import ModalitySpec
from .activations import activation_class
from .mlp import mlp
from .registry import default_networks


def features(out) -> Tensor:
    """A feature network's output as one (N, F) tensor (an encoder's (loc, raw) pair is concatenated)."""
    if isinstance(out, (tuple, list)):
        return torch.cat([o.flatten(1) for o in out], -1)
    return out.flatten(1)


class JointEncoder(nn.Module):
    """{m: x_m} for the modalities ``heads`` -> (loc, raw_scale); see the module docstring."""

    def __init__(self, heads: Mapping[str, nn.Module], feature_width: int, latent_dim: int, hidden: int = 512,
                 activation=None):
        super().__init__()
        self.modalities = list(heads)
        self.heads = nn.ModuleDict(heads)
        act, out = activation_class(activation), activation_class(activation, nn.SiLU)
        self.body = nn.Sequential(mlp([feature_width, hidden, hidden], act), out())
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, data: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        h = torch.cat([features(self.heads[m](data[m])) for m in self.modalities], -1)
        return self.out(self.body(h)).chunk(2, dim=-1)


def default_joint_encoder(specs: Mapping[str, ModalitySpec], latent_dim: int, hidden: int = 512,
                          feature_dim: int | None = None, activation=None) -> JointEncoder:
    """A JointEncoder over ``specs`` (in their order) from each modality's default encoder network."""
    feature_dim = int(feature_dim or latent_dim)
    heads = {m: default_networks(s, feature_dim, hidden, activation)[0] for m, s in specs.items()}
    return JointEncoder(heads, 2 * feature_dim * len(heads), latent_dim, hidden, activation)
