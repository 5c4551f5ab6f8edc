"""Vectorised experts (nets/stacked.py) and the fast evaluation of the conv networks (nets/conv.py):
the same function, values and gradients, as the per-modality loop and the textbook layers."""
import pytest
import torch
from torch import nn

from mmvae import Batch, Config, UserError, build_model
from mmvae.config import apply_overrides
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.nets.conv import ConvDecoder, ConvEncoder, run_sequential
from mmvae.nets.mlp import MLPDecoder, MLPEncoder
from mmvae.nets.stacked import architecture, enabled, groups, parse_vectorise, stacked_call


def _poly(m: int, size: int = 28) -> dict:
    return {f"m{i}": ModalitySpec(f"m{i}", "image", (3, size, size), "laplace") for i in range(m)}


def _grads(loss, module):
    params = [p for p in module.parameters() if p.requires_grad]
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------------------ conv fast path
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (3, 32, 32)])
def test_conv_networks_equal_their_textbook_layers(shape):
    """run_sequential (channels-last, 1x1 layers as matrix products, separate bias, in-place ReLU) is
    the function of the plain nn.Sequential, in value and in every gradient (float64)."""
    torch.manual_seed(0)
    enc, dec = ConvEncoder(shape, 6).double(), ConvDecoder(shape, 6).double()
    x = torch.rand(5, *shape, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    fast, plain = dec(z), dec.net(z)
    assert fast.shape == (5, *shape) and fast.is_contiguous()
    assert torch.allclose(fast, plain, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(plain)
    inputs = [z, *dec.parameters()]
    for a, b in zip(torch.autograd.grad((fast * w).sum(), inputs), torch.autograd.grad((plain * w).sum(), inputs)):
        assert _rel(a, b) < 1e-10
    (lf, rf), (lp, rp) = enc(x), enc.head(enc.body(x)).chunk(2, -1)
    assert torch.allclose(lf, lp, rtol=1e-12, atol=1e-12) and torch.allclose(rf, rp, rtol=1e-12, atol=1e-12)
    s = (lf * 2 + rf).sum()
    t = (lp * 2 + rp).sum()
    inputs = [x, *enc.parameters()]
    for a, b in zip(torch.autograd.grad(s, inputs), torch.autograd.grad(t, inputs)):
        assert _rel(a, b) < 1e-10


def test_conv_networks_keep_their_parameter_names():
    """Checkpoints of the textbook network load unchanged: same state_dict keys and shapes."""
    enc, dec = ConvEncoder((3, 32, 32), 20), ConvDecoder((3, 32, 32), 20)
    assert [k for k in enc.state_dict()] == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                                             "body.4.weight", "body.4.bias", "body.6.weight", "body.6.bias",
                                             "head.weight", "head.bias"]
    assert [k for k in dec.state_dict()] == [f"net.{i}.{p}" for i in (1, 3, 5, 7) for p in ("weight", "bias")]
    assert dec.state_dict()["net.1.weight"].shape == (20, 128, 4, 4)


def test_run_sequential_calls_other_layers_as_they_are():
    seq = nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.Tanh(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(), nn.Flatten())
    x = torch.randn(3, 2, 8, 8)
    assert torch.allclose(run_sequential(seq, x), seq(x), atol=1e-6)
    with torch.no_grad():   # inference: fused bias
        assert torch.allclose(run_sequential(seq, x), seq(x), atol=1e-6)


def test_relu_in_place_never_touches_the_input():
    seq = nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1))
    x = torch.randn(2, 1, 4, 4)
    before = x.clone()
    run_sequential(seq, x)
    assert torch.equal(x, before)


# ------------------------------------------------------------------------------ grouping
def test_networks_of_one_architecture_group_and_others_do_not():
    nets = {"a": ConvDecoder((3, 28, 28), 4), "b": ConvDecoder((3, 28, 28), 4), "c": ConvDecoder((1, 28, 28), 4),
            "d": MLPDecoder((10,), 4), "e": ConvDecoder((3, 28, 28), 4)}
    assert groups(nets, list(nets)) == [["a", "b", "e"], ["c"], ["d"]]
    hooked = ConvDecoder((3, 28, 28), 4)
    hooked.register_forward_hook(lambda *a: None)
    normed = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert architecture(hooked) is None and architecture(normed) is None
    assert groups({"a": hooked, "b": ConvDecoder((3, 28, 28), 4), "c": hooked}, ["a", "b", "c"]) == \
        [["a"], ["b"], ["c"]]


def test_stacked_call_equals_the_loop_for_mlps_and_shared_inputs():
    torch.manual_seed(0)
    decs = [MLPDecoder((3, 4, 4), 5, (16, 16)).double() for _ in range(3)]
    encs = [MLPEncoder((3, 4, 4), 5, (16,)).double() for _ in range(3)]
    z = torch.randn(7, 5, dtype=torch.float64)
    xs = torch.rand(3, 7, 3, 4, 4, dtype=torch.float64)
    out = stacked_call(decs, [z], [True])
    assert out.shape == (3, 7, 3, 4, 4)
    for g, d in enumerate(decs):
        assert torch.allclose(out[g], d(z), rtol=1e-12, atol=1e-12)
    loc, raw = stacked_call(encs, [xs], [False])
    for g, e in enumerate(encs):
        lo, ro = e(xs[g])
        assert torch.allclose(loc[g], lo, rtol=1e-12) and torch.allclose(raw[g], ro, rtol=1e-12)


def test_vectorise_setting():
    assert parse_vectorise("auto") == "auto" and parse_vectorise("False") is False and parse_vectorise(True) is True
    assert not enabled("auto", torch.device("cpu")) and enabled("auto", torch.device("cuda"))
    assert enabled(True, torch.device("cpu")) and not enabled(False, torch.device("cuda"))
    cfg = apply_overrides(Config(model="mmvae"), ["vectorise=false"])
    assert build_model(_poly(2), cfg).vectorise is False
    with pytest.raises(UserError, match="vectorise"):
        build_model(_poly(2), apply_overrides(Config(model="mmvae"), ["vectorise=sometimes"]))


# ------------------------------------------------------------------------------ models
def _pair(model: str, specs: dict, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    loop = build_model(specs, Config(model=model, latent_dim=6, vectorise=False, **kw)).to(dtype)
    vec = build_model(specs, Config(model=model, latent_dim=6, vectorise=True, **kw)).to(dtype)
    vec.load_state_dict(loop.state_dict())
    return loop, vec


def _batch(specs: dict, rows: int, partial: bool, dtype=torch.float64) -> Batch:
    g = torch.Generator().manual_seed(1)
    data = {m: torch.rand(rows, *s.shape, generator=g, dtype=dtype) for m, s in specs.items()}
    if not partial:
        return Batch(data)
    names = list(specs)
    mask = {m: torch.ones(rows, dtype=torch.bool) for m in names}
    mask[names[1]] = torch.arange(rows) % 3 != 1
    mask[names[-1]] = torch.arange(rows) % 2 == 0
    for m in names:
        data[m][~mask[m]] = float("nan")   # missing rows may hold anything
    return Batch(data, mask)


@pytest.mark.parametrize("model,objective,k", [("mmvae", "elbo", 1), ("mmvae", "dreg", 3), ("mopoe", "elbo", 1),
                                               ("mvae", "elbo", 1)])
@pytest.mark.parametrize("partial", [False, True])
def test_vectorised_experts_equal_the_loop(model, objective, k, partial):
    """Loss and every gradient of the vectorised path equal the per-modality loop's (float64, the same
    noise), with rows missing per modality (NaN in them) and without."""
    specs = _poly(3)
    loop, vec = _pair(model, specs, objective=objective, k=k)
    batch = _batch(specs, 6, partial)
    calls = []
    import mmvae.nets.stacked as stacked

    original = stacked.stacked_call

    def counting(*a):
        calls.append(len(a[0]))
        return original(*a)

    stacked.stacked_call = counting
    try:
        lv, _ = vec.loss(batch, 0.7, noise=FixedNoise(seed=2))
    finally:
        stacked.stacked_call = original
    ll, _ = loop.loss(batch, 0.7, noise=FixedNoise(seed=2))
    assert calls and all(c == 3 for c in calls), "the vectorised path was not taken"
    assert torch.isfinite(ll) and abs((lv - ll).item()) <= 1e-9 * abs(ll.item())
    for a, b in zip(_grads(lv, vec), _grads(ll, loop)):
        assert _rel(a, b) < 1e-9


def test_vectorised_experts_float32_and_mixed_modalities():
    """float32: tight agreement; a label next to identical images: the images group, the label loops."""
    specs = {**_poly(3), "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}
    loop, vec = _pair("mopoe", specs, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    data = {m: torch.rand(8, 3, 28, 28, generator=g) for m in _poly(3)}
    data["label"] = torch.nn.functional.one_hot(torch.arange(8) % 10, 10).float()
    batch = Batch(data)
    lv, _ = vec.loss(batch, 1.0, noise=FixedNoise(seed=0))
    ll, _ = loop.loss(batch, 1.0, noise=FixedNoise(seed=0))
    assert abs((lv - ll).item()) <= 1e-5 * abs(ll.item())
    for a, b in zip(_grads(lv, vec), _grads(ll, loop)):
        assert _rel(a, b) < 1e-4
    assert vec._encoder_groups.of(vec.encoders, list(specs)) == [["m0", "m1", "m2"], ["label"]]


class Branchy(nn.Module):
    """A user network with data-dependent control flow, which vmap cannot trace: the loop takes over."""

    def __init__(self, latent: int):
        super().__init__()
        self.lin = nn.Linear(3 * 28 * 28, 2 * latent)

    def forward(self, x):
        h = self.lin(x.flatten(1))
        if bool(h.sum() > 1e9):
            h = h * 0
        return h.chunk(2, -1)


def test_networks_vmap_cannot_run_fall_back_to_the_loop():
    specs = _poly(2)
    torch.manual_seed(0)
    model = build_model(specs, Config(model="mmvae", latent_dim=6, vectorise=True),
                        encoders={m: Branchy(6) for m in specs})
    loss, _ = model.loss(_batch(specs, 4, False, torch.float32), 1.0)
    loss.backward()
    assert model._encoder_groups.failed == {("m0", "m1")}
    assert all(p.grad is not None for p in model.encoders.parameters())


def test_unweighted_reconstruction_is_one_call_without_the_training_weights():
    """Evaluation's Σ_m log p(x_m | z) (λ_m = 1) from one reconstruction call equals scoring each
    modality alone and dividing by its λ_m, with rows missing."""
    from mmvae.evaluation.likelihood import unweighted_reconstruction

    specs = {**_poly(2), "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}
    torch.manual_seed(0)
    model = build_model(specs, Config(model="mopoe", latent_dim=6, weights={"m0": 3.0, "label": 50.0})).double()
    batch = _batch({m: s for m, s in specs.items() if m != "label"}, 5, True)
    batch.data["label"] = torch.nn.functional.one_hot(torch.arange(5) % 10, 10).double()
    batch.mask["label"] = torch.ones(5, dtype=torch.bool)
    z = torch.randn(4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        one = unweighted_reconstruction(model, z, batch)
        alone = sum(model.reconstruction(z.unsqueeze(0), batch.select([m]))[0] / model.weights[m] for m in specs)
    assert one.shape == (4, 5) and torch.allclose(one, alone, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("model", ["mvae", "mmvae", "mopoe"])
def test_bf16_autocast_step_runs(model):
    """--amp bf16 on CPU: the loss of every fusion model (MVAE's strata add up with index_add) is a
    finite float32 and its gradient reaches every parameter, with the vectorised path too."""
    specs = _poly(2)
    for vectorise in (False, True):
        torch.manual_seed(0)
        m = build_model(specs, Config(model=model, latent_dim=6, vectorise=vectorise))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = m.loss(_batch(specs, 4, False, torch.float32), 1.0)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in m.parameters())


def test_compiled_loss_applies_masks_without_branching():
    """Under torch.compile the masks are applied arithmetically (no graph break on mask.all()): the
    compiled loss equals the eager one on rows with missing modalities (NaN in them)."""
    import torch._dynamo

    specs = _poly(2)
    torch.manual_seed(0)
    model = build_model(specs, Config(model="mopoe", latent_dim=6, vectorise=False))
    batch = _batch(specs, 6, True, torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(lambda b: model.loss(b, 1.0)[0], backend="eager")
    torch.manual_seed(3)
    eager = model.loss(batch, 1.0)[0]
    torch.manual_seed(3)
    traced = compiled(batch)
    assert torch.isfinite(traced) and torch.allclose(traced, eager, rtol=1e-5)
    explanation = torch._dynamo.explain(lambda b: model.loss(b, 1.0)[0])(batch)
    assert not any("item" in str(b.reason) for b in explanation.break_reasons)
