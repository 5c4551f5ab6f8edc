"""Scale and robustness figures on the CPU: exact resume, torchrun data parallelism, bf16, divergence.

No GPU was available when this was written, so nothing here measures GPU speed. Rerun:

    OMP_NUM_THREADS=1 python bench/robustness.py            # about 2 minutes of CPU, prints Markdown

Every run: toy dataset (2000 rows, 5 classes, two 16-d modalities), MoPoE, hidden 64, latent 8,
batch 64, 5 epochs, seed 0 (1440 training rows: 23 steps an epoch, 115 in all).
"""
from __future__ import annotations

import json
import os
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
        "--batch-size", "64", "--epochs", "5", "--seed", "0", "--device", "cpu"]
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
    proc = subprocess.Popen([sys.executable, "-m", "mmvae", *BASE, "--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not ((killed / "metrics.jsonl").exists()
                                       and len((killed / "metrics.jsonl").read_text().splitlines()) >= 2):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at = torch.load(killed / "training_state.pt", weights_only=True)["progress"]["global_step"]
    main([*BASE, "--out", str(killed), "--resume"])
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


if __name__ == "__main__":
    main_bench()
