"""Checksums of checkpoint files (issue 12, item 2): written with every checkpoint, verified on --resume,
evaluate and sample; a kill between any two writes never yields a false "damaged" verdict; damage is
named (exit 2) or, on --resume, recovered from the most recent intact checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import SMALL_RUN, copy_run, train_small
from mmvae.cli import main
from mmvae.train import integrity
from mmvae.train.integrity import MANIFEST, DamagedFile, commit, read_manifest, sha256, verify

SMALL = SMALL_RUN
CHECKPOINT_FILES = ("model.safetensors", "best.safetensors", "training_state.pt")


def _flip(path: Path, count: int = 64, seed: int = 0) -> None:
    b = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.integers(len(b) // 4, 3 * len(b) // 4, size=count):
        b[pos] ^= 0xFF
    path.write_bytes(bytes(b))


def _one_line(capsys, code_expected: int, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == code_expected, err
    lines = [x for x in err.splitlines() if not x.startswith("note: ")]
    if code_expected == 2:
        assert len(lines) == 1 and lines[0].startswith("mmvae: error: "), err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory.mktemp("integrity"))


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return copy_run(trained, tmp_path)


def test_every_checkpoint_file_is_in_the_manifest(trained):
    files = read_manifest(trained)
    assert set(CHECKPOINT_FILES) <= set(files)
    for name in CHECKPOINT_FILES:
        assert files[name] == [sha256(trained / name)]
        assert verify(trained / name)


# ----------------------------------------------------------------- a kill between any two writes
def _writer(text: str):
    return lambda tmp: Path(tmp).write_text(text)


def test_a_crash_at_any_step_of_a_commit_never_looks_like_damage(tmp_path, monkeypatch):
    """Interrupt a two-file commit after each of its filesystem steps (temporary writes, manifest
    writes, renames): every file is then old or new, and each one verifies."""
    folder = tmp_path / "f"
    folder.mkdir()
    commit(folder, {"a": _writer("old a"), "b": _writer("old b")})
    steps = {"n": 0, "stop": None}
    real = {"write_temp": integrity.write_temp, "replace": integrity.replace, "manifest": integrity._write_manifest}

    def counted(name):
        def wrapper(*args, **kwargs):
            steps["n"] += 1
            if steps["n"] == steps["stop"]:
                raise KeyboardInterrupt("killed")      # what a kill leaves: the steps before this one
            return real[name](*args, **kwargs)
        return wrapper

    monkeypatch.setattr(integrity, "write_temp", counted("write_temp"))
    monkeypatch.setattr(integrity, "replace", counted("replace"))
    monkeypatch.setattr(integrity, "_write_manifest", counted("manifest"))
    steps["stop"] = 10 ** 6
    commit(folder, {"a": _writer("probe"), "b": _writer("probe")})
    total = steps["n"]             # 2 temporaries + manifest + 2 renames + manifest = 6
    assert total == 6
    seen = set()
    for stop in range(1, total + 1):
        steps["stop"] = None
        commit(folder, {"a": _writer("old a"), "b": _writer("old b")})
        steps.update(n=0, stop=stop)
        with pytest.raises(KeyboardInterrupt):
            commit(folder, {"a": _writer(f"new a {stop}"), "b": _writer(f"new b {stop}")})
        steps["stop"] = None
        for name in ("a", "b"):
            assert verify(folder / name), (stop, name)
            seen.add((folder / name).read_text().split(" ")[0])
    assert seen == {"old", "new"}      # the crashes landed before, between and after the renames
    monkeypatch.undo()
    commit(folder, {"a": _writer("final"), "b": _writer("final")})
    assert read_manifest(folder) == {n: [sha256(folder / n)] for n in ("a", "b")}


def test_a_manifest_left_accepting_two_versions_still_rejects_a_third(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    commit(folder, {"a": _writer("one")})
    (folder / "a").write_text("tampered")
    with pytest.raises(DamagedFile, match="is damaged"):
        verify(folder / "a")


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_during_training_never_reports_damage(tmp_path):
    """Kill a run (a checkpoint every epoch of 6 steps) at a random moment, then its resumed slice: no
    verdict of damage, and the run completes."""
    out = tmp_path / "run"
    argv = ["train", "--dataset", "toy", "--set", "data.n=400", "--epochs", "30", "--batch-size", "64",
            "--set", "hidden=16", "--latent-dim", "3", "--device", "cpu", "--seed", "1", "--out", str(out),
            "--set", "checkpoint_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(0)
    for i in range(2):
        cmd = [sys.executable, "-m", "mmvae", *argv] + (["--resume"] if i else [])
        lines = _lines(out / "metrics.jsonl")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 90
        # once this slice trains (a first epoch record, or the resume event), kill at a random moment
        while time.time() < deadline and proc.poll() is None and _lines(out / "metrics.jsonl") <= lines:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 0.5)))
        proc.send_signal(signal.SIGKILL)
        err = proc.communicate(timeout=30)[1].decode()
        assert proc.returncode == -signal.SIGKILL, f"slice {i} ended before the kill: {err}"
        assert "damaged" not in err and "Traceback" not in err, err
        for name in ("model.safetensors", "training_state.pt"):
            if name in (read_manifest(out) or {}):
                assert verify(out / name, say=lambda t: None) is True
    done = subprocess.run([sys.executable, "-m", "mmvae", *argv, "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "damaged" not in done.stderr, done.stderr
    assert torch.load(out / "training_state.pt", weights_only=True)["progress"]["epoch"] == 30
    resumes = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert len(resumes) == 2


# ------------------------------------------------------------------ damage found by evaluate / sample
@pytest.mark.parametrize("victim", ["model.safetensors", "best.safetensors"])
def test_bit_damage_is_named_by_sample_and_evaluate(run, capsys, victim):
    _flip(run / victim)
    load_file(str(run / victim))                      # still loads: only the checksum finds it
    which = ["--which", "best"] if victim == "best.safetensors" else []
    _one_line(capsys, 2, ["evaluate", str(run), "--metrics", "likelihood", "--k", "2", "--rows", "5", *which],
              victim, "is damaged")
    if victim == "model.safetensors":
        _one_line(capsys, 2, ["sample", str(run), "--out", str(run.parent / "g.png")], victim, "is damaged")
        # the other checkpoint is intact and still usable
        _one_line(capsys, 0, ["evaluate", str(run), "--metrics", "likelihood", "--k", "2", "--rows", "5",
                              "--which", "best"])


def test_older_run_folder_without_manifest_is_accepted_with_a_note(run, capsys):
    (run / MANIFEST).unlink()
    err = _one_line(capsys, 0, ["sample", str(run), "--out", str(run.parent / "g.png")], "checksums.json is missing")
    assert err.count("checksums.json") == 1
    # --resume works and writes a manifest from then on (best.safetensors, not rewritten, stays unlisted)
    _one_line(capsys, 0, ["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"])
    files = read_manifest(run)
    assert files["model.safetensors"] == [sha256(run / "model.safetensors")]
    assert files["training_state.pt"] == [sha256(run / "training_state.pt")]


def test_damaged_manifest_is_noted_and_rewritten(run, capsys):
    (run / MANIFEST).write_bytes(b"\xff\xfe not json")
    _one_line(capsys, 0, ["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"], "checksums.json is unreadable")
    assert json.loads((run / MANIFEST).read_text())["format"] == 1
