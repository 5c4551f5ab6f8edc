"""bench/speed.py runs without MultiVae (the CI environment) and writes its table: a smoke test that keeps
the throughput benchmark runnable (the figures themselves come from the full runs in docs/results/)."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _speed_module():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("speed_bench", ROOT / "bench" / "speed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_speed_runs_every_library_contender_and_reports_the_targets(tmp_path):
    speed = _speed_module()
    out = tmp_path / "speed.md"
    speed.main(["--suite", "mlp", "--models", "mvae", "meme", "--impls", "mmvae", "mmvae-fused", "hand",
                "trainer-step", "trainer", "--reps", "2", "--block", "1", "--trainer-reps", "1",
                "--trainer-epochs", "1", "--rows", "256", "--out", str(out)])
    text = out.read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| mlp |")}
    assert set(rows) == {"mvae", "meme"}
    head = next(line for line in text.splitlines() if line.startswith("| setting |"))
    assert "mmvae / hand" in head and "trainer-step / mmvae-fused" in head and "trainer / mmvae-epoch" in head
    cells = [c.strip() for c in rows["mvae"].split("|")[3:-1]]
    assert all(float(c.replace(",", "")) > 0 for c in cells)          # every contender ran
    meme = [c.strip() for c in rows["meme"].split("|")[3:-1]]
    assert meme[2] == ""                                               # no hand-written MEME loss
    assert "Target Trainer's per-step overhead" in text
