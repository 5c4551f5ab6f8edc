"""``--set activation=NAME`` (nets/activations.py): every network builder honours it, the defaults are kept
(ReLU; SiLU in mvae-mlp and MHVAE), unknown names and models that do not take it fail with one line."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from helpers import TOY_SPECS, toy_batch
from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.dataset import ModalitySpec
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from mmvae.nets.activations import ACTIVATIONS
from mmvae.nets.conditional import default_conditional_decoder
from mmvae.nets.hierarchical import ladder_blocks
from mmvae.nets.joint import default_joint_encoder
from mmvae.nets.registry import NETWORKS, default_networks

KINDS = set(ACTIVATIONS.values())
SPECS = {"vec": ModalitySpec("vec", "vector", (5,), "normal"),
         "lab": ModalitySpec("lab", "categorical", (3,), "categorical", num_classes=3),
         "img": ModalitySpec("img", "image", (1, 28, 28), "bernoulli"),
         "conv28": ModalitySpec("conv28", "image", (1, 28, 28), "bernoulli", network="conv"),
         "conv32": ModalitySpec("conv32", "image", (3, 32, 32), "bernoulli", network="conv"),
         "txt": ModalitySpec("txt", "text", (8, 10), "categorical", vocab=tuple("abcdefghij")),
         "mnist": ModalitySpec("mnist", "image", (1, 28, 28), "bernoulli", network="mnist-mlp"),
         "mvae": ModalitySpec("mvae", "image", (1, 28, 28), "bernoulli", network="mvae-mlp")}


def activations(*modules: nn.Module) -> list[type]:
    """The classes of every activation module inside ``modules`` (any class of ACTIVATIONS)."""
    return [type(m) for module in modules for m in module.modules() if type(m) in KINDS]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_builder_uses_the_requested_activation_everywhere(name):
    want = ACTIVATIONS[name]
    for spec in SPECS.values():
        enc, dec = default_networks(spec, 4, 16, name)
        found = activations(enc, dec)
        assert found and set(found) == {want}, (spec.name, found)
    vec, lab = SPECS["vec"], SPECS["lab"]
    joint = default_joint_encoder({"vec": vec, "lab": lab}, 4, 16, activation=name)
    cond = default_conditional_decoder(vec, {"lab": lab}, 4, 16, activation=name)
    ladder = ladder_blocks(["vec", "lab"], 3, 4, 8, 16, activation=name)
    for part in (joint, cond, ladder):
        assert set(activations(part)) == {want}


def test_defaults_are_kept_relu_and_swish_where_the_papers_use_it():
    for m, spec in SPECS.items():
        enc, dec = default_networks(spec, 4, 16)
        assert set(activations(enc, dec)) == ({nn.SiLU} if m == "mvae" else {nn.ReLU}), m
    model = build_model(TOY_SPECS, Config(model="mopoe", latent_dim=4, hidden=16))
    assert set(activations(model)) == {nn.ReLU} and model.activation is None
    assert set(activations(build_model(TOY_SPECS, Config(model="mopoe", latent_dim=4, hidden=16,
                                                         activation="gelu")))) == {nn.GELU}


# Computed on main before the option existed (MHVAE swapped the ReLUs of its networks for SiLUs after
# building them): the same parameter names and shapes, the same values for seed 0, the same outputs.
MHVAE_BEFORE = {"names": "9bc3c00a022ce371", "count": 96, "sum": -9.947125340972, "abs": 1044.093834304644,
                "enc_a": 1.602282739225, "top_down": -0.978408026487, "dec_b": 2.395977791622}


def test_mhvae_networks_are_the_swish_networks_it_had():
    torch.manual_seed(0)
    cfg = Config(model="mhvae", latent_dim=4, hidden=16, weights="rescale", extra={"levels": 3})
    model = build_model(TOY_SPECS, cfg).double()
    assert cfg.activation == "silu" and set(activations(model)) == {nn.SiLU}
    names = ";".join(f"{n}:{tuple(p.shape)}" for n, p in model.named_parameters())
    assert hashlib.sha256(names.encode()).hexdigest()[:16] == MHVAE_BEFORE["names"]
    params = [p.detach() for p in model.parameters()]
    assert len(params) == MHVAE_BEFORE["count"]
    assert sum(float(p.sum()) for p in params) == pytest.approx(MHVAE_BEFORE["sum"], abs=1e-9)
    assert sum(float(p.abs().sum()) for p in params) == pytest.approx(MHVAE_BEFORE["abs"], abs=1e-9)
    z = torch.linspace(-1, 1, 24, dtype=torch.float64).view(6, 4)
    with torch.no_grad():
        loc, raw = model.encoders["a"](toy_batch(6).data["a"])
        assert float(loc.sum() + raw.sum()) == pytest.approx(MHVAE_BEFORE["enc_a"], abs=1e-9)
        assert float(model.ladder["top_down"][0](z).sum()) == pytest.approx(MHVAE_BEFORE["top_down"], abs=1e-9)
        assert float(model.decoders["b"](z).sum()) == pytest.approx(MHVAE_BEFORE["dec_b"], abs=1e-9)
    relu = build_model(TOY_SPECS, Config(model="mhvae", latent_dim=4, hidden=16, activation="relu"))
    assert set(activations(relu)) == {nn.ReLU}


def test_unknown_activation_and_models_that_do_not_take_it_fail_in_one_line(capsys, tmp_path):
    with pytest.raises(UserError, match="relu, silu, gelu"):
        build_model(TOY_SPECS, Config(model="mopoe", activation="swoosh"))
    with pytest.raises(UserError, match="does not take --set activation"):
        build_model(TOY_SPECS, Config(model="mmvaeplus", activation="gelu"))
    code = main(["train", "--dataset", "toy", "--set", "data.n=64", "--epochs", "1", "--device", "cpu",
                 "--set", "activation=swoosh", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "activation 'swoosh' is unknown" in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_registered_network_without_an_activation_argument_is_refused_only_when_asked():
    NETWORKS["plain-test"] = lambda spec, latent_dim, hidden: (nn.Linear(5, 8), nn.Linear(4, 5))
    try:
        spec = ModalitySpec("v", "vector", (5,), "normal", network="plain-test")
        assert len(default_networks(spec, 4, 16)) == 2
        with pytest.raises(UserError, match="takes no activation"):
            default_networks(spec, 4, 16, "gelu")
    finally:
        del NETWORKS["plain-test"]


def test_mhvae_runs_saved_before_the_option_rebuild_their_swish_networks():
    saved = {k: v for k, v in Config(model="mhvae", latent_dim=4, hidden=16).to_dict().items() if k != "activation"}
    cfg = Config.from_dict(saved)
    assert set(activations(build_model(TOY_SPECS, cfg))) == {nn.SiLU} and cfg.activation == "silu"
