"""Modality names are checked where they enter (issue 12, item 1): hostile array names exit 2 naming the
array, leave no run folder, and no file named after a modality can be written outside its folder."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.dataset import DatasetSplits, ModalitySpec, MultimodalDataset
from mmvae.data.names import RESERVED, check_modality_names, child_path, name_problem
from mmvae.errors import UserError
from mmvae.evaluation.classifier_cache import entry_paths
from mmvae.train.trainer import Trainer

OPTS = ["--epochs", "1", "--batch-size", "16", "--set", "hidden=8", "--latent-dim", "2", "--device", "cpu"]
HOSTILE = ["/abs/dir/package", "../escape", "a/b", "a.b", "", ".", "..", "keys", "items", "values", "train",
           "eval", "forward", "to", "type", "é", "名前", "a b", "-x", "1abc", "x" * 65, "a\x00b", "CON\n"]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _npz_with_member(path: Path, name: str, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", _npy(rng.random((n, 4)).astype(np.float32)))
        z.writestr("b.npy", _npy(rng.random((n, 3)).astype(np.float32)))
        z.writestr("label.npy", _npy(np.arange(n) % 3))
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name):
    assert name_problem(name) is not None, name


@pytest.mark.parametrize("name", ["a", "A", "image", "text_1", "m0", "x-y", "label", "x" * 64, "Keys", "training_set"])
def test_ordinary_names_pass(name):
    assert name_problem(name) is None


def test_reserved_names_are_exactly_what_torch_refuses():
    """Every name torch's ModuleDict / ParameterDict refuses is reserved (and ordinary ones are accepted)."""
    for n in sorted(RESERVED):
        assert name_problem(n) is not None
    for cls in (nn.ModuleDict, nn.ParameterDict):
        refused = set()
        for n in dir(cls()):
            if n.startswith("_"):
                continue
            d = cls()
            try:
                d[n] = nn.Linear(1, 1) if cls is nn.ModuleDict else nn.Parameter(torch.zeros(1))
            except (KeyError, TypeError, AttributeError):
                refused.add(n)
        assert refused <= RESERVED, refused - RESERVED
    for n in ("image", "text", "m0"):
        nn.ModuleDict({n: nn.Linear(1, 1)})


def test_names_differing_only_in_case_are_refused():
    with pytest.raises(UserError, match="differ only in case"):
        check_modality_names(["Image", "image"], "data")


@pytest.mark.parametrize("name", ["/abs/dir/package", "../escape", "a.b", "", "keys", "train", "forward", "é"])
def test_npz_member_names_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    data = _npz_with_member(tmp_path / "d.npz", name)
    before = _tree(tmp_path)
    code = main(["train", *OPTS, "--dataset", str(data), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "modality name" in err and repr(name) in err and "rename" in err, err
    assert not (tmp_path / "run").exists()              # no empty run folder left behind
    assert _tree(tmp_path) == before                     # nothing written anywhere


def test_folder_of_npy_with_a_dotted_name(tmp_path, capsys):
    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "a.b.npy", np.random.default_rng(0).random((30, 4)).astype(np.float32))
    np.save(folder / "c.npy", np.random.default_rng(1).random((30, 4)).astype(np.float32))
    assert main(["train", *OPTS, "--dataset", str(folder), "--out", str(tmp_path / "run")]) == 2
    assert "'a.b'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_python_api_splits_with_a_reserved_name(tmp_path):
    specs = {m: ModalitySpec(m, "vector", (3,), "normal") for m in ("keys", "b")}
    full = MultimodalDataset(specs, {m: torch.rand(30, 3) for m in specs})
    splits = DatasetSplits(full.subset(torch.arange(6, 30)), full.subset(torch.arange(6)))
    cfg = Config(model="mopoe", dataset="mine", epochs=1, batch_size=8, hidden=8, latent_dim=2, device="cpu",
                 out=str(tmp_path / "run"))
    with pytest.raises(UserError, match="'keys'"):
        Trainer(cfg, splits=splits, show_progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stem", ["../x", "/abs", "a/b", "a.b", "", "..", "é"])
def test_paths_named_after_modalities_stay_inside(tmp_path, stem):
    with pytest.raises(UserError):
        child_path(tmp_path, stem, ".json")
    with pytest.raises(UserError):
        entry_paths(tmp_path, stem)
    assert child_path(tmp_path, "cross_a_to_b", ".png") == tmp_path / "cross_a_to_b.png"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    data = root / "d.npz"
    np.savez(data, a=rng.random((60, 4)).astype(np.float32), b=rng.random((60, 3)).astype(np.float32),
             label=np.arange(60) % 3)
    assert main(["train", *OPTS, "--dataset", str(data), "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.mark.parametrize("name", ["/tmp/evil", "../evil", "a.b", "keys", ""])
def test_hostile_name_in_an_edited_config_json(trained, tmp_path, capsys, name):
    """A run folder whose config.json was edited to a hostile modality name: refused before anything is
    built or written (evaluate would otherwise write <cache>/<name>.json)."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    saved = json.loads((run / "config.json").read_text())
    saved["modalities"][0]["name"] = name
    (run / "config.json").write_text(json.dumps(saved))
    before = _tree(tmp_path)
    for argv in (["sample", str(run)], ["evaluate", str(run), "--metrics", "coherence", "--classifier-epochs", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "modalities[0].name" in err, err
    assert _tree(tmp_path) == before
