"""Convolutional encoders/decoders for 28x28 and 32x32 images, after MEME's appendix K (Joy et al. 2022).

32x32 (SVHN): Conv 4x4/2 to 32, 64, 128 channels, then Conv 4x4/1 to a 512-d feature and two linear
heads; the decoder mirrors it with transposed convolutions. The 28x28 variant uses a 3x3/2 third layer
(28 -> 14 -> 7 -> 4) so the same 4x4 feature map results. BatchNorm of the original encoder is left
out: with masked rows and small batches it makes train and eval outputs differ for no gain here.

Speed (docs/results/roofline.md): the layers are plain ``nn.Sequential`` modules (so the parameter names
and checkpoints are those of the textbook network), but :func:`run_sequential` evaluates them the way
the CPU runs fastest, with the same function: activations in channels-last layout (oneDNN's fast
convolution kernels; 1.3-1.8x on the decoder's transposed convolutions), a transposed convolution of a
1x1 map and a convolution whose kernel covers its whole input as one matrix product, ReLU in place, the
last decoder layer (4x4/2 to 1 or 3 channels, where oneDNN's transposed kernel starves for output
channels) as a sub-pixel convolution (:class:`SubpixelTransposedConv`), and each ReLU's gradient handed
back in the ReLU output's layout (:class:`_GradInLayoutOf`; training steps 1.00-1.06x,
docs/results/grad-layout.md), and a bias added after its convolution where oneDNN's fused one is slow
(:func:`_bias_apart`: without gradients, the 28x28 decoders 1.12-1.13x, K=1000 likelihoods 1.05-1.12x,
docs/results/bias-apart.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BASE = 32
GRAD_LAYOUT = True   # _GradInLayoutOf after each ReLU (a switch for bench/grad_layout.py to time it off)
TRANSPOSED_BIAS_APART = True   # see _bias_apart (a switch for bench/bias_apart.py to time it off)


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


def _cpu_autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")      # torch >= 2.4
    except TypeError:                                # older torch: a CPU-specific query
        return torch.is_autocast_cpu_enabled()


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


def _bias_apart(layer: nn.Module, h: Tensor) -> bool:
    """Whether the layer's bias is added after its convolution rather than fused into it:

    * when the bias is trained: oneDNN's fused bias gradient costs more than the convolution's own weight
      gradient here (1.2-1.4x per layer when separate, measured in bench/roofline.py), while a sum over
      the batch is cheap;
    * for a transposed convolution on a CPU whose output map is not a multiple of its stride (the 28x28
      decoder's 128 -> 64 3x3/2 layer, 4x4 -> 7x7; :data:`TRANSPOSED_BIAS_APART`), also without gradients,
      where the likelihood estimator decodes K codes per row: with a fused bias oneDNN's strided
      transposed kernel (the same ``brgconv_strided`` primitive as without, ONEDNN_VERBOSE) runs such
      layers 1.2-2.2x slower than the kernel plus a separate add (medians; the decoders' layer 1.4-1.7x),
      the output phases being of unequal size, while where every phase is as large the two are within 3%
      (bench/bias_apart.py, docs/results/bias-apart.md).
    """
    bias = layer.bias
    if bias is None or not _plain(layer) or layer.padding_mode != "zeros":
        return False
    if torch.is_grad_enabled() and bias.requires_grad:
        return True
    if not (TRANSPOSED_BIAS_APART and type(layer) is nn.ConvTranspose2d and h.device.type == "cpu"
            and not _batched(h) and h.dim() == 4):
        return False
    out = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, s, p, d, k, o in zip(
        h.shape[-2:], layer.stride, layer.padding, layer.dilation, layer.kernel_size, layer.output_padding)]
    return any(n % s for n, s in zip(out, layer.stride))


def _convolve(layer: nn.Module, h: Tensor, cast=None) -> Tensor:
    """The layer's convolution, its bias added separately where :func:`_bias_apart` says so. ``cast``: the
    parameters' compute dtype under autocast (see :func:`run_sequential`)."""
    bias = layer.bias
    if cast is None and not _bias_apart(layer, h):
        return layer(h)
    weight = layer.weight if cast is None else layer.weight.to(cast)
    if type(layer) is nn.Conv2d:
        out = F.conv2d(h, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        out = F.conv_transpose2d(h, weight, None, layer.stride, layer.padding, layer.output_padding,
                                 layer.groups, layer.dilation)
    if bias is None:
        return out
    return out.add_((bias if cast is None else bias.to(cast)).view(-1, 1, 1))


def _subpixel_weight(weight: Tensor) -> Tensor:
    """ConvTranspose2d weight (C_in, C, 4, 4) -> Conv2d weight (4C, C_in, 2, 2), output channel (a, b, c).

    Per axis, out[2q + a] = in[q] w[1] + in[q-1] w[3] (a = 0) and in[q+1] w[0] + in[q] w[2] (a = 1); over the
    input padded by one, that is a 2-tap correlation at r = q + a with taps K_a[t] = w[3 - a - 2t]."""
    cin, c = weight.shape[:2]
    taps = weight.flip(2, 3).reshape(cin, c, 2, 2, 2, 2)          # (C_in, c, t, a, s, b): w[3-u], u = 2t + a
    return taps.permute(3, 5, 1, 0, 2, 4).reshape(4 * c, cin, 2, 2)


def _subpixel_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    n, _, h, w = x.shape
    c = weight.shape[1]
    y = F.conv2d(x, _subpixel_weight(weight), None if bias is None else bias.repeat(4), padding=1)
    # y (N, 4C, h+1, w+1): out[n, c, 2q+a, 2p+b] = y[n, (a, b, c), q+a, p+b], a strided view of y in any layout
    s0, s1, s2, s3 = y.stride()
    phases = torch.as_strided(y, (n, c, h, 2, w, 2), (s0, s1, s2, 2 * c * s1 + s2, s3, c * s1 + s3))
    return phases.reshape(n, c, 2 * h, 2 * w)                         # one copy, contiguous


class SubpixelTransposedConv(torch.autograd.Function):
    """``F.conv_transpose2d(x, weight, bias, stride=2, padding=1)`` for a 4x4 kernel, computed forward as a
    sub-pixel (phase) convolution: a stride-1 2x2 convolution of the input padded by one to 4C channels,
    one group per output phase (a, b), interleaved into the 2x map (Shi et al. 2016, "Real-time single
    image and video super-resolution using an efficient sub-pixel CNN"; the phase identity of transposed
    convolutions). The backward is the transposed convolution's own (``aten.convolution_backward``), so
    gradients are those of the textbook layer; the bias gradient is a sum over the batch."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _subpixel_forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx, gw, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, (2, 2), (1, 1), (1, 1), True,
                                                        (0, 0), 1, [need_x, need_w, False])
        return gx, gw, grad.sum((0, 2, 3)) if need_b else None


def _is_subpixel_transposed(layer: nn.Module, h: Tensor) -> bool:
    """A 4x4/2 ConvTranspose2d (padding 1) to few output channels (8 C_out <= C_in): there the sub-pixel
    form runs 2.1-2.8x faster forward and 1.3-1.7x forward + backward, while for the decoder's middle
    layers (64 -> 32, 128 -> 64 channels) oneDNN's transposed kernel is faster (sub-pixel 0.5-0.6x
    forward, 0.7-0.8x forward + backward; bench/roofline.py, docs/results/roofline.md). CPU only (where
    it was measured; other devices run the layer as it is), not inside vmap (nets/stacked.py) and not
    under autocast (the backward would see the uncast input)."""
    return (type(layer) is nn.ConvTranspose2d and _plain(layer) and layer.groups == 1
            and layer.kernel_size == (4, 4) and layer.stride == (2, 2) and layer.padding == (1, 1)
            and layer.output_padding == (0, 0) and layer.dilation == (1, 1) and layer.padding_mode == "zeros"
            and 8 * layer.out_channels <= layer.in_channels and h.dim() == 4 and h.device.type == "cpu"
            and not _batched(h) and not _cpu_autocast_on())


class _GradInLayoutOf(torch.autograd.Function):
    """Identity whose backward hands the gradient on in the layout of its input, placed after each ReLU of
    the networks: the gradient that reaches a ReLU from the next layer can arrive in another layout than
    the ReLU's output (the flatten before the encoder's matrix product hands it back in the default
    layout; a one-channel image's first convolution writes the default layout and receives channels-last;
    the decoder's first ReLU, once in place on the view its matrix product is written into, got its
    gradient back in that base's default layout through autograd's view replay, so it now runs out of
    place), and the ReLU's backward
    (``threshold_backward``) on tensors of two layouts runs 5-9x slower than on one (a 128x128x4x4 map:
    1.34 against 0.14 ms in bf16, 1.42 against 0.30 in float32, layout copy included; training steps
    1.00-1.06x; bench/grad_layout.py, docs/results/grad-layout.md). A no-op when the layouts agree."""

    @staticmethod
    def forward(h: Tensor) -> Tensor:
        return h.view_as(h)

    @staticmethod
    def setup_context(ctx, inputs, output):
        h = inputs[0]
        ctx.layout = (torch.channels_last if h.is_contiguous(memory_format=torch.channels_last)
                      and not h.is_contiguous() else torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=ctx.layout)


_CAST_KINDS = (nn.Conv2d, nn.ConvTranspose2d, nn.ReLU, nn.Flatten, nn.Unflatten)


def _autocast_dtype(seq: nn.Sequential, x: Tensor):
    """The dtype CPU autocast would compute ``seq``'s convolutions in (None when autocast is off, or some
    layer is not one :func:`run_sequential` runs itself)."""
    if x.device.type != "cpu" or not _cpu_autocast_on() or _batched(x):
        return None
    for layer in seq:
        if type(layer) not in _CAST_KINDS or not _plain(layer) or getattr(layer, "padding_mode", "zeros") != "zeros":
            return None
    get = getattr(torch, "get_autocast_dtype", None)          # torch >= 2.4; before: get_autocast_cpu_dtype
    return get("cpu") if get is not None else torch.get_autocast_cpu_dtype()


def _cast(t: Tensor | None, dtype) -> Tensor | None:
    return t if t is None or dtype is None else t.to(dtype)


def run_sequential(seq: nn.Sequential, x: Tensor, subpixel: bool = True) -> Tensor:
    """``seq(x)`` computed faster on CPU, for Sequentials of Conv2d, ConvTranspose2d, ReLU, Flatten and
    Unflatten (any other layer is called as it is): the same function of the same parameters.

    * a ConvTranspose2d of a 1x1 map (the decoder's first layer) is ``z @ W`` written straight into
      channels-last order (N, kh, kw, C_out);
    * a Conv2d whose kernel covers its input (the encoder's last layer) is ``F.linear`` of the flattened map;
    * a 4x4/2 ConvTranspose2d to few channels (the decoder's last layer) runs as
      :class:`SubpixelTransposedConv` (``subpixel=False``: as the other convolutions, for comparisons);
    * other convolutions run on channels-last activations; ReLU runs in place (its input is a fresh
      convolution output that nothing else holds), and when gradients are recorded an identity after it
      (:class:`_GradInLayoutOf`) turns the gradient coming back into the ReLU output's layout;
    * under CPU autocast (``--set amp=bf16``) the input and each parameter are cast to the autocast dtype
      once and every layer runs in it, as autocast would run each convolution, but without autocast's
      round trips: a bias in float32 added to a bf16 map, layouts lost in casts;
    * the output is returned in the default (contiguous) layout.
    """
    cast = _autocast_dtype(seq, x)
    if cast is None:
        return _run_layers(seq, x, subpixel, None)
    with torch.autocast("cpu", enabled=False):
        return _run_layers(seq, x.to(cast), subpixel, cast)


def _run_layers(seq: nn.Sequential, x: Tensor, subpixel: bool, cast) -> Tensor:
    h = x
    fresh = False   # h is a tensor this function created (safe to modify in place)
    for layer in seq:
        kind = type(layer)
        if kind is nn.Unflatten and h.dim() == 2 and layer.dim == 1 and tuple(layer.unflattened_size)[1:] == (1, 1):
            h = h.view(h.shape[0], h.shape[1], 1, 1)
        elif kind in (nn.Conv2d, nn.ConvTranspose2d) and h.dim() == 4 and _is_transposed_of_point(layer, h):
            w = layer.weight                                                   # (C_in, C_out, kh, kw)
            cout, kh, kw = w.shape[1:]
            weight = _cast(w.permute(0, 2, 3, 1).reshape(w.shape[0], kh * kw * cout), cast)
            bias = None if layer.bias is None else _cast(layer.bias.repeat(kh * kw), cast)
            out = h.flatten(1) @ weight if bias is None else torch.addmm(bias, h.flatten(1), weight)
            h = out.view(h.shape[0], kh, kw, cout).permute(0, 3, 1, 2)       # channels-last (N, C, kh, kw)
            fresh = not GRAD_LAYOUT  # a view: an in-place ReLU on it hands its gradient back in the default layout
        elif kind is nn.Conv2d and h.dim() == 4 and _is_pointwise_conv_of_map(layer, h):
            h = F.linear(h.flatten(1), _cast(layer.weight.flatten(1), cast), _cast(layer.bias, cast))[:, :, None, None]
            fresh = True
        elif subpixel and kind is nn.ConvTranspose2d and _is_subpixel_transposed(layer, h):
            if not h.is_contiguous(memory_format=torch.channels_last):
                h = h.contiguous(memory_format=torch.channels_last)
            h = SubpixelTransposedConv.apply(h, _cast(layer.weight, cast), _cast(layer.bias, cast))
            fresh = True
        elif kind in (nn.Conv2d, nn.ConvTranspose2d) and h.dim() == 4:
            if not _batched(h) and not h.is_contiguous(memory_format=torch.channels_last):
                h = h.contiguous(memory_format=torch.channels_last)
            h = _convolve(layer, h, cast)
            fresh = True
        elif kind is nn.ReLU and _plain(layer):
            h = h.relu_() if fresh else layer(h)
            if GRAD_LAYOUT and h.requires_grad and h.dim() == 4 and not _batched(h):
                h = _GradInLayoutOf.apply(h)
                fresh = False
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
    """z (N, latent_dim) -> image parameters (N, C, S, S).

    ``subpixel``: run the last layer as :class:`SubpixelTransposedConv` (the default; set False on an
    instance to time the plain transposed convolution, as bench/roofline.py does)."""

    subpixel = True

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = _decoder_body(latent_dim, shape[0], 3 if shape[1] == 28 else 4, activation)

    def forward(self, z: Tensor) -> Tensor:
        return run_sequential(self.net, z, self.subpixel)


CONV_SIZES = (28, 32)
