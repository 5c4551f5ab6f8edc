"""Convolutional encoders/decoders for 28x28 and 32x32 images, after MEME's appendix K (Joy et al. 2022).

32x32 (SVHN): Conv 4x4/2 to 32, 64, 128 channels, then Conv 4x4/1 to a 512-d feature and two linear
heads; the decoder mirrors it with transposed convolutions. The 28x28 variant uses a 3x3/2 third layer
(28 -> 14 -> 7 -> 4) so the same 4x4 feature map results. BatchNorm of the original encoder is left
out: with masked rows and small batches it makes train and eval outputs differ for no gain here.

Speed (docs/results/roofline.md): the layers are plain ``nn.Sequential`` modules (so the parameter names
and checkpoints are those of the textbook network), but :func:`run_sequential` evaluates them the way
the CPU runs fastest, with the same function: activations in channels-last layout (oneDNN's fast
convolution kernels; 1.3-1.8x on the decoder's transposed convolutions), a transposed convolution of a
1x1 map and a convolution whose kernel covers its whole input as one matrix product, and ReLU in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BASE = 32


def _encoder_body(channels: int, third_kernel: int, hidden: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, BASE, 4, 2, 1), act(),
        nn.Conv2d(BASE, BASE * 2, 4, 2, 1), act(),
        nn.Conv2d(BASE * 2, BASE * 4, third_kernel, 2, 1), act(),
        nn.Conv2d(BASE * 4, hidden, 4, 1, 0),   # linear features into the heads, as in App. K
        nn.Flatten(),
    )


def _decoder_body(latent_dim: int, channels: int, third_kernel: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, BASE * 4, 4, 1, 0), act(),
        nn.ConvTranspose2d(BASE * 4, BASE * 2, third_kernel, 2, 1), act(),
        nn.ConvTranspose2d(BASE * 2, BASE, 4, 2, 1), act(),
        nn.ConvTranspose2d(BASE, channels, 4, 2, 1),
    )


# ------------------------------------------------------------------------------- fast evaluation
def _batched(x: Tensor) -> bool:
    """Inside torch.func.vmap (the vectorised experts of nets/stacked.py) layouts cannot be chosen."""
    try:
        return torch._C._functorch.is_batchedtensor(x)
    except AttributeError:  # pragma: no cover - torch without functorch internals
        return False


def _plain(m: nn.Module) -> bool:
    return not (m._forward_hooks or m._forward_pre_hooks)


def _is_pointwise_conv_of_map(layer: nn.Module, h: Tensor) -> bool:
    """Conv2d whose kernel covers the whole (unpadded) input map: a linear map of the flattened input."""
    return (type(layer) is nn.Conv2d and _plain(layer) and layer.groups == 1 and layer.padding == (0, 0)
            and layer.padding_mode == "zeros" and layer.dilation == (1, 1)
            and tuple(h.shape[-2:]) == tuple(layer.kernel_size))


def _is_transposed_of_point(layer: nn.Module, h: Tensor) -> bool:
    """ConvTranspose2d of a 1x1 map without padding: a linear map onto a kernel-sized output map."""
    return (type(layer) is nn.ConvTranspose2d and _plain(layer) and layer.groups == 1
            and layer.padding == (0, 0) and layer.output_padding == (0, 0) and layer.dilation == (1, 1)
            and tuple(h.shape[-2:]) == (1, 1))


def _convolve(layer: nn.Module, h: Tensor) -> Tensor:
    """The layer's convolution; when its bias is trained, the bias is added separately: oneDNN's fused
    bias gradient costs more than the convolution's own weight gradient here (1.2-1.4x per layer when
    separate, measured in bench/roofline.py), while a sum over the batch is cheap."""
    bias = layer.bias
    if bias is None or not (torch.is_grad_enabled() and bias.requires_grad) or not _plain(layer) \
            or layer.padding_mode != "zeros":
        return layer(h)
    if type(layer) is nn.Conv2d:
        out = F.conv2d(h, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        out = F.conv_transpose2d(h, layer.weight, None, layer.stride, layer.padding, layer.output_padding,
                                 layer.groups, layer.dilation)
    return out.add_(bias.view(-1, 1, 1))


def run_sequential(seq: nn.Sequential, x: Tensor) -> Tensor:
    """``seq(x)`` computed faster on CPU, for Sequentials of Conv2d, ConvTranspose2d, ReLU, Flatten and
    Unflatten (any other layer is called as it is): the same function of the same parameters.

    * a ConvTranspose2d of a 1x1 map (the decoder's first layer) is ``z @ W`` written straight into
      channels-last order (N, kh, kw, C_out);
    * a Conv2d whose kernel covers its input (the encoder's last layer) is ``F.linear`` of the flattened map;
    * other convolutions run on channels-last activations; ReLU runs in place (its input is a fresh
      convolution output that nothing else holds);
    * the output is returned in the default (contiguous) layout.
    """
    h = x
    fresh = False   # h is a tensor this function created (safe to modify in place)
    for layer in seq:
        kind = type(layer)
        if kind is nn.Unflatten and h.dim() == 2 and layer.dim == 1 and tuple(layer.unflattened_size)[1:] == (1, 1):
            h = h.view(h.shape[0], h.shape[1], 1, 1)
        elif kind in (nn.Conv2d, nn.ConvTranspose2d) and h.dim() == 4 and _is_transposed_of_point(layer, h):
            w = layer.weight                                                   # (C_in, C_out, kh, kw)
            cout, kh, kw = w.shape[1:]
            weight = w.permute(0, 2, 3, 1).reshape(w.shape[0], kh * kw * cout)
            bias = None if layer.bias is None else layer.bias.repeat(kh * kw)
            out = h.flatten(1) @ weight if bias is None else torch.addmm(bias, h.flatten(1), weight)
            h = out.view(h.shape[0], kh, kw, cout).permute(0, 3, 1, 2)       # channels-last (N, C, kh, kw)
            fresh = True
        elif kind is nn.Conv2d and h.dim() == 4 and _is_pointwise_conv_of_map(layer, h):
            h = F.linear(h.flatten(1), layer.weight.flatten(1), layer.bias)[:, :, None, None]
            fresh = True
        elif kind in (nn.Conv2d, nn.ConvTranspose2d) and h.dim() == 4:
            if not _batched(h) and not h.is_contiguous(memory_format=torch.channels_last):
                h = h.contiguous(memory_format=torch.channels_last)
            h = _convolve(layer, h)
            fresh = True
        elif kind is nn.ReLU and _plain(layer):
            h = h.relu_() if fresh else layer(h)
        elif kind is nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1:
            h = h.flatten(1)
        else:
            h = layer(h)
            fresh = False
    return h.contiguous()


class ConvEncoder(nn.Module):
    """Image (N, C, S, S) with S in {28, 32} -> (loc, raw_scale), each (N, latent_dim)."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int = 512,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        channels, size = shape[0], shape[1]
        self.body = _encoder_body(channels, 3 if size == 28 else 4, hidden, activation)
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(run_sequential(self.body, x)).chunk(2, dim=-1)


class ConvDecoder(nn.Module):
    """z (N, latent_dim) -> image parameters (N, C, S, S)."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = _decoder_body(latent_dim, shape[0], 3 if shape[1] == 28 else 4, activation)

    def forward(self, z: Tensor) -> Tensor:
        return run_sequential(self.net, z)


CONV_SIZES = (28, 32)
