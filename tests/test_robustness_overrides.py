"""--resume overrides (issue 12, item 5): --lr, --epochs, --max-steps, --time-limit and safe --set keys are
applied, recorded as events in metrics.jsonl and kept in config.json; keys that would change the model's
shape or its data are refused with exit 2 and nothing written."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from helpers import copy_run
from mmvae.cli import main

BASE = ["train", "--dataset", "toy", "--set", "data.n=200", "--batch-size", "16", "--set", "hidden=8",
        "--latent-dim", "2", "--device", "cpu", "--model", "mopoe"]


def _events(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r.get("event") == "resume"]


def _state(run: Path) -> dict:
    return torch.load(run / "training_state.pt", weights_only=True)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> Path:
    """A run of 3 epochs cut at step 10 (epoch 1 of 12 steps not yet done)."""
    out = tmp_path_factory.mktemp("overrides") / "run"
    assert main([*BASE, "--epochs", "3", "--out", str(out), "--max-steps", "10"]) == 0
    return out


@pytest.fixture
def run(cut, tmp_path) -> Path:
    return copy_run(cut, tmp_path)


def test_lr_override_is_applied_recorded_and_kept(run, capsys):
    assert main(["train", "--resume", "--out", str(run), "--lr", "0.0002", "--max-steps", "14"]) == 0
    assert "--resume overrides lr 0.001 -> 0.0002" in capsys.readouterr().err
    assert all(g["lr"] == 0.0002 for g in _state(run)["optimizer"]["param_groups"])
    event = _events(run)[-1]
    assert event["overrides"] == {"lr": [0.001, 0.0002]} and event["step"] == 10 and event["max_steps"] == 14
    assert json.loads((run / "config.json").read_text())["config"]["lr"] == 0.0002
    # a later plain --resume continues with the new rate and records no override
    assert main(["train", "--resume", "--out", str(run)]) == 0
    assert all(g["lr"] == 0.0002 for g in _state(run)["optimizer"]["param_groups"])
    assert "overrides" not in _events(run)[-1]
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"event"' not in x]
    assert [r["lr"] for r in recs] == [0.001, 0.0002, 0.0002]


def test_epochs_extension_survives_a_later_plain_resume(run):
    assert main(["train", "--resume", "--out", str(run), "--epochs", "4", "--max-steps", "30"]) == 0
    assert main(["train", "--resume", "--out", str(run)]) == 0        # no --epochs: the saved 4
    assert _state(run)["progress"]["epoch"] == 4


def test_safe_set_keys_are_recorded(run):
    argv = ["train", "--resume", "--out", str(run), "--set", "beta=0.5", "--set", "grad_clip=5",
            "--set", "max_rollbacks=7", "--time-limit", "600"]
    assert main(argv) == 0
    event = _events(run)[-1]
    assert event["overrides"] == {"beta": [1.0, 0.5], "grad_clip": [0.0, 5.0], "max_rollbacks": [3, 7]}
    assert event["time_limit"] == 600.0
    saved = json.loads((run / "config.json").read_text())["config"]
    assert (saved["beta"], saved["grad_clip"], saved["max_rollbacks"], saved["time_limit"]) == (0.5, 5.0, 7, 0.0)


def test_repeating_the_original_command_is_not_an_override(run):
    assert main([*BASE, "--epochs", "3", "--out", str(run), "--resume"]) == 0
    assert "overrides" not in _events(run)[-1]


@pytest.mark.parametrize("extra, key", [
    (["--latent-dim", "3"], "latent_dim"), (["--set", "hidden=9"], "hidden"), (["--model", "mvae"], "model"),
    (["--dataset", "mnist-label"], "dataset"), (["--set", "data.n=300"], "data.n"),
    (["--set", "likelihood.a=laplace"], "likelihood.a"), (["--set", "posterior=laplace"], "posterior"),
    (["--set", "modalities=[a]"], "modalities"),
])
def test_shape_changing_keys_are_refused(run, capsys, extra, key):
    before = _fingerprint(run)
    assert main(["train", "--resume", "--out", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot change {key}" in err and "shape" in err, err
    assert _fingerprint(run) == before


@pytest.mark.parametrize("extra, key", [(["--batch-size", "8"], "batch_size"), (["--seed", "3"], "seed"),
                                        (["--set", "val_fraction=0.2"], "val_fraction"),
                                        (["--set", "amsgrad=true"], "amsgrad"),
                                        (["--set", "paired_fraction=0.5"], "paired_fraction")])
def test_data_and_order_keys_are_refused(run, capsys, extra, key):
    before = _fingerprint(run)
    assert main(["train", "--resume", "--out", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot change {key}" in err and "only lr, epochs" in err, err
    assert _fingerprint(run) == before
