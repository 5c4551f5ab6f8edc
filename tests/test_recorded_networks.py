"""Every run records the network of each modality in config.json, so the defaults may change without
changing how saved runs rebuild (models/registry.build_model, runs.with_recorded_networks)."""
import json

import pytest
import torch

from mmvae import Config, build_model
from mmvae.cli import main
from mmvae.data.dataset import ModalitySpec
from mmvae.nets import registry as nets
from mmvae.runs import load_run

from helpers import SMALL_RUN

SPECS = {"image": ModalitySpec("image", "image", (1, 28, 28), "bernoulli"),
         "text": ModalitySpec("text", "text", (8, 5), "categorical"),
         "vec": ModalitySpec("vec", "vector", (6,), "normal"),
         "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}


def test_build_model_resolves_every_network_into_the_config():
    cfg = Config(model="mmvae", hidden=8, latent_dim=3)
    build_model(SPECS, cfg)
    assert cfg.network == {"image": "mlp", "text": "mlp", "vec": "mlp2", "label": "mlp"}


def test_long_text_keeps_the_convolutional_network():
    specs = {"image": SPECS["image"], "text": ModalitySpec("text", "text", (32, 200), "categorical")}
    cfg = Config(model="mmvae", hidden=8, latent_dim=3)
    build_model(specs, cfg)
    assert cfg.network["text"] == "text-cnn"


def test_choice_and_data_networks_win_over_the_defaults():
    specs = dict(SPECS, image=ModalitySpec("image", "image", (1, 28, 28), "bernoulli", network="mnist-mlp"))
    cfg = Config(model="mopoe", hidden=8, latent_dim=3, network={"text": "mlp"})
    build_model(specs, cfg)
    assert cfg.network["image"] == "mnist-mlp" and cfg.network["text"] == "mlp"
    cfg = Config(model="mopoe", hidden=8, latent_dim=3, network={"text": "text-cnn"})
    build_model(specs, cfg)
    assert cfg.network["text"] == "text-cnn"


# What each kind name built when runs did not record their networks (and must keep building).
LEGACY = {"image": "mlp", "categorical": "mlp", "vector": "mlp2", "text": "text-cnn"}


def test_kind_aliases_build_what_they_always_built():
    for kind, name in LEGACY.items():
        spec = next(s for s in SPECS.values() if s.kind == kind)
        torch.manual_seed(0)
        a = nets.default_networks(spec.__class__(**{**spec.__dict__, "network": kind}), 3, 8)
        torch.manual_seed(0)
        b = nets.default_networks(spec.__class__(**{**spec.__dict__, "network": name}), 3, 8)
        for x, y in zip(a, b):
            sa, sb = x.state_dict(), y.state_dict()
            assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa), kind


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recorded") / "run"
    assert main(["train", *SMALL_RUN, "--out", str(out)]) == 0
    return out


def test_a_trained_run_names_its_networks(toy_run):
    saved = json.loads((toy_run / "config.json").read_text())
    assert saved["config"]["network"] == {"a": "mlp2", "b": "mlp2"}


def test_a_run_saved_before_networks_were_recorded_rebuilds_as_trained(toy_run, tmp_path, monkeypatch):
    """Delete the record (as older versions wrote config.json), then change today's default for the kind:
    the old run still loads with the network it was trained with, and gives the same outputs."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(toy_run, old)
    path = old / "config.json"
    saved = json.loads(path.read_text())
    del saved["config"]["network"]
    path.write_text(json.dumps(saved))
    monkeypatch.setitem(nets.KIND_NETWORK, "vector", "mlp")   # a later default with other parameter shapes
    run, ref = load_run(old), load_run(toy_run)
    assert run.config.network == {"a": "vector", "b": "vector"}
    x = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.equal(run.model.encoders["a"](x)[0], ref.model.encoders["a"](x)[0])
    # and a new run under the changed default records and builds the new network
    cfg = Config(model="vae", hidden=8, latent_dim=3)
    build_model({"a": ModalitySpec("a", "vector", (8,), "normal")}, cfg)
    assert cfg.network == {"a": "mlp"}
