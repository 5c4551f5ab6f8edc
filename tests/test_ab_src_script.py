"""bench/ab_src.py (the A/B of the training step from two source trees) runs and compares like with like: the
same tree as 'old' and 'new' gives the same first loss, and every model gets a timing line."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ab_src_same_tree_same_losses():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "ab_src.py"), str(ROOT / "src"), str(ROOT / "src"),
                          "--models", "mvtcae", "mopoe", "--reps", "1", "--block", "1"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    losses = re.findall(r"^(\S+)\s+first loss: old (\S+)  new (\S+)$", out.stdout, re.M)
    assert [m for m, _, _ in losses] == ["mvtcae", "mopoe"]
    assert all(a == b for _, a, b in losses)
    assert len(re.findall(r"old time / new time: median \d", out.stdout)) == 2
