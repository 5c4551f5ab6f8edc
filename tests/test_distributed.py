"""Data parallelism, gradient accumulation, bf16 autocast and torch.compile on the CPU.

The 2-process test launches the real entry point with ``torchrun`` (gloo backend) and compares it with
one process that cuts each global batch into the same two pieces (``grad_accum=2``): same rows, same
noise, so weights and averaged metrics must agree to float round-off.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmvae.config import Config
from mmvae.data.dataset import DatasetSplits, ModalitySpec, MultimodalDataset
from mmvae.train import distributed
from mmvae.train.trainer import Trainer, train

# toy n=140: 112 training rows, 11 for validation, 101 to train on; batch 4 leaves a last batch of one
# row, so the second rank's piece is empty there (it must still join the all-reduce, with weight 0).
# observed=b with paired_fraction 0.5: pieces where modality a is missing in every row occur, so DDP
# has to cope with parameters that get no gradient on one rank.
TOY = ["--dataset", "toy", "--set", "data.n=140", "--batch-size", "4", "--set", "hidden=16", "--latent-dim", "3",
       "--device", "cpu", "--model", "mvae", "--set", "paired_fraction=0.5", "--set", "observed=b", "--seed", "3"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _cfg(args: list[str], out: Path) -> Config:
    from mmvae.cli import build_parser
    from mmvae.config import apply_overrides

    ns = build_parser().parse_args(["train", *args, "--out", str(out)])
    cfg = Config()
    for key in ("model", "dataset", "epochs", "batch_size", "lr", "latent_dim", "seed", "device", "max_steps"):
        if getattr(ns, key, None) is not None:
            setattr(cfg, key, getattr(ns, key))
    apply_overrides(cfg, ns.set or [])
    cfg.out = str(out)
    return cfg


@pytest.mark.skipif(not torch.distributed.is_available(),
                    reason="torch.distributed is not available")
def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mmvae", "train", *TOY, "--epochs", "1", "--out", str(ddp)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("epoch 1/1") == 1, "only rank 0 reports"

    single = tmp_path / "single"
    train(_cfg([*TOY, "--epochs", "1", "--set", "grad_accum=2"], single), show_progress=False)

    a, b = load_file(ddp / "model.safetensors"), load_file(single / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ra, rb = _records(ddp), _records(single)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [26]
    for x, y in zip(ra, rb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)   # averaged over both ranks
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=0.02)        # same rows, other noise
    # Only rank 0 wrote the run folder: one config, one metrics line per epoch.
    assert len(ra) == 1 and not list(ddp.glob(".tmp-*"))


class Quadratic(torch.nn.Module):
    """A deterministic model: loss = mean over rows of ||W a - b||², so gradients can be compared exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def loss(self, batch, beta=None):
        err = (self.lin(batch.data["a"]) - batch.data["b"]).pow(2).sum(1)
        return err.mean(), {"err": err.mean().detach()}


def _quadratic_splits(n=23) -> DatasetSplits:
    g = torch.Generator().manual_seed(1)
    specs = {m: ModalitySpec(m, "vector", (4,), "normal") for m in "ab"}
    data = {m: torch.randn(n, 4, generator=g) for m in "ab"}
    full = MultimodalDataset(specs, data)
    return DatasetSplits(full, full.subset(torch.arange(3)))


@pytest.mark.parametrize("accum", [2, 3, 5])
def test_pieces_are_weighted_by_their_rows_so_the_step_is_the_global_batch_mean(tmp_path, accum):
    """23 rows, batch 10: pieces of unequal size (e.g. 4/3/3, and 1/1/1 on the last batch of 3); float32
    (the weighting is exact, bf16 would round each piece's loss differently)."""
    finals = []
    for a in (1, accum):
        cfg = Config(model="x", dataset="x", epochs=1, batch_size=10, lr=0.05, val_fraction=0.0, device="cpu",
                     out=str(tmp_path / f"q{a}"), grad_accum=a, max_steps=3, amp="off")
        t = Trainer(cfg, splits=_quadratic_splits(), model=Quadratic(), show_progress=False)
        t.fit()
        finals.append({k: v.clone() for k, v in t.model.state_dict().items()})
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=1e-5, atol=1e-6)


def test_shards_cover_each_global_batch_once():
    idx = torch.randperm(11)
    pieces = distributed.shard_pieces(idx, 4)
    assert sorted(torch.cat(pieces).tolist()) == sorted(idx.tolist())
    assert [len(p) for p in pieces] == [3, 3, 3, 2]
    seeds = {distributed.noise_seed(0, s, p, r) for s in range(3) for p in range(4) for r in range(2)}
    assert len(seeds) == 24   # every (step, piece, rollbacks) draws its own noise


def test_bf16_autocast_step_on_cpu_keeps_fp32_weights_and_close_loss(tmp_path):
    losses = {}
    for amp in ("off", "bf16"):
        cfg = _cfg([*TOY, "--epochs", "1", "--set", f"amp={amp}", "--max-steps", "1"], tmp_path / amp)
        t = Trainer(cfg, show_progress=False)
        t.fit()
        assert all(p.dtype == torch.float32 for p in t.model.parameters())
        assert all(bool(torch.isfinite(p).all()) for p in t.model.parameters())
        losses[amp] = t.progress.sums["loss"] / t.progress.sums["rows"]
    assert losses["bf16"] == pytest.approx(losses["off"], rel=0.03)   # bf16 has ~3 significant digits
    assert losses["bf16"] != losses["off"]                              # autocast did run in bf16


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_resolves_by_the_hardware_and_is_recorded(tmp_path, monkeypatch, native):
    """amp=auto is bf16 autocast where the CPU has AVX512-BF16 or AMX-BF16, else float32; config.json
    records the precision that ran, so a rerun of the saved config or a resume keeps it."""
    from mmvae.train import options

    caps = {"avx512_bf16": native, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert options.native_bf16(torch.device("cpu")) is native
    cfg = _cfg([*TOY, "--epochs", "1", "--set", "amp=auto", "--max-steps", "1"], tmp_path / "run")
    t = Trainer(cfg, show_progress=False)
    expected = "bf16" if native else "off"
    assert t.cfg.amp == expected and t.amp_dtype == (torch.bfloat16 if native else None)
    t.fit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["amp"] == expected
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {})
    assert not options.native_bf16(torch.device("cpu"))
    assert options.resolve_amp("bf16", torch.device("cpu")) == "bf16"     # asked for: kept (emulated)
    assert options.resolve_amp("OFF", torch.device("cpu")) == "off"


def test_resume_with_amp_auto_keeps_the_runs_precision(tmp_path):
    """A run trained in float32 (amp=off, or saved before amp=auto was the default) continues in float32
    when resumed, with or without amp=auto; an explicit amp=bf16 on resume is an override, as before."""
    from mmvae.cli import main

    out = tmp_path / "run"
    assert main(["train", *TOY, "--epochs", "1", "--set", "amp=off", "--max-steps", "2", "--out", str(out)]) == 0

    def saved():
        return json.loads((out / "config.json").read_text())["config"]["amp"]

    assert saved() == "off"
    assert main(["train", "--resume", "--out", str(out), "--max-steps", "3", "--set", "amp=auto"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--max-steps", "4"]) == 0
    assert saved() == "off"
    events = [r for r in _records(out) if r.get("event") == "resume"]
    assert len(events) == 2 and not any("amp" in (e.get("overrides") or {}) for e in events)
    assert main(["train", "--resume", "--out", str(out), "--max-steps", "5", "--set", "amp=bf16"]) == 0
    assert saved() == "bf16"
    assert [r for r in _records(out) if r.get("event") == "resume"][-1]["overrides"]["amp"] == ["off", "bf16"]


def test_compile_option_keeps_checkpoint_names_and_trains(tmp_path, monkeypatch):
    """torch.compile's default (inductor) backend needs minutes of C++ compilation on this CI's CPU;
    the wiring (in-place compile, unchanged parameter names, a real step) is tested with dynamo's eager
    backend, which traces the same graph without generating code."""
    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: original(self, backend="eager"))
    cfg = Config(model="mopoe", dataset="toy", data={"n": 120}, epochs=1, batch_size=16, hidden=16, latent_dim=3,
                 device="cpu", out=str(tmp_path / "c"), compile=True, max_steps=2)
    t = Trainer(cfg, show_progress=False)
    assert t.loss_fn._compiled_call_impl is not None
    t.fit()
    names = set(load_file(tmp_path / "c" / "model.safetensors"))
    assert names == set(t.model.state_dict()) and not any("_orig_mod" in n for n in names)
    assert t.progress.global_step == 2


def test_device_options(tmp_path):
    from mmvae.errors import UserError
    from mmvae.train.trainer import pick_device

    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            pick_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        pick_device("tpu9")
