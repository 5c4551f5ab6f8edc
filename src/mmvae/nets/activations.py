"""Activation functions of the default networks, by name (``--set activation=NAME``, ``Config.activation``).

Every network builder of ``nets/`` takes ``activation``: a name of :data:`ACTIVATIONS`, an ``nn.Module``
class, or None for the network's own default (ReLU for the library's MLP, conv and text networks,
docs/defaults.md; Swish/SiLU for ``mvae-mlp``, MVAE's own networks, and for the layers after a joint
encoder's or a ladder's features). Given explicitly, it replaces every activation of the network.
"""
from __future__ import annotations

from torch import nn

from ..errors import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh, "softplus": nn.Softplus,
}


def activation_class(activation: str | type[nn.Module] | None, default: type[nn.Module] = nn.ReLU) -> type[nn.Module]:
    """The ``nn.Module`` class of ``activation`` (``default`` for None); UserError naming the valid names."""
    if activation is None:
        return default
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise UserError(f"activation {activation!r} is unknown: use one of {', '.join(ACTIVATIONS)} "
                        f"(--set activation=NAME)")
    return ACTIVATIONS[activation]
