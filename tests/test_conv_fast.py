"""The sub-pixel form of the conv decoder's last layer (nets/conv.SubpixelTransposedConv) is the textbook
ConvTranspose2d(4x4, stride 2, padding 1): values, first and second derivatives (float64), with and
without autograd, inside vmap (nets/stacked.py) and under autocast, where the layer runs as it is."""
import pytest
import torch
import torch.nn.functional as F

from mmvae.nets.conv import ConvDecoder, SubpixelTransposedConv, _is_subpixel_transposed, _subpixel_weight
from mmvae.nets.stacked import stacked_call

SHAPES = [(1, 28, 28), (3, 28, 28), (3, 32, 32)]


def _rel(a, b):
    return float(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).detach())


def _grads(out, inputs, weight, create_graph=False):
    gs = torch.autograd.grad((out * weight).sum(), inputs, create_graph=create_graph, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, inputs)]


def test_subpixel_weight_is_the_phase_split_of_the_transposed_kernel():
    """Per axis out[2q] = in[q] w[1] + in[q-1] w[3], out[2q+1] = in[q+1] w[0] + in[q] w[2]: phase (a, b)
    of channel c holds taps w[3-a-2t, 3-b-2s] at output channel (2a + b) C + c."""
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    k = _subpixel_weight(w).view(2, 2, 3, 5, 2, 2)
    for a in (0, 1):
        for b in (0, 1):
            for t in (0, 1):
                for s in (0, 1):
                    assert torch.equal(k[a, b, :, :, t, s], w[:, :, 3 - a - 2 * t, 3 - b - 2 * s].T)


@pytest.mark.parametrize("cin,c,h,w", [(32, 1, 14, 14), (32, 3, 14, 14), (32, 3, 16, 16), (8, 2, 5, 7), (4, 1, 1, 3)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_subpixel_equals_conv_transpose2d(cin, c, h, w, bias, layout):
    torch.manual_seed(0)
    x = torch.randn(3, cin, h, w, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(cin, c, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, dtype=torch.float64, requires_grad=True) if bias else None
    fast, plain = SubpixelTransposedConv.apply(x, weight, b), F.conv_transpose2d(x, weight, b, 2, 1)
    assert fast.shape == plain.shape == (3, c, 2 * h, 2 * w) and fast.is_contiguous()
    assert _rel(fast, plain) < 1e-12
    inputs = [x, weight] + ([b] if bias else [])
    g = torch.randn_like(plain)
    for a, e in zip(_grads(fast, inputs, g), _grads(plain, inputs, g)):
        assert _rel(a, e) < 1e-10
    with torch.no_grad():
        assert _rel(SubpixelTransposedConv.apply(x, weight, b), plain) < 1e-12


@pytest.mark.parametrize("shape", SHAPES)
def test_decoders_equal_their_textbook_network_with_the_subpixel_layer(shape):
    """Batched float64 inputs: the output, the gradients of z and of every parameter, and the second
    derivatives equal those of the plain nn.Sequential; the sub-pixel layer is the one that ran."""
    torch.manual_seed(1)
    dec = ConvDecoder(shape, 6).double()
    z = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    fast, plain = dec(z), dec.net(z)
    assert type(fast.grad_fn).__name__ == "SubpixelTransposedConvBackward"
    assert fast.shape == (7, *shape) and fast.is_contiguous()
    assert _rel(fast, plain) < 1e-12
    inputs = [z, *dec.parameters()]
    g = torch.randn_like(plain)
    first_fast, first_plain = _grads(fast, inputs, g, True), _grads(plain, inputs, g, True)
    for a, e in zip(first_fast, first_plain):
        assert _rel(a, e) < 1e-10
    second_fast = _grads(sum((a ** 2).sum() for a in first_fast), inputs, torch.tensor(1.0, dtype=torch.float64))
    second_plain = _grads(sum((a ** 2).sum() for a in first_plain), inputs, torch.tensor(1.0, dtype=torch.float64))
    for a, e in zip(second_fast, second_plain):
        assert (a - e).abs().max() <= 1e-10 * e.abs().max().clamp_min(1.0)
    with torch.no_grad():
        assert _rel(dec(z), plain) < 1e-12
    dec.subpixel = False
    assert type(dec(z).grad_fn).__name__ != "SubpixelTransposedConvBackward"
    assert _rel(dec(z), plain) < 1e-12


def test_only_the_last_layer_takes_the_subpixel_form():
    """The middle 4x4/2 layers (64 -> 32, 128 -> 64 channels) stay with oneDNN's transposed kernel."""
    dec = ConvDecoder((3, 32, 32), 20)
    h = torch.zeros(2, 128, 4, 4)
    assert not _is_subpixel_transposed(dec.net[3], h)
    assert not _is_subpixel_transposed(dec.net[5], torch.zeros(2, 64, 8, 8))
    assert _is_subpixel_transposed(dec.net[7], torch.zeros(2, 32, 16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _is_subpixel_transposed(dec.net[7], torch.zeros(2, 32, 16, 16))
    assert not _is_subpixel_transposed(dec.net[7], torch.zeros(2, 32, 16, 16, device="meta"))   # not a CPU
    hooked = ConvDecoder((3, 32, 32), 20)
    hooked.net[7].register_forward_hook(lambda *a: None)
    assert not _is_subpixel_transposed(hooked.net[7], torch.zeros(2, 32, 16, 16))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_vmap_of_stacked_decoders_equals_the_textbook_networks(shape):
    """nets/stacked.py evaluates the decoders under vmap, where the layer runs as the plain transposed
    convolution: values and parameter gradients still equal each textbook network's."""
    torch.manual_seed(2)
    decs = [ConvDecoder(shape, 5).double() for _ in range(3)]
    z = torch.randn(4, 5, dtype=torch.float64)
    out = stacked_call(decs, [z], [True])
    plain = torch.stack([d.net(z) for d in decs])
    assert _rel(out, plain) < 1e-12
    g = torch.randn_like(plain)
    params = [p for d in decs for p in d.parameters()]
    for a, e in zip(_grads(out, params, g), _grads(plain, params, g)):
        assert _rel(a, e) < 1e-10


def test_autocast_runs_the_plain_layer_and_backpropagates():
    torch.manual_seed(3)
    dec = ConvDecoder((3, 28, 28), 6)
    z = torch.randn(4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dec(z)
        dec.subpixel = False
        ref = dec(z)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dec.parameters())
