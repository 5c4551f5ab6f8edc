"""Conditional decoder p(x_t | z, x_C) of a conditional VAE (Sohn, Lee & Yan 2015; MultiVae's ``cvae``).

The decoder of the target modality reads [z, h(x_C)], where h concatenates features of the conditioning
modalities, each from that modality's default encoder network (both heads, 2·feature_dim features per
modality, as in ``nets/joint.py``). MultiVae's default ``ConditionalDecoderMLP`` concatenates the raw
flattened conditioning data instead; learned features let image and text conditions through the same
path. The target's decoder is its kind's default decoder with a (latent_dim + features) input.

Contract: ``forward(z, conditions)`` with z of shape (..., B, D) and ``conditions = {m: (B, ...)}`` returns
(..., B, *shape) likelihood parameters; the features are computed once per row and shared by the samples.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..data.dataset import ModalitySpec
from .joint import features
from .registry import default_networks


class ConditionalDecoder(nn.Module):
    def __init__(self, decoder: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.decoder = decoder
        self.heads = nn.ModuleDict(heads)

    def condition_features(self, conditions: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([features(self.heads[m](conditions[m])) for m in self.heads], -1)

    def forward(self, z: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        h = self.condition_features(conditions)                                   # (B, F)
        lead = z.shape[:-1]
        zh = torch.cat([z, h.expand(*lead, h.shape[-1])], -1)
        out = self.decoder(zh.reshape(-1, zh.shape[-1]))
        return out.reshape(*lead, *out.shape[1:])


def default_conditional_decoder(target: ModalitySpec, conditions: Mapping[str, ModalitySpec], latent_dim: int,
                                hidden: int = 512, feature_dim: int | None = None, activation=None) -> ConditionalDecoder:
    feature_dim = int(feature_dim or latent_dim)
    heads = {m: default_networks(s, feature_dim, hidden, activation)[0] for m, s in conditions.items()}
    decoder = default_networks(target, latent_dim + 2 * feature_dim * len(heads), hidden, activation)[1]
    return ConditionalDecoder(decoder, heads)
