"""The sub-pixel form of the conv decoder's last layer (nets/conv.SubpixelTransposedConv) is the textbook
ConvTranspose2d(4x4, stride 2, padding 1): values, first and second derivatives (float64), with and
without autograd, inside vmap (nets/stacked.py); under bf16 autocast every layer runs in bf16, close to autocast's own."""
import pytest
import torch
import torch.nn.functional as F

import mmvae.nets.conv as conv
from mmvae.nets.conv import (ConvDecoder, ConvEncoder, SubpixelTransposedConv, _bias_apart, _is_subpixel_transposed,
                             _subpixel_weight, run_sequential)
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


def _norm_rel(a, b):
    return float(((a - b).norm() / b.norm()).detach())


@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_autocast_runs_every_layer_in_bf16_as_accurately_as_autocasts_own(shape):
    """Under CPU autocast run_sequential casts the input and each parameter once and runs every layer in
    bf16 (the sub-pixel layer included). Against the float32 network, its outputs and the gradients of
    every float32 parameter are as accurate as the textbook network's under autocast (bf16 rounding: a
    separate bias add rounds once more, so within 2x + 0.02 of autocast's own relative error)."""
    torch.manual_seed(3)
    dec, enc = ConvDecoder(shape, 6), ConvEncoder(shape, 6)
    z, x = torch.randn(16, 6), torch.rand(16, *shape)
    params = [*dec.parameters(), *enc.body.parameters()]
    g_out, g_feats = torch.randn(16, *shape), torch.randn(16, 512)

    def run(fast: bool, amp: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out, feats = (dec(z), run_sequential(enc.body, x)) if fast else (dec.net(z), enc.body(x))
        loss = (out.float() * g_out).sum() + (feats.float() * g_feats).sum()
        return out, feats, torch.autograd.grad(loss, params)

    out, feats, fast = run(True, True)
    ref_out, ref_feats, auto = run(False, True)
    true_out, true_feats, truth = run(False, False)
    assert type(out.grad_fn).__name__ == "SubpixelTransposedConvBackward"
    assert out.dtype == feats.dtype == ref_out.dtype == torch.bfloat16 and out.shape == (16, *shape)
    for a, e, t in [(out, ref_out, true_out), (feats, ref_feats, true_feats), *zip(fast, auto, truth)]:
        assert a.shape == t.shape and _norm_rel(a.float(), t) <= 2 * _norm_rel(e.float(), t) + 0.02
    assert all(g.dtype == torch.float32 for g in fast)


def test_autocast_leaves_sequentials_with_other_layers_to_autocast():
    """A layer run_sequential does not run itself (here a Sigmoid) keeps the whole Sequential under
    autocast's own casting, layer by layer."""
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Sigmoid(), torch.nn.Conv2d(4, 2, 3))
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = run_sequential(seq, x), seq(x)
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref.float(), atol=1e-2)


def _relu_backward_layouts(enc, dec, x, z, amp: bool) -> list[tuple]:
    """(gradient strides, output strides) of every ReLU backward of one encoder + decoder backward pass."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.threshold_backward.default:
                seen.append((args[0].stride(), args[1].stride()))
            return func(*args, **(kwargs or {}))

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loc, raw = enc(x)
        out = dec(z)
    with Log():
        (loc.float().sum() + raw.float().sum() + out.float().sum()).backward()
    return seen


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("amp", [False, True])
def test_every_relu_backward_sees_one_layout(shape, amp, monkeypatch):
    """The gradient reaching each ReLU comes in the layout of the ReLU's output (nets/conv._GradInLayoutOf):
    the encoder's last ReLU (behind the flatten), the decoder's first (now out of place: in place on a view,
    autograd's view replay handed its gradient back in the default layout) and a one-channel image's first
    included, where threshold_backward on two layouts is 5-9x slower (bench/grad_layout.py). Without the identity some ReLU does see two layouts."""
    import mmvae.nets.conv as conv

    torch.manual_seed(0)
    enc, dec = ConvEncoder(shape, 6), ConvDecoder(shape, 6)
    x, z = torch.rand(4, *shape), torch.randn(4, 6)
    seen = _relu_backward_layouts(enc, dec, x, z, amp)
    assert len(seen) == 6 and all(g == o for g, o in seen)
    monkeypatch.setattr(conv, "GRAD_LAYOUT", False)
    assert any(g != o for g, o in _relu_backward_layouts(enc, dec, x, z, amp))


@pytest.mark.parametrize("shape", SHAPES)
def test_encoders_equal_their_textbook_network(shape):
    """float64: the encoder body's output and the gradients of its input and every parameter equal the
    plain nn.Sequential's, first and second derivatives (the layout identities are identities)."""
    torch.manual_seed(2)
    enc = ConvEncoder(shape, 6).double()
    x = torch.rand(5, *shape, dtype=torch.float64, requires_grad=True)
    fast, plain = run_sequential(enc.body, x), enc.body(x)
    assert _rel(fast, plain) < 1e-12
    inputs = [x, *enc.body.parameters()]
    g = torch.randn_like(plain)
    first_fast, first_plain = _grads(fast, inputs, g, True), _grads(plain, inputs, g, True)
    for a, e in zip(first_fast, first_plain):
        assert _rel(a, e) < 1e-10
    one = torch.tensor(1.0, dtype=torch.float64)
    second_fast = _grads(sum((a ** 2).sum() for a in first_fast), inputs, one)
    second_plain = _grads(sum((a ** 2).sum() for a in first_plain), inputs, one)
    for a, e in zip(second_fast, second_plain):
        assert (a - e).abs().max() <= 1e-10 * e.abs().max().clamp_min(1.0)


@pytest.mark.parametrize("k,s,p,o,size,apart", [
    (3, 2, 1, 0, 4, True),     # the 28x28 decoder's 128 -> 64 layer: 4x4 -> 7x7
    (3, 2, 0, 0, 4, True),     # 9x9
    (4, 2, 1, 1, 4, True),     # 9x9: a kernel that is a multiple of the stride, an odd output
    (5, 3, 2, 0, 4, True),     # 10x10 against stride 3
    (3, 2, 1, 1, 4, False),    # 8x8: a kernel that is not a multiple of the stride, an even output
    (4, 2, 1, 0, 7, False),    # the 28x28 decoder's 64 -> 32 layer: 7x7 -> 14x14
    (5, 3, 1, 0, 4, False),    # 12x12
    (3, 1, 1, 0, 4, False),    # stride 1
])
def test_a_transposed_bias_is_added_apart_without_gradients_where_output_phases_differ(k, s, p, o, size, apart,
                                                                                       monkeypatch):
    """nets/conv._bias_apart: without gradients a transposed convolution's bias is added after it exactly
    when its output map is not a multiple of the stride (bench/bias_apart.py); with a trained bias always;
    never for a plain convolution, without bias, off a CPU, or with the switch off."""
    layer = torch.nn.ConvTranspose2d(8, 4, k, s, p, o)
    h = torch.zeros(2, 8, size, size)
    with torch.no_grad():
        assert _bias_apart(layer, h) is apart
        assert not _bias_apart(layer, h.to("meta"))
    assert _bias_apart(layer, h)                                           # a trained bias
    with torch.no_grad():
        assert not _bias_apart(torch.nn.Conv2d(8, 4, k, s, p), h)
        assert not _bias_apart(torch.nn.ConvTranspose2d(8, 4, k, s, p, o, bias=False), h)
    monkeypatch.setattr(conv, "TRANSPOSED_BIAS_APART", False)
    with torch.no_grad():
        assert not _bias_apart(layer, h)


@pytest.mark.parametrize("shape", SHAPES)
def test_decoders_without_gradients_equal_the_textbook_network_either_way_of_the_bias(shape, monkeypatch):
    """The decoders' outputs without gradients (the likelihood estimator's passes) equal the plain
    nn.Sequential's in float64, with the bias apart (the default) and fused; on the 28x28 decoders the
    middle layer's bias is the one taken apart."""
    torch.manual_seed(2)
    dec = ConvDecoder(shape, 6).double()
    z = torch.randn(9, 6, dtype=torch.float64)
    with torch.no_grad():
        plain = dec.net(z)
        h = dec.net[2](dec.net[1](dec.net[0](z)))
        assert _bias_apart(dec.net[3], h) is (shape[1] == 28)
        for switch in (True, False):
            monkeypatch.setattr(conv, "TRANSPOSED_BIAS_APART", switch)
            assert _rel(dec(z), plain) < 1e-12
