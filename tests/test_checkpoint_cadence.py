"""The checkpoint cadence (``checkpoint_every``): checkpoints go to disk at most every N seconds (at an
epoch's end) and always at the end, on a cut, on divergence and on Ctrl-C / SIGTERM; how often they are
written never changes the run (same weights, best weights, state and metrics), and resume stays exact."""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.registry import load_dataset
from mmvae.models.registry import build_model
from mmvae.train import integrity
from mmvae.train.trainer import Trainer

trainer_module = importlib.import_module("mmvae.train.trainer")  # mmvae.train is also a function name

STEPS = 9   # toy n=300: 216 training rows after validation, batch 24


def _cfg(out: Path, **kw) -> Config:
    base = dict(model="mopoe", dataset="toy", data={"n": 300}, epochs=4, batch_size=24, hidden=16, latent_dim=3,
                device="cpu", lr=2e-3, seed=1, out=str(out))
    return Config(**{**base, **kw})


def _commits(monkeypatch, trainer_ref: dict) -> list[tuple[int, list[str]]]:
    """Record every commit of the trainer as (epoch of the state in memory, file names)."""
    seen, real = [], integrity.commit

    def commit(folder, writers):
        t = trainer_ref.get("t")
        seen.append((t.good["progress"]["epoch"] if t is not None and hasattr(t, "good") else None,
                     sorted(writers)))
        return real(folder, writers)

    monkeypatch.setattr(integrity, "commit", commit)
    return seen


def _fit(cfg: Config, monkeypatch, now=None) -> list:
    ref = {}
    seen = _commits(monkeypatch, ref)
    t = ref["t"] = Trainer(cfg, show_progress=False)
    if now is not None:
        monkeypatch.setattr(trainer_module, "_now", lambda: now(t))
        t.saved_at = now(t)
    t.fit()
    monkeypatch.undo()
    return [c for c in seen if c[1] != ["observed_mask.pt"]]


def _records(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in recs if r.get("event") != "resume"]


def _meta(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def _assert_same_files(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "best.safetensors"):
        wa, wb = load_file(a / name), load_file(b / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
        assert _meta(a / name) == _meta(b / name), name
    sa, sb = (torch.load(r / "training_state.pt", weights_only=True) for r in (a, b))
    assert sa["progress"] == sb["progress"]
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert _records(a) == _records(b)
    for name in ("model.safetensors", "best.safetensors", "training_state.pt"):
        assert integrity.verify(b / name)


def test_every_epoch_or_only_at_the_end_gives_the_same_run(tmp_path, monkeypatch):
    every = _fit(_cfg(tmp_path / "every", checkpoint_every=0), monkeypatch)
    # one checkpoint at step 0, then one per epoch end; best weights ride with the checkpoint of their epoch
    assert [e for e, _ in every] == [0, 1, 2, 3, 4]
    assert all({"training_state.pt", "model.safetensors"} <= set(files) for _, files in every)
    assert "best.safetensors" in every[1][1]
    rare = _fit(_cfg(tmp_path / "rare", checkpoint_every=1e9), monkeypatch)
    assert [e for e, _ in rare] == [0, 4]                          # step 0 and the end only
    assert rare[-1][1] == ["best.safetensors", "model.safetensors", "training_state.pt"]
    _assert_same_files(tmp_path / "every", tmp_path / "rare")
    best = json.loads(_meta(tmp_path / "rare" / "best.safetensors")["epoch"])
    val = [r["val_loss"] for r in _records(tmp_path / "rare")]
    assert best == 1 + val.index(min(val))                        # the weights of the best epoch, not the last


def test_a_checkpoint_is_written_at_the_first_epoch_end_the_cadence_has_passed(tmp_path, monkeypatch):
    # a clock that moves 4 s per epoch; checkpoint_every=10: written after epochs 3 and 6, and at the end (8)
    seen = _fit(_cfg(tmp_path / "run", epochs=8, checkpoint_every=10), monkeypatch,
                now=lambda t: 4.0 * t.progress.epoch)
    assert [e for e, _ in seen] == [0, 3, 6, 8]


def test_ctrl_c_saves_the_last_epoch_end_and_resume_is_exact(tmp_path, capsys):
    ref = tmp_path / "ref"
    Trainer(_cfg(ref, checkpoint_every=1e9), show_progress=False).fit()
    out = tmp_path / "run"
    cfg = _cfg(out, checkpoint_every=1e9)
    torch.manual_seed(cfg.seed)   # as the trainer does before it builds its model
    model = build_model(load_dataset("toy", **cfg.data).specs, cfg)
    clean, calls = model.loss, {"n": 0}

    def loss(batch, beta=None):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 2 * STEPS + 4:        # 4th step of epoch 3
                raise KeyboardInterrupt
        return clean(batch, beta)

    model.loss = loss
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, model=model, show_progress=False).fit()
    assert f"saved the state of step {2 * STEPS} (end of epoch 2); continue with: mmvae train --resume --out {out}" \
        in capsys.readouterr().err
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["progress"]["epoch"] == 2 and state["progress"]["global_step"] == 2 * STEPS
    assert json.loads(_meta(out / "best.safetensors")["epoch"]) <= 2
    assert main(["train", "--resume", "--out", str(out)]) == 0
    _assert_same_files(ref, out)


def test_sigterm_saves_the_last_epoch_end_exits_143_and_resume_is_exact(tmp_path):
    args = ["train", "--dataset", "toy", "--set", "data.n=300", "--batch-size", "24", "--set", "hidden=16",
            "--latent-dim", "3", "--device", "cpu", "--seed", "2", "--set", "checkpoint_every=1e9"]
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmvae", *args, "--epochs", "500", "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics, deadline = out / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        # epoch 3's line is logged after epoch 2's end became the in-memory rollback point (epoch 2's own
        # line comes just before its snapshot: signalling then would leave epoch 1 as the last epoch end)
        if metrics.exists() and metrics.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 143, err
    assert "mmvae: terminated (SIGTERM)" in err and "saved the state of step" in err, err
    epoch = torch.load(out / "training_state.pt", weights_only=True)["progress"]["epoch"]
    assert 2 <= epoch < 500                     # the last epoch end, not the step-0 checkpoint
    # finish two epochs later (--epochs is a safe override), as a run trained that long from the start
    assert main([*args, "--out", str(out), "--resume", "--epochs", str(epoch + 2)]) == 0
    assert main([*args, "--out", str(tmp_path / "ref"), "--epochs", str(epoch + 2)]) == 0
    _assert_same_files(tmp_path / "ref", out)


def test_a_restored_rollback_point_is_not_changed_by_the_steps_after_it(tmp_path):
    t = Trainer(_cfg(tmp_path / "run"), show_progress=False)
    t.started = time.time()
    for index in list(t._global_batches(0, 0))[:2]:
        t._step(index, 1.0)
    t._checkpoint(save=False)
    before = {k: v.clone() for k, v in t.good["optimizer"]["state"][0].items()}
    t._restore(t.good)
    for index in list(t._global_batches(0, 0))[2:4]:
        t._step(index, 1.0)
    after = t.good["optimizer"]["state"][0]
    assert all(torch.equal(before[k], after[k]) for k in before)   # written later, so it must not drift


def test_checkpoint_every_must_be_seconds(tmp_path, capsys):
    assert main(["train", "--dataset", "toy", "--epochs", "1", "--set", "checkpoint_every=-1",
                 "--out", str(tmp_path / "run")]) == 2
    assert "checkpoint_every must be a number of seconds >= 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
