"""Scale and robustness figures on the CPU: exact resume, torchrun data parallelism, bf16, divergence,
and the bad-input / damage audit of issue 12 (fuzz, kill cycles, bit damage, concurrent writers).

No GPU was available when this was written, so nothing here measures GPU speed. Rerun:

    OMP_NUM_THREADS=1 python bench/robustness.py            # about 5 minutes of CPU, prints Markdown
    OMP_NUM_THREADS=1 python bench/robustness.py --part audit [--fuzz-seeds 3] [--kills 10]

Resume part: toy dataset (2000 rows, 5 classes, two 16-d modalities), MoPoE, hidden 64, latent 8,
batch 64, 5 epochs, seed 0 (1440 training rows: 23 steps an epoch, 115 in all).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.registry import load_dataset
from mmvae.models.registry import build_model
from mmvae.train.trainer import Trainer

BASE = ["train", "--dataset", "toy", "--model", "mopoe", "--set", "hidden=64", "--latent-dim", "8",
        "--batch-size", "64", "--epochs", "5", "--seed", "0", "--device", "cpu",
        "--set", "amp=off"]   # the float32 reference; the bf16 row sets amp=bf16 after it
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(out: Path, *extra: str) -> Path:
    code = main([*BASE, "--out", str(out), *extra])
    assert code == 0, code
    return out


def weights_gap(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def last(run_dir: Path) -> dict:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "event" not in r][-1]


def seconds(run_dir: Path) -> float:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sum(r["seconds"] for r in recs if "seconds" in r)


def main_bench() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mmvae-robust-"))
    rows = []
    ref = run(tmp / "ref")
    rows.append(("uninterrupted (reference)", "-", f"{last(ref)['val_loss']:.3f}", f"{seconds(ref):.2f}"))

    cut = tmp / "cut"
    run(cut, "--max-steps", "37")
    main([*BASE, "--out", str(cut), "--resume", "--max-steps", "101"])
    main([*BASE, "--out", str(cut), "--resume"])
    rows.append(("cut at steps 37 and 101, resumed twice", f"{weights_gap(ref, cut):.1e}",
                 f"{last(cut)['val_loss']:.3f}", "-"))

    killed = tmp / "killed"
    every_epoch = ["--set", "checkpoint_every=0"]     # a checkpoint at every epoch end: resume mid-run
    proc = subprocess.Popen([sys.executable, "-m", "mmvae", *BASE, *every_epoch, "--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not ((killed / "metrics.jsonl").exists()
                                       and len((killed / "metrics.jsonl").read_text().splitlines()) >= 2):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at = torch.load(killed / "training_state.pt", weights_only=True)["progress"]["global_step"]
    main([*BASE, *every_epoch, "--out", str(killed), "--resume"])
    rows.append((f"SIGKILL mid-run (last checkpoint: step {at}), resumed", f"{weights_gap(ref, killed):.1e}",
                 f"{last(killed)['val_loss']:.3f}", "-"))

    accum = run(tmp / "accum", "--set", "grad_accum=2")
    rows.append(("1 process, grad_accum=2", f"{weights_gap(ref, accum):.1e}", f"{last(accum)['val_loss']:.3f}",
                 f"{seconds(accum):.2f}"))
    ddp = tmp / "ddp"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "mmvae", *BASE, "--out", str(ddp)], env=ENV, check=True, capture_output=True)
    wall = time.time() - t0
    rows.append(("torchrun 2 ranks (gloo) vs grad_accum=2", f"{weights_gap(accum, ddp):.1e}",
                 f"{last(ddp)['val_loss']:.3f}", f"{seconds(ddp):.2f} ({wall:.0f} s with start-up)"))
    rows.append(("torchrun 2 ranks vs unsharded reference", f"{weights_gap(ref, ddp):.1e}", "-", "-"))

    bf16 = run(tmp / "bf16", "--set", "amp=bf16")
    rows.append(("bf16 autocast (CPU)", f"{weights_gap(ref, bf16):.1e}", f"{last(bf16)['val_loss']:.3f}",
                 f"{seconds(bf16):.2f}"))

    cfg = Config(model="mopoe", dataset="toy", hidden=64, latent_dim=8, batch_size=64, epochs=5, seed=0,
                 device="cpu", out=str(tmp / "nan"))
    torch.manual_seed(0)
    model = build_model(load_dataset("toy").specs, cfg)
    clean, calls = model.loss, {"n": 0}

    def poisoned(batch, beta=None):
        loss, logs = clean(batch, beta)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 50:
                loss = loss * float("nan")
        return loss, logs

    model.loss = poisoned
    Trainer(cfg, model=model, show_progress=False).fit()
    nan = tmp / "nan"
    events = [json.loads(x) for x in (nan / "metrics.jsonl").read_text().splitlines() if '"event"' in x]
    rows.append((f"NaN injected at step 50: {len(events)} rollback, lr {last(nan)['lr']:g}", "-",
                 f"{last(nan)['val_loss']:.3f}", "-"))

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; "
          f"CUDA available: {torch.cuda.is_available()}\n")
    print("| run | max abs weight difference | final val loss | train seconds (all epochs) |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


# ------------------------------------------------------------------------------ issue 12 audit
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
AUDIT = ["train", "--dataset", "toy", "--set", "data.n=400", "--batch-size", "32", "--set", "hidden=16",
         "--latent-dim", "3", "--device", "cpu", "--seed", "3", "--epochs", "12", "--set", "checkpoint_every=0"]


def fuzz_counts(seeds: int) -> list[tuple]:
    """The fuzz cases of tests/test_robustness_fuzz.py (seed 0) and more seeds: outcomes per kind."""
    from fuzz_run_folders import KINDS, make_base, make_cases, run_case

    table = collections.defaultdict(collections.Counter)
    for seed in range(seeds):
        root = Path(tempfile.mkdtemp(prefix="mmvae-fuzz-"))
        base = make_base(root)
        for case in make_cases(seed):
            out = run_case(case, root, base)
            t = table[case.kind]
            t["cases"] += 1
            t["exit 0"] += out.code == 0
            t["exit 2, one line"] += out.code == 2 and out.one_line
            t["exit 2, more lines"] += out.code == 2 and not out.one_line
            t["other exit"] += out.code not in (0, 2) and not out.error
            t["traceback"] += bool(out.error)
            t["wrote outside"] += bool(out.changed_outside)
        shutil.rmtree(root, ignore_errors=True)
    cols = ("cases", "exit 0", "exit 2, one line", "exit 2, more lines", "other exit", "traceback", "wrote outside")
    rows = [(kind, *(table[kind][c] for c in cols)) for kind in KINDS]
    rows.append(("all", *(sum(table[k][c] for k in KINDS) for c in cols)))
    return [cols] + rows


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def kill_cycles(kills: int, tmp: Path) -> dict:
    """SIGKILL a run at random moments, resume each time; compare with an uninterrupted run."""
    import numpy as np

    ref = tmp / "kill-ref"
    assert main([*AUDIT, "--out", str(ref)]) == 0
    out, rng, damaged, resumed = tmp / "killed", np.random.default_rng(0), 0, 0
    for i in range(kills):
        cmd = [sys.executable, "-m", "mmvae", *AUDIT, "--out", str(out)] + (["--resume"] if i else [])
        lines = _lines(out / "metrics.jsonl")
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until this slice trains (a new run's first epoch record, a resume's event), then a random moment
        while proc.poll() is None and _lines(out / "metrics.jsonl") <= lines:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0.0, 1.0)))
        proc.send_signal(signal.SIGKILL)
        err = proc.communicate()[1].decode()
        damaged += "damaged" in err
        resumed += proc.returncode == -signal.SIGKILL
    done = subprocess.run([sys.executable, "-m", "mmvae", *AUDIT, "--out", str(out), "--resume"], env=ENV,
                          capture_output=True, text=True)
    damaged += "damaged" in done.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    return {"kills": resumed, "resumed from steps": steps, "false damage verdicts": damaged,
            "final exit": done.returncode, "max abs weight difference": weights_gap(ref, out),
            "same metrics": _train_records(ref) == _train_records(out)}


def _train_records(run_dir: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in recs if "event" not in r]


def bit_damage(tmp: Path, trials: int = 20) -> list[tuple]:
    """Flip 64 random bytes in the middle of each checkpoint file: does it still load, is it caught?"""
    import numpy as np
    from safetensors.torch import load_file as load_st

    from mmvae.train.integrity import DamagedFile, verify

    run_dir = tmp / "bits"
    assert main([*AUDIT, "--epochs", "1", "--out", str(run_dir)]) == 0
    rng = np.random.default_rng(0)
    rows = []
    for name in ("model.safetensors", "best.safetensors", "training_state.pt"):
        original = (run_dir / name).read_bytes()
        loads = caught = 0
        for _ in range(trials):
            b = bytearray(original)
            for pos in rng.integers(len(b) // 4, 3 * len(b) // 4, size=64):
                b[pos] ^= 0xFF
            (run_dir / name).write_bytes(bytes(b))
            try:
                load_st(str(run_dir / name)) if name.endswith(".safetensors") else \
                    torch.load(run_dir / name, weights_only=True)
                loads += 1
            except Exception:  # noqa: BLE001 - any load failure counts as "not loaded"
                pass
            try:
                verify(run_dir / name)
            except DamagedFile:
                caught += 1
        (run_dir / name).write_bytes(original)
        rows.append((name, trials, loads, caught))
    return rows


def concurrent_writers(tmp: Path) -> dict:
    """A second train and a --resume while a run is being written: both must exit 2 naming the pid."""
    out = tmp / "busy"
    proc = subprocess.Popen([sys.executable, "-m", "mmvae", *AUDIT, "--epochs", "2000", "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / "config.json").exists():
        time.sleep(0.02)
    codes = []
    for extra in ([], ["--resume"]):
        done = subprocess.run([sys.executable, "-m", "mmvae", *AUDIT, "--out", str(out), *extra], env=ENV,
                              capture_output=True, text=True)
        codes.append((done.returncode, f"pid {proc.pid}" in done.stderr))
    proc.kill()
    proc.wait()
    return {"second train": codes[0], "resume meanwhile": codes[1]}


def audit(seeds: int, kills: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mmvae-audit-"))
    t0 = time.time()
    fuzz = fuzz_counts(seeds)
    t_fuzz = time.time() - t0
    print(f"\n### Fuzz: {fuzz[-1][1]} cases (seeds 0..{seeds - 1}, {t_fuzz:.0f} s)\n")
    print("| input damaged | " + " | ".join(fuzz[0]) + " |")
    print("|---|" + "---|" * len(fuzz[0]))
    for r in fuzz[1:]:
        print("| " + " | ".join(str(x) for x in r) + " |")
    kc = kill_cycles(kills, tmp)
    print(f"\n### SIGKILL + --resume cycles\n\n{json.dumps(kc)}")
    print("\n### 64 flipped bytes per file\n\n| file | trials | still loads | caught by checksums.json |\n|---|---|---|---|")
    for r in bit_damage(tmp):
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(f"\n### Concurrent writers\n\n{json.dumps(concurrent_writers(tmp))}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("resume", "audit", "all"), default="all")
    ap.add_argument("--fuzz-seeds", type=int, default=3, help="100 fuzz cases per seed")
    ap.add_argument("--kills", type=int, default=10)
    a = ap.parse_args()
    if a.part in ("resume", "all"):
        main_bench()
    if a.part in ("audit", "all"):
        audit(a.fuzz_seeds, a.kills)
