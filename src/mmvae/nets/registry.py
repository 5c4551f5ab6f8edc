"""Default networks per modality kind and shape; users override any of them with their own nn.Module.

Contract: an encoder maps (N, *shape) to a pair (loc, raw_scale) of (N, latent_dim) tensors (a single
(N, 2 * latent_dim) tensor is accepted too); a decoder maps (N, latent_dim) to (N, *shape) likelihood
parameters. The library flattens K samples into N, so user networks need no K-awareness.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

from torch import nn

from ..data.dataset import ModalitySpec
from ..errors import UserError
from .conv import CONV_SIZES, ConvDecoder, ConvEncoder
from .mlp import MLPDecoder, MLPEncoder
from .text import TextDecoder, TextEncoder

NetworkFactory = Callable[[ModalitySpec, int, int], tuple[nn.Module, nn.Module]]
NETWORKS: dict[str, NetworkFactory] = {}


def register_network(kind: str):
    """Register ``factory(spec, latent_dim, hidden) -> (encoder, decoder)`` for a modality kind."""

    def deco(fn):
        NETWORKS[kind] = fn
        return fn

    return deco


def is_conv_image(spec: ModalitySpec) -> bool:
    return spec.kind == "image" and len(spec.shape) == 3 and spec.shape[1] == spec.shape[2] and spec.shape[1] in CONV_SIZES


@register_network("image")
def image_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    # One hidden layer over the pixels, grey or colour: on a CPU it takes 4-8x more steps than the conv
    # pair in the same time and reached higher coherence at every budget measured (docs/defaults.md).
    # The conv pair is one option away (--set network.<modality>=conv) and the paper presets use it.
    return mlp_networks(spec, latent_dim, hidden)


@register_network("categorical")
def label_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    # Labels are low-dimensional: one hidden layer is enough (MVAE's label networks).
    return MLPEncoder(spec.shape, latent_dim, (hidden,)), MLPDecoder(spec.shape, latent_dim, (hidden,))


@register_network("vector")
def vector_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    return MLPEncoder(spec.shape, latent_dim, (hidden, hidden)), MLPDecoder(spec.shape, latent_dim, (hidden, hidden))


@register_network("text")
def text_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    return TextEncoder(spec.shape, latent_dim), TextDecoder(spec.shape, latent_dim)


@register_network("conv")
def conv_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    """The convolutional pair for a square 28x28 or 32x32 image, whatever its default."""
    if not is_conv_image(spec):
        raise ValueError(f"network 'conv' fits square images of side {' or '.join(map(str, CONV_SIZES))}; "
                         f"modality '{spec.name}' has shape {spec.shape}: use network mlp")
    return ConvEncoder(spec.shape, latent_dim), ConvDecoder(spec.shape, latent_dim)


@register_network("mlp")
def mlp_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    """One hidden layer of ``hidden`` over the flattened input (the default for images), any modality."""
    return MLPEncoder(spec.shape, latent_dim, (hidden,)), MLPDecoder(spec.shape, latent_dim, (hidden,))


@register_network("mnist-mlp")
def mnist_mlp_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    # MMVAE / MEME (App. K) MNIST networks: one hidden layer of 400 units; picked by ModalitySpec.network.
    return MLPEncoder(spec.shape, latent_dim, (400,)), MLPDecoder(spec.shape, latent_dim, (400,))


@register_network("mvae-mlp")
def mvae_mlp_networks(spec: ModalitySpec, latent_dim: int, hidden: int):
    # MVAE's MNIST image and label networks (Wu & Goodman 2018, official code): Swish MLPs, two hidden
    # layers in the encoder and three in the decoder, 512 wide there (``hidden`` here).
    return (MLPEncoder(spec.shape, latent_dim, (hidden,) * 2, activation=nn.SiLU),
            MLPDecoder(spec.shape, latent_dim, (hidden,) * 3, activation=nn.SiLU))


def with_networks(specs: Mapping[str, ModalitySpec], choice: Mapping[str, str] | None) -> dict[str, ModalitySpec]:
    """The specs with ``network`` replaced for the modalities named in ``choice`` (``--set network.<m>=NAME``,
    used by paper presets); unknown modalities and unregistered networks are a UserError."""
    choice = dict(choice or {})
    unknown = sorted(set(choice) - set(specs))
    if unknown:
        raise UserError(f"network given for unknown modalities {unknown}: the data has {', '.join(specs)}")
    missing = sorted({n for n in choice.values() if n not in NETWORKS})
    if missing:
        raise UserError(f"network {', '.join(map(repr, missing))} is not registered: use one of {', '.join(sorted(NETWORKS))}")
    return {m: replace(s, network=choice[m]) if m in choice else s for m, s in specs.items()}


def default_networks(spec: ModalitySpec, latent_dim: int, hidden: int = 512) -> tuple[nn.Module, nn.Module]:
    network = getattr(spec, "network", None)
    if network is not None and network not in NETWORKS:
        raise ValueError(f"modality '{spec.name}' asks for network {network!r}: registered are {sorted(NETWORKS)}")
    factory = NETWORKS.get(network or spec.kind, vector_networks)
    return factory(spec, latent_dim, hidden)
