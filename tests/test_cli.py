"""The CLI contract (issue 2 item 5): every registered model trains on polymnist, mnist-label and an npz
file and writes a complete run folder; `mmvae sample` works; user errors exit 2 with one line."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmvae.cli import main
from mmvae.models.registry import MODELS

RUN_FILES = ("config.json", "model.safetensors", "training_state.pt", "metrics.jsonl", "samples.png")
FAST = ["--epochs", "1", "--batch-size", "32", "--latent-dim", "4", "--set", "hidden=32"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A user file: a uint8 image modality, an integer class modality, labels and a split."""
    rng = np.random.default_rng(0)
    n = 80
    y = rng.integers(0, 4, n)
    path = tmp_path_factory.mktemp("data") / "mine.npz"
    np.savez(path, img=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), cls=y, label=y,
             split=(np.arange(n) >= 70).astype(np.int64))
    return str(path)


def _dataset_args(dataset: str, model: str, npz: str) -> list[str]:
    """Small data; a one-modality model on multimodal data takes the first modality or the one named."""
    if dataset == "polymnist":
        return ["--dataset", "polymnist", "--set", "data.n=100", "--set", "data.modalities=2"]
    if dataset == "mnist-label":
        return ["--dataset", "mnist-label", "--set", "data.n=100"]
    return ["--dataset", npz] + (["--set", "modalities=cls"] if model == "vae" else [])


def _registered_models() -> list[str]:
    from mmvae.models import builtin  # noqa: F401  (models defined in their own modules)

    return sorted(MODELS)


@pytest.mark.parametrize("dataset", ["polymnist", "mnist-label", "npz"])
@pytest.mark.parametrize("model", _registered_models())
def test_every_model_trains_from_the_cli(tmp_path, npz, capsys, model, dataset):
    out = tmp_path / "run"
    rc = main(["train", "--model", model, *_dataset_args(dataset, model, npz), *FAST, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["model"] == model
    if model == "vae":
        first = {"polymnist": "m0", "mnist-label": "image", "npz": "cls"}[dataset]
        assert [s["name"] for s in saved["modalities"]] == [first]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r and "event" not in r]
    assert len(epochs) == 1 and np.isfinite(epochs[0]["train_loss"])
    if dataset == "polymnist":                     # sampling a finished run, into another file
        rc = main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "more.png")])
        assert rc == 0 and (tmp_path / "more.png").stat().st_size > 0


@pytest.mark.parametrize("dataset", ["polymnist", "mnist-label"])
@pytest.mark.parametrize("model", _registered_models())
def test_every_model_trains_under_bf16_autocast(tmp_path, npz, capsys, model, dataset):
    """amp=bf16 (and amp=auto where the CPU has bf16): every model's loss runs under autocast, on fully
    and partly observed rows, with a finite float32 loss and float32 weights."""
    out = tmp_path / "run"
    partial = [] if model in ("vae", "cvae") else ["--set", "paired_fraction=0.5"]
    args = ["train", "--model", model, *_dataset_args(dataset, model, npz), *FAST, "--set", "amp=bf16",
            "--set", "max_steps=3", "--out", str(out)]
    rc = main(args + partial)
    if rc == 2 and "cannot train on rows with missing modalities" in capsys.readouterr().err:
        rc = main(args)   # a model that needs complete rows (jmvae, jnf)
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(r.get("train_loss", np.nan)) for r in records)
    assert json.loads((out / "config.json").read_text())["config"]["amp"] == "bf16"


@pytest.mark.parametrize("model,objective", [("vae", "iwae"), ("vae", "dreg"), ("mmvae", "iwae"), ("mmvae", "dreg"),
                                             ("mmvae", "dreg-authors"), ("mopoe", "iwae"), ("mvae", "dreg")])
def test_estimators_train_under_bf16_autocast(tmp_path, npz, capsys, model, objective):
    """The importance-weighted estimators (DReG's gradient hook included) under amp=bf16, K=3."""
    out = tmp_path / "run"
    rc = main(["train", "--model", model, *_dataset_args("mnist-label", model, npz), *FAST, "--set", "amp=bf16",
               "--set", f"objective={objective}", "--set", "k=3", "--set", "max_steps=3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(r.get("train_loss", np.nan)) for r in records)


def _one_line_error(capsys, argv, match: str) -> None:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("mmvae: error:"), err
    assert match in err, err


def test_user_errors_exit_2_with_one_line(tmp_path, npz, capsys):
    toy = ["--dataset", "toy", "--set", "data.n=60", *FAST]
    _one_line_error(capsys, ["train", "--model", "nope", *toy, "--out", str(tmp_path / "a")], "unknown model")
    _one_line_error(capsys, ["train", "--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "b")],
                    "does not exist")
    empty = tmp_path / "labels_only.npz"
    np.savez(empty, label=np.arange(10))
    _one_line_error(capsys, ["train", "--dataset", str(empty), "--out", str(tmp_path / "c")], "no modality arrays")
    # shapes no network fits: a multimodal model given one modality, a modality with no values per sample
    one = tmp_path / "one.npz"
    np.savez(one, x=np.zeros((10, 3), np.float32))
    for model in ("mvae", "mmvae", "mopoe"):
        _one_line_error(capsys, ["train", "--model", model, "--dataset", str(one), "--out", str(tmp_path / model)],
                        "needs at least 2 modalities")
    hollow = tmp_path / "hollow.npz"
    np.savez(hollow, x=np.zeros((10, 0), np.float32), y=np.zeros((10, 2), np.float32))
    _one_line_error(capsys, ["train", "--dataset", str(hollow), "--out", str(tmp_path / "d")], "no network fits")
    _one_line_error(capsys, ["train", "--model", "vae", *toy, "--set", "modalities=z", "--out", str(tmp_path / "e")],
                    "not in the data")
    # a folder that is not a run
    (tmp_path / "not_a_run").mkdir()
    _one_line_error(capsys, ["sample", str(tmp_path / "not_a_run")], "not a run folder")
    _one_line_error(capsys, ["sample", str(tmp_path / "nowhere")], "not a run folder")
    # an existing run folder without --resume, then --resume of a folder that is not a run
    run = tmp_path / "run"
    assert main(["train", "--model", "mopoe", *toy, "--out", str(run)]) == 0
    capsys.readouterr()
    _one_line_error(capsys, ["train", "--model", "mopoe", *toy, "--out", str(run)], "--resume")
    _one_line_error(capsys, ["train", "--resume", "--out", str(tmp_path / "not_a_run")], "not a run folder")
    _one_line_error(capsys, ["train", "--resume"], "--out")
    _one_line_error(capsys, ["sample", str(run), "--n", "0"], "--n")
    _one_line_error(capsys, ["sample", str(run), "--out", str(tmp_path / "no" / "dir.png")], "does not exist")
    # options that would otherwise be ignored or crash deep inside: each named in one line
    bad_options = [(["--set", "objective=nope"], "objective"), (["--set", "epochs=many"], "epochs"),
                   (["--epochs", "0"], "epochs"), (["--set", "hidden=32.5"], "whole number"),
                   (["--set", "likelihood=bernoulli"], "likelihood.<key>"), (["--set", "kl=exact"], "kl"),
                   (["--set", "data.modalites=2"], "modalites"), (["--set", "posterior=laplace"], "posterior"),
                   (["--model", "mvae", "--set", "posterior=laplace"], "Gaussian"),
                   (["--set", "likelihood.a=poisson"], "poisson"), (["--set", "weights.z=2"], "unknown modalities"),
                   (["--set", "beta=-1"], "beta")]
    for i, (args, match) in enumerate(bad_options):
        _one_line_error(capsys, ["train", *toy, *args, "--out", str(tmp_path / f"opt{i}")], match)


def test_models_and_datasets_list(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in _registered_models():
        assert any(line.startswith(name) for line in out.splitlines())
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("polymnist", "mnist-label", "toy"):
        line = next(ln for ln in lines if ln.startswith(name))
        assert "ready" in line or "missing" in line


def test_console_script_exit_code(tmp_path):
    """The real process (one start of Python, it costs seconds): exit 2 and one line on stderr, no traceback."""
    bad = subprocess.run([sys.executable, "-m", "mmvae", "sample", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("mmvae: error:")
