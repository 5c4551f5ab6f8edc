"""One writer per run folder (issue 12, item 3): a second `train` (new or --resume) on a folder in use
exits 2 naming the holder's pid, `evaluate` locks RUN/evaluation/, and the lock of a dead process is
taken over."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import SMALL_RUN, train_small
from mmvae.cli import main
from mmvae.errors import UserError
from mmvae.train.lock import LOCK, FolderLock

SMALL = SMALL_RUN
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and err.startswith("mmvae: error: "), err
    return err


def test_lock_is_exclusive_and_released(tmp_path):
    with FolderLock(tmp_path, "train"):
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(UserError, match=f"in use by another mmvae train \\(pid {os.getpid()}\\)"):
            FolderLock(tmp_path, "train").acquire()
    assert not (tmp_path / LOCK).exists()        # removed when released
    with FolderLock(tmp_path):                    # and free again
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from mmvae.train.lock import FolderLock
        lock = FolderLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"locked"
    with pytest.raises(UserError, match=f"pid {proc.pid}"):
        FolderLock(tmp_path).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert (tmp_path / LOCK).read_text().strip() == str(proc.pid)   # the stale file stays ...
    with FolderLock(tmp_path):                                        # ... and is taken over
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory.mktemp("lock"))


def test_second_train_on_a_busy_run_folder(tmp_path, capsys):
    """A long run in a subprocess: a new train and a --resume into its folder both exit 2 naming its pid,
    and neither touches the running run's files."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mmvae", "train", *SMALL, "--epochs", "500", "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (out / "config.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        err = _error(capsys, ["train", *SMALL, "--out", str(out)])
        assert f"pid {proc.pid}" in err and "in use" in err
        err = _error(capsys, ["train", *SMALL, "--epochs", "500", "--out", str(out), "--resume"])
        assert f"pid {proc.pid}" in err
        assert out.exists() and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    # the killed run's lock is stale now: --resume takes it over and continues
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    assert not (out / LOCK).exists()


def test_evaluate_locks_its_evaluation_folder(finished, capsys):
    (finished / "evaluation").mkdir(exist_ok=True)
    with FolderLock(finished / "evaluation", "evaluate"):
        err = _error(capsys, ["evaluate", str(finished), "--metrics", "likelihood", "--k", "2", "--rows", "5"])
        assert f"in use by another mmvae evaluate (pid {os.getpid()})" in err
    assert main(["evaluate", str(finished), "--metrics", "likelihood", "--k", "2", "--rows", "5", "--quiet"]) == 0
