"""Each defect of issue 12's audit ("Why", items 4-6): it exits 2 with one line naming the problem and
the fix, or it works."""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmvae.cli import main
from mmvae.errors import UserError
from mmvae.train.checkpoint import remove_stale_temporaries

OPTS = ["--epochs", "1", "--batch-size", "16", "--set", "hidden=8", "--latent-dim", "2", "--device", "cpu"]
EVAL = ["--metrics", "coherence,likelihood", "--k", "2", "--rows", "5", "--classifier-epochs", "1",
        "--joint-samples", "50", "--quiet"]


def _run(capsys, code: int, argv: list[str], *needles: str) -> str:
    got = main(argv)
    err = capsys.readouterr().err.strip()
    assert got == code, err
    if code == 2:
        lines = [x for x in err.splitlines() if not x.startswith("note: ")]
        assert len(lines) == 1 and lines[0].startswith("mmvae: error: "), err
    for n in needles:
        assert n in err, err
    return err


def _arrays(n=60, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"a": rng.random((n, 4)).astype(np.float32), "b": rng.random((n, 3)).astype(np.float32),
            "label": np.arange(n) % 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cases")
    np.savez(root / "d.npz", **_arrays())
    assert main(["train", *OPTS, "--dataset", str(root / "d.npz"), "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, with its own copy of the data (so tests may change it)."""
    shutil.copy(trained.parent / "d.npz", tmp_path / "d.npz")
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["config"]["dataset"] = str(tmp_path / "d.npz")
    (copy / "config.json").write_text(json.dumps(saved))
    return copy


# ----------------------------------------------------------------------------- read-only places
def _read_only(monkeypatch, *modules_and_names):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    for module, name in modules_and_names:
        monkeypatch.setattr(module, name, refuse)


def test_sample_into_a_read_only_run_folder(run, capsys, monkeypatch):
    from PIL import Image       # the sample grid's PNG writer

    _read_only(monkeypatch, (Image.Image, "save"))
    _run(capsys, 2, ["sample", str(run)], "cannot write", "Read-only file system", "--out")


def test_evaluate_in_a_read_only_run_folder(run, capsys, monkeypatch):
    """Refused with one line (evaluate writes only into RUN/evaluation/): evaluate a writable copy."""
    from mmvae.train import lock

    monkeypatch.setattr(lock.os, "open", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    _run(capsys, 2, ["evaluate", str(run), *EVAL], "cannot write the evaluation", "Read-only", "copy the run folder")
    monkeypatch.undo()
    _read_only(monkeypatch, (Path, "mkdir"))
    shutil.rmtree(run / "evaluation", ignore_errors=True)
    _run(capsys, 2, ["evaluate", str(run), *EVAL], "cannot write the evaluation", "Read-only")


def test_read_only_data_cache(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("MMVAE_DATA", str(blocker / "cache"))
    _run(capsys, 2, ["train", *OPTS, "--dataset", "svhn", "--out", str(tmp_path / "r")],
         "cannot be written", "MMVAE_DATA")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------ damaged evaluation files
def test_damaged_metrics_json_is_set_aside_and_rebuilt(run, capsys):
    _run(capsys, 0, ["evaluate", str(run), *EVAL])
    (run / "evaluation" / "metrics.json").write_bytes(b"\x00\xff{not json")
    err = _run(capsys, 0, ["evaluate", str(run), *EVAL], "metrics.json was damaged", "metrics.json.damaged")
    assert json.loads((run / "evaluation" / "metrics.json").read_text())["cross_coherence"]
    assert "damaged" not in _run(capsys, 0, ["evaluate", str(run), *EVAL]), err   # never repeats


@pytest.mark.parametrize("damage", ["card garbage", "card other", "weights flipped", "weights cut"])
def test_damaged_classifier_cache_is_retrained(run, capsys, damage):
    _run(capsys, 0, ["evaluate", str(run), *EVAL])
    cache = run / "evaluation" / "classifiers"
    if damage == "card garbage":
        (cache / "a.json").write_bytes(b"\xff\xfe garbage")
    elif damage == "card other":
        (cache / "a.json").write_text(json.dumps([1, 2, 3]))
    else:
        b = bytearray((cache / "a.safetensors").read_bytes())
        if damage == "weights cut":
            b = b[: len(b) // 2]
        else:
            b[len(b) // 2: len(b) // 2 + 64] = bytes(64)
        (cache / "a.safetensors").write_bytes(bytes(b))
    err = main(["evaluate", str(run), *EVAL[:-1]])
    out = capsys.readouterr()
    assert err == 0, out.err
    if damage != "card other":    # another card is a changed setting, retrained without a note
        assert "cached classifier" in out.out and "training it again" in out.out, out.out
    main(["evaluate", str(run), *EVAL[:-1]])
    assert "classifier a: cached" in capsys.readouterr().out        # repaired for good


# ------------------------------------------------------------------------------- config.json
CONFIG_EDITS = {
    "epochs as text": (lambda s: s["config"].update(epochs="abc"), "config.epochs"),
    "negative latent_dim": (lambda s: s["config"].update(latent_dim=-1), "config.latent_dim"),
    "fractional hidden": (lambda s: s["config"].update(hidden=1.5), "config.hidden"),
    "model as a number": (lambda s: s["config"].update(model=5), "config.model"),
    "unknown model": (lambda s: s["config"].update(model="nope"), "unknown model"),
    "likelihood as a list": (lambda s: s["config"].update(likelihood=[1]), "config.likelihood"),
    "config not an object": (lambda s: s.update(config=[1, 2]), "'config'"),
    "no modalities": (lambda s: s.pop("modalities"), "'modalities'"),
    "modality without name": (lambda s: s["modalities"][0].pop("name"), "modalities[0].name"),
    "shape as text": (lambda s: s["modalities"][0].update(shape="4"), "modalities[0].shape"),
    "zero shape": (lambda s: s["modalities"][0].update(shape=[0]), "modalities[0].shape"),
    "unknown kind": (lambda s: s["modalities"][1].update(kind="sound"), "modalities[1].kind"),
    "duplicate modality": (lambda s: s["modalities"].append(dict(s["modalities"][0])), "modalities[2].name"),
    "num_classes text": (lambda s: s.update(num_classes="3"), "num_classes"),
    "amp bool": (lambda s: s["config"].update(compile="yes"), "config.compile"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_EDITS))
def test_structurally_wrong_config_json(run, capsys, case):
    edit, needle = CONFIG_EDITS[case]
    saved = json.loads((run / "config.json").read_text())
    edit(saved)
    (run / "config.json").write_text(json.dumps(saved))
    for argv in (["sample", str(run)], ["evaluate", str(run), *EVAL],
                 ["train", "--resume", "--out", str(run)]):
        _run(capsys, 2, argv, needle)


# ------------------------------------------------------------------------------- metrics.jsonl
def test_non_utf8_bytes_in_metrics_jsonl_on_resume(run, capsys):
    metrics = run / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(b"\xff\xfe\x00 binary junk\n" + good + b'{"epoch": 9, "st')   # junk + a torn last line
    err = _run(capsys, 0, ["train", "--resume", "--out", str(run), "--epochs", "2"],
               "line 1", "metrics.jsonl.unreadable", "torn last line")
    assert (run / "metrics.jsonl.unreadable").read_bytes() == b"\xff\xfe\x00 binary junk\n"
    recs = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r.get("epoch") for r in recs if "event" not in r] == [1, 2], err       # nothing else lost


# ---------------------------------------------------------------------- data changed after training
@pytest.mark.parametrize("change", ["shape", "kind", "missing"])
def test_npz_changed_after_training(run, capsys, change):
    arrays = _arrays()
    if change == "shape":
        arrays["a"] = np.random.default_rng(1).random((60, 7)).astype(np.float32)
    elif change == "kind":
        arrays["b"] = np.arange(60) % 4
    else:
        arrays.pop("b")
        arrays["c"] = np.random.default_rng(1).random((60, 3)).astype(np.float32)
    np.savez(run.parent / "d.npz", **arrays)
    for argv in (["sample", str(run)], ["evaluate", str(run), *EVAL],
                 ["train", "--resume", "--out", str(run), "--epochs", "2"]):
        _run(capsys, 2, argv, "changed after training")


# ------------------------------------------------------------------------------ empty test split
def test_test_split_where_every_row_misses_a_modality(tmp_path, capsys):
    arrays = _arrays()
    arrays["split"] = (np.arange(60) % 5 == 0).astype(np.int64)
    arrays["mask_b"] = arrays["split"] == 0                   # b never observed in a test row
    np.savez(tmp_path / "d.npz", **arrays)
    _run(capsys, 2, ["train", *OPTS, "--dataset", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r")],
         "every test row misses", "'b'")
    assert not (tmp_path / "r").exists()


def test_empty_test_split_through_the_python_api(tmp_path):
    from mmvae.config import Config
    from mmvae.data.dataset import DatasetSplits, ModalitySpec, MultimodalDataset
    from mmvae.train.trainer import Trainer

    specs = {m: ModalitySpec(m, "vector", (3,), "normal") for m in "ab"}
    full = MultimodalDataset(specs, {m: torch.rand(30, 3) for m in specs})
    splits = DatasetSplits(full, full.subset(torch.arange(0)))
    cfg = Config(model="mopoe", dataset="x", epochs=1, batch_size=8, hidden=8, latent_dim=2, device="cpu",
                 out=str(tmp_path / "r"))
    with pytest.raises(UserError, match="test split is empty"):
        Trainer(cfg, splits=splits, show_progress=False)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- lesser
def test_max_steps_counts_all_steps_of_the_run(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["train", "--dataset", "toy", "--set", "data.n=200", "--batch-size", "16", "--set", "hidden=8",
            "--latent-dim", "2", "--device", "cpu", "--epochs", "3"]
    step = lambda: torch.load(out / "training_state.pt", weights_only=True)["progress"]["global_step"]  # noqa: E731
    _run(capsys, 0, [*base, "--out", str(out), "--max-steps", "7"])
    assert step() == 7
    _run(capsys, 0, ["train", "--resume", "--out", str(out), "--max-steps", "7"], "already at step 7")
    assert step() == 7
    _run(capsys, 0, ["train", "--resume", "--out", str(out), "--max-steps", "12"])
    assert step() == 12


@pytest.mark.parametrize("values", ["uint64 max", "1e12 floats"])
def test_huge_finite_values(tmp_path, capsys, values):
    arrays = _arrays()
    arrays["a"] = (np.full((60, 4), np.iinfo(np.uint64).max, np.uint64) if values == "uint64 max"
                   else np.full((60, 4), 1e12, np.float64))
    np.savez(tmp_path / "d.npz", **arrays)
    _run(capsys, 2, ["train", *OPTS, "--dataset", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r")],
         "'a'", "standardise")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [b"a,b,c\n1,2,3\n", os.urandom(256), b"", b"\x93NUMPY" + b"\0" * 100])
def test_not_an_npz_file(tmp_path, capsys, content):
    (tmp_path / "d.npz").write_bytes(content)
    err = _run(capsys, 2, ["train", *OPTS, "--dataset", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r")])
    assert "not an npz file" in err and "object" not in err and "pickle" not in err, err


class _Sneaky:
    pass


def test_cub_pickle_refusal_does_not_quote_torch(tmp_path):
    from mmvae.data.sources.cub import read_features

    path = tmp_path / "train.ft"
    torch.save({"features": torch.zeros(3, 4), "who": _Sneaky()}, path)
    with pytest.raises(UserError) as e:
        read_features(path)
    msg = str(e.value)
    assert "pickled Python objects" in msg and "weights_only" not in msg and "\n" not in msg, msg
    with open(tmp_path / "p.ft", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(UserError) as e:
        read_features(tmp_path / "p.ft")
    assert "weights_only" not in str(e.value)


def test_relative_dataset_path_works_from_another_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    np.savez(tmp_path / "work" / "d.npz", **_arrays())
    monkeypatch.chdir(tmp_path / "work")
    _run(capsys, 0, ["train", *OPTS, "--dataset", "d.npz", "--out", "run"])
    assert json.loads(Path("run/config.json").read_text())["config"]["dataset"] == str(tmp_path / "work" / "d.npz")
    monkeypatch.chdir(tmp_path / "elsewhere")
    _run(capsys, 0, ["evaluate", str(tmp_path / "work" / "run"), *EVAL])
    _run(capsys, 0, ["sample", str(tmp_path / "work" / "run"), "--out", "g.png"])
    # the relative path given again on --resume is the same dataset, not a change
    monkeypatch.chdir(tmp_path / "work")
    _run(capsys, 0, ["train", *OPTS, "--dataset", "d.npz", "--out", "run", "--resume", "--epochs", "2"])


@pytest.mark.parametrize("bad", ["nan data", "bad option", "unknown model"])
def test_bad_input_leaves_no_run_folder(tmp_path, capsys, bad):
    arrays = _arrays()
    extra = []
    if bad == "nan data":
        arrays["a"][3, 1] = np.nan
    elif bad == "bad option":
        extra = ["--set", "data.nonsense=1"]
    else:
        extra = ["--model", "nope"]
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "deep" / "r"
    _run(capsys, 2, ["train", *OPTS, "--dataset", str(tmp_path / "d.npz"), "--out", str(out), *extra])
    assert not out.exists()
    # an existing empty folder given as --out is left in place (it was not ours)
    out.mkdir(parents=True)
    _run(capsys, 2, ["train", *OPTS, "--dataset", str(tmp_path / "d.npz"), "--out", str(out), *extra])
    assert out.is_dir() and not list(out.iterdir())


def test_stale_temporaries_are_removed_at_start(run, capsys):
    import subprocess
    import sys

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = 2 ** 22 + 12345           # above the default pid_max: never a live process
        files = {f".tmp-{dead}-model.safetensors.x1": False, ".tmp-model.safetensors.old": False,
                 f".tmp-{live.pid}-model.safetensors.x2": True, "notes.tmp": True}
        for name in files:
            (run / name).write_bytes(b"partial")
        _run(capsys, 0, ["train", "--resume", "--out", str(run), "--epochs", "2"])
        for name, stays in files.items():
            assert (run / name).exists() == stays, name
        ev = run / "evaluation" / "classifiers"
        ev.mkdir(parents=True)
        (ev / f".tmp-{dead}-a.json.x").write_bytes(b"partial")
        (run / "evaluation" / f".tmp-{dead}-metrics.json.x").write_bytes(b"partial")
        _run(capsys, 0, ["evaluate", str(run), *EVAL])
        assert not list((run / "evaluation").rglob(f".tmp-{dead}-*"))
        assert remove_stale_temporaries(run) == []
    finally:
        live.kill()
        live.wait()
