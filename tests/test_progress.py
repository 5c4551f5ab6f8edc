"""Progress lines (issue 14): inside epochs and evaluation steps, also when stderr is not a terminal
(a plain line every few seconds, not a flood), with an ETA; --quiet silences them."""
from __future__ import annotations

import io
import re

import pytest

from mmvae import progress
from mmvae.cli import main
from mmvae.progress import Progress, duration, track


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _reset():
    yield
    progress.configure(quiet=False)
    progress._settings["interval"] = None


def test_plain_lines_every_interval_with_eta_and_a_final_line():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, "epoch 1/3", unit="steps", file=out, interval=10, tty=False, clock=clock,
                   postfix=lambda: {"loss": "1.50"})
    for _ in range(100):
        clock.t += 0.5          # 2 steps a second: 50 s in all
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    # one line per 10 s of work (not one per step), then the final line
    assert len(lines) == 5 + 1, lines
    first = lines[0]
    assert re.match(r"\[\d\d:\d\d:\d\d\] epoch 1/3: 20/100 steps \(20%\), 2 steps/s, elapsed 10s, ETA 40s  loss 1.50$",
                    first), first
    assert "ETA 0s" in lines[4] and lines[-1].endswith("epoch 1/3: done, 100 steps in 50s")
    assert "\r" not in out.getvalue()


def test_short_loops_quiet_and_unknown_totals_print_nothing_or_no_eta():
    clock, out = Clock(), io.StringIO()
    with Progress(10, "fast", file=out, interval=10, tty=False, clock=clock) as bar:
        for _ in range(10):
            clock.t += 0.1
            bar.update()
    assert out.getvalue() == ""                    # done before the first interval: silent
    progress.configure(quiet=True)
    with Progress(10, "quiet", file=out, interval=0, tty=False, clock=clock) as bar:
        bar.update(10)
    assert out.getvalue() == ""
    progress.configure(quiet=False)
    with Progress(None, "open-ended", unit="rows", file=out, interval=0, tty=False, clock=clock) as bar:
        clock.t += 4
        bar.update(2)
    assert "open-ended: 2 rows, 2 s/rows" in out.getvalue() and "ETA" not in out.getvalue()


def test_resumed_epoch_counts_only_new_work_for_the_rate():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, "epoch 2/2", unit="steps", initial=60, file=out, interval=5, tty=False, clock=clock)
    for _ in range(10):
        clock.t += 1
        bar.update()
    assert "70/100 steps (70%), 1 steps/s, elapsed 10s, ETA 30s" in out.getvalue()


def test_terminal_uses_tqdm_and_track_wraps_an_iterable():
    out = io.StringIO()
    items = list(track(range(5), "tty", file=out, tty=True))
    assert items == [0, 1, 2, 3, 4] and "\r" in out.getvalue()    # tqdm redraws in place


def test_duration():
    assert [duration(s) for s in (4.4, 65, 3700, float("inf"))] == ["4s", "1m05s", "1h01m", "?"]


TRAIN = ["train", "--dataset", "toy", "--set", "data.n=400", "--epochs", "2", "--batch-size", "32",
         "--latent-dim", "4", "--set", "hidden=16", "--model", "mvae"]


def test_training_and_evaluation_report_progress_when_stderr_is_not_a_terminal(tmp_path, capsys):
    progress.configure(interval=0)                # a line at every update: the test runs in a second
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    inside = [ln for ln in err.splitlines() if re.match(r"\[\d\d:\d\d:\d\d\] epoch 1/2: \d+/9 steps", ln)]
    assert len(inside) == 9 and "ETA" in inside[0] and "  loss " in inside[-1] and "  run ETA " in inside[0]
    assert re.search(r"^epoch 1/2  train loss .*ETA", err, re.M)          # the epoch line has the run's ETA
    assert main(["evaluate", str(tmp_path / "run"), "--k", "3", "--rows", "20", "--classifier-epochs", "1",
                 "--joint-samples", "100", "--metrics", "coherence,likelihood"]) == 0
    err = capsys.readouterr().err
    for step in ("likelihood (K = 3): ", "cross coherence: ", "joint coherence: ", "classifier a: "):
        assert step in err, (step, err[-2000:])


def test_quiet_silences_progress_in_train_and_evaluate(tmp_path, capsys):
    progress.configure(interval=0)
    assert main([*TRAIN, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "steps (" not in err and err.count("train loss") == 2          # the line per epoch stays
    progress.configure(interval=0)
    assert main(["evaluate", str(tmp_path / "run"), "--k", "2", "--rows", "10", "--metrics", "likelihood",
                 "--quiet"]) == 0
    assert "likelihood (K" not in capsys.readouterr().err
