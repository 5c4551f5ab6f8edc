"""Default networks per modality kind and shape; users override any of them with their own nn.Module.

Contract: an encoder maps (N, *shape) to a pair (loc, raw_scale) of (N, latent_dim) tensors (a single
(N, 2 * latent_dim) tensor is accepted too); a decoder maps (N, latent_dim) to (N, *shape) likelihood
parameters. The library flattens K samples into N, so user networks need no K-awareness.

A factory is ``factory(spec, latent_dim, hidden, activation=None) -> (encoder, decoder)``; ``activation``
is an ``nn.Module`` class (``nets/activations.py``; ``--set activation=NAME``) or None for the network's
own default. Factories that take no ``activation`` still register; asking them for one is a UserError.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import replace
from typing import Callable, Mapping

from torch import nn

from ..data.dataset import ModalitySpec
from ..errors import UserError
from .activations import activation_class
from .conv import CONV_SIZES, ConvDecoder, ConvEncoder
from .mlp import MLPDecoder, MLPEncoder
from .text import TextDecoder, TextEncoder

NetworkFactory = Callable[..., tuple[nn.Module, nn.Module]]
NETWORKS: dict[str, NetworkFactory] = {}


def register_network(kind: str):
    """Register ``factory(spec, latent_dim, hidden, activation=None) -> (encoder, decoder)`` for a modality
    kind (``activation``: an ``nn.Module`` class, None for the network's own default)."""

    def deco(fn):
        NETWORKS[kind] = fn
        return fn

    return deco


def mlp_pair(spec: ModalitySpec, latent_dim: int, hidden: tuple[int, ...], activation=None):
    """MLP encoder and decoder with the hidden layers ``hidden`` (ReLU unless ``activation`` is given)."""
    act = activation_class(activation)
    return (MLPEncoder(spec.shape, latent_dim, hidden, activation=act),
            MLPDecoder(spec.shape, latent_dim, hidden, activation=act))


def is_conv_image(spec: ModalitySpec) -> bool:
    return spec.kind == "image" and len(spec.shape) == 3 and spec.shape[1] == spec.shape[2] and spec.shape[1] in CONV_SIZES


@register_network("image")
def image_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    # One hidden layer over the pixels, grey or colour: on a CPU it takes 4-8x more steps than the conv
    # pair in the same time and reached higher coherence at every budget measured (docs/defaults.md).
    # The conv pair is one option away (--set network.<modality>=conv) and the paper presets use it.
    return mlp_networks(spec, latent_dim, hidden, activation)


@register_network("categorical")
def label_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    # Labels are low-dimensional: one hidden layer is enough (MVAE's label networks).
    return mlp_pair(spec, latent_dim, (hidden,), activation)


@register_network("vector")
@register_network("mlp2")
def vector_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    """MLP encoder and decoder with two hidden layers of ``hidden`` over the flattened input."""
    return mlp_pair(spec, latent_dim, (hidden, hidden), activation)


@register_network("text")
@register_network("text-cnn")
def text_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    """The 1-D convolutional text pair over one-hot characters (nets/text.py)."""
    act = activation_class(activation)
    return TextEncoder(spec.shape, latent_dim, activation=act), TextDecoder(spec.shape, latent_dim, activation=act)


@register_network("conv")
def conv_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    """The convolutional pair for a square 28x28 or 32x32 image, whatever its default."""
    if not is_conv_image(spec):
        raise ValueError(f"network 'conv' fits square images of side {' or '.join(map(str, CONV_SIZES))}; "
                         f"modality '{spec.name}' has shape {spec.shape}: use network mlp")
    act = activation_class(activation)
    return ConvEncoder(spec.shape, latent_dim, activation=act), ConvDecoder(spec.shape, latent_dim, activation=act)


@register_network("mlp")
def mlp_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    """One hidden layer of ``hidden`` over the flattened input (the default for images), any modality."""
    return mlp_pair(spec, latent_dim, (hidden,), activation)


@register_network("mnist-mlp")
def mnist_mlp_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    # MMVAE / MEME (App. K) MNIST networks: one hidden layer of 400 units; picked by ModalitySpec.network.
    return mlp_pair(spec, latent_dim, (400,), activation)


@register_network("mvae-mlp")
def mvae_mlp_networks(spec: ModalitySpec, latent_dim: int, hidden: int, activation=None):
    # MVAE's MNIST image and label networks (Wu & Goodman 2018, official code): Swish MLPs, two hidden
    # layers in the encoder and three in the decoder, 512 wide there (``hidden`` here).
    act = activation_class(activation, nn.SiLU)
    return (MLPEncoder(spec.shape, latent_dim, (hidden,) * 2, activation=act),
            MLPDecoder(spec.shape, latent_dim, (hidden,) * 3, activation=act))


# The network each modality kind gets when neither the data nor the user names one, chosen by measurement
# (docs/defaults.md). A run records the resolved name of every modality's network in its config.json
# (``network``), so this table may change without changing how saved runs rebuild. The kind names
# registered above ("image", "categorical", "vector", "text") stay fixed aliases: they are what runs saved
# before networks were recorded rebuild with (runs.read_run).
KIND_NETWORK = {"image": "mlp", "categorical": "mlp", "vector": "mlp2", "text": "mlp"}
# Text: an MLP over the flattened one-hot tokens while they are few (mnist-text: 8 x 37 = 296 inputs),
# where it learned as well or better than the 1-D CNN at equal wall time for every model (MVAE's
# text->image 0.35 vs 0.14 at equal load, docs/defaults.md); the CNN of the MMVAE/MEME CUB networks
# above this size (CUB: 32 x 1590 one-hot inputs would make a 20M-weight first layer), unmeasured there.
TEXT_MLP_MAX_INPUTS = 4096


def kind_network(spec: ModalitySpec) -> str:
    """The default network of a modality's kind and size (``KIND_NETWORK``; text by ``TEXT_MLP_MAX_INPUTS``)."""
    if spec.kind == "text" and math.prod(spec.shape) > TEXT_MLP_MAX_INPUTS:
        return "text-cnn"
    return KIND_NETWORK.get(spec.kind, "mlp2")


def resolve_networks(specs: Mapping[str, ModalitySpec]) -> dict[str, str]:
    """The registered network name of every modality: the spec's own (the data's, or the user's
    ``--set network.<m>=NAME`` applied by ``with_networks``), else ``kind_network``."""
    return {m: s.network or kind_network(s) for m, s in specs.items()}


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


def default_networks(spec: ModalitySpec, latent_dim: int, hidden: int = 512,
                     activation: str | type[nn.Module] | None = None) -> tuple[nn.Module, nn.Module]:
    """The registered (encoder, decoder) of the spec's network or kind; ``activation``: a name of
    ``nets/activations.ACTIVATIONS`` or an ``nn.Module`` class replacing every activation of both networks
    (None: the network's own, ReLU except ``mvae-mlp``)."""
    network = getattr(spec, "network", None)
    if network is not None and network not in NETWORKS:
        raise ValueError(f"modality '{spec.name}' asks for network {network!r}: registered are {sorted(NETWORKS)}")
    factory = NETWORKS.get(network or spec.kind, vector_networks)
    if activation is None:
        return factory(spec, latent_dim, hidden)
    act = activation_class(activation)
    if "activation" not in inspect.signature(factory).parameters:
        raise UserError(f"network {network or spec.kind!r} of modality '{spec.name}' takes no activation: "
                        f"leave activation unset or register it with an activation argument")
    return factory(spec, latent_dim, hidden, activation=act)
