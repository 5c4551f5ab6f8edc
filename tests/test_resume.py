"""Exact resume: a run cut anywhere (``--max-steps``, ``--time-limit``, SIGKILL) and continued with
``--resume`` ends with the weights and metrics of a run never interrupted (same seed, same steps)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmvae.cli import main

# 720 training rows of toy data, batch 32: 23 steps an epoch (the last one short), 3 epochs. Dropout-free MLPs, but every
# step draws Monte Carlo noise, so a resume that replayed the wrong noise would not match.
ARGS = ["train", "--dataset", "toy", "--set", "data.n=1000", "--batch-size", "32", "--set", "hidden=48",
        "--latent-dim", "4", "--device", "cpu", "--seed", "5", "--model", "mmvae", "--set", "k=2",
        "--set", "objective=iwae", "--epochs", "3"]


def _cli(*extra: str) -> list[str]:
    return [*ARGS, *extra]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _records(run: Path) -> list[dict]:
    """The training records (resume events, which only a resumed run has, left out)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds", None)
        if rec.get("event") != "resume":
            out.append(rec)
    return out


def _resume_events(run: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r.get("event") == "resume"]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs after resume"
    assert _records(a) == _records(b)
    assert torch.load(a / "training_state.pt", weights_only=True)["progress"] == \
        torch.load(b / "training_state.pt", weights_only=True)["progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(_cli("--out", str(out))) == 0
    return out


def test_max_steps_in_a_subprocess_then_resume(tmp_path, reference):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "mmvae", *_cli("--out", str(out), "--max-steps", "30")],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "stopped at step 30 (epoch 2, step 7)" in done.stderr
    assert (out / "samples.png").stat().st_size > 0      # a cut run shows its samples too (issue 14)
    # A second slice that is cut again, then the rest, each with the command the run printed: the
    # run's own settings (epochs, device, model...) come from its folder, the slice limit does not.
    assert f"continue with: mmvae train --resume --out {out}" in done.stderr
    assert main(["train", "--resume", "--out", str(out), "--max-steps", "50"]) == 0
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["progress"]["global_step"] == 50
    assert main(["train", "--resume", "--out", str(out)]) == 0
    _assert_same_run(reference, out)
    events = _resume_events(out)
    assert [(e["step"], e.get("max_steps")) for e in events] == [(30, 50), (50, None)]
    assert all(e["from"] == "training_state.pt" and "overrides" not in e for e in events)


def test_sigkill_at_an_arbitrary_moment_then_resume(tmp_path, reference):
    out = tmp_path / "run"
    every_epoch = ("--set", "checkpoint_every=0")    # a checkpoint at every epoch end, so the kill may land in one
    proc = subprocess.Popen([sys.executable, "-m", "mmvae", *_cli("--out", str(out), *every_epoch)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    # Kill once the first epoch is logged: wherever that lands (even between the metrics line and
    # the checkpoint, or inside a write), resuming from the last checkpoint must give the same run.
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["progress"]["epoch"] < 3
    # What a kill can leave behind: a torn last metrics line and a temporary file of a half-done write.
    with open(metrics, "a") as f:
        f.write('{"epoch": 9, "st')
    (out / ".tmp-model.safetensors.abc123").write_bytes(b"half a file")
    assert main(_cli("--out", str(out), "--resume", *every_epoch)) == 0
    assert not list(out.glob(".tmp-*"))
    _assert_same_run(reference, out)


def test_time_limit_flag_cuts_the_run_and_resume_completes_it(tmp_path, reference):
    out = tmp_path / "run"
    assert main(_cli("--out", str(out), "--time-limit", "1e-9")) == 0
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["progress"]["global_step"] == 1      # the limit is checked after each step
    assert main(_cli("--out", str(out), "--resume")) == 0
    _assert_same_run(reference, out)


def test_resume_needs_an_existing_run_and_a_new_run_never_overwrites_one(tmp_path, reference, capsys):
    assert main(_cli("--out", str(tmp_path / "nothing"), "--resume")) == 2
    assert "not a run folder" in capsys.readouterr().err
    before = (reference / "model.safetensors").read_bytes()
    assert main(_cli("--out", str(reference))) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (reference / "model.safetensors").read_bytes() == before
