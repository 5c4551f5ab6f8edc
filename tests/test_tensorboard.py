"""`--set log=tensorboard` (issue 14): scalars and sample grids per epoch in RUN/tb/, read back with
TensorBoard's own event reader (skipped where the optional extra mmvae[tensorboard] is not installed)."""
from __future__ import annotations

import json
import sys

import pytest

from mmvae.cli import main

ARGS = ["train", "--dataset", "toy", "--set", "data.n=300", "--epochs", "2", "--batch-size", "64",
        "--latent-dim", "4", "--set", "hidden=16"]


def test_unknown_logger_and_missing_package_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert main([*ARGS, "--set", "log=wandb", "--out", str(tmp_path / "a")]) == 2
    assert "log='wandb' is unknown: use text or tensorboard" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)     # as if the extra were absent
    assert main([*ARGS, "--set", "log=tensorboard", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'mmvae[tensorboard]'" in err


def test_tensorboard_events_hold_every_epoch_scalar_and_the_sample_grids(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main([*ARGS, "--set", "log=tensorboard", "--out", str(run)]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    for key in ("train_loss", "val_loss", "beta", "lr"):
        got = [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")]
        want = [(r["step"], r[key]) for r in records]
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert all(abs(g - w) <= 1e-5 * max(1.0, abs(w)) for (_, g), (_, w) in zip(got, want)), key
    assert "samples" in tags["images"]
    images = events.Images("samples")
    assert [im.step for im in images] == [r["step"] for r in records]
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and images[0].width > 100
