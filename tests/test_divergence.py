"""Divergence guard: a non-finite loss or gradient rolls back to the last good state, halves the
learning rate and records the event; a persistent one stops with exit code 3 and a message naming
where it happened and the last good checkpoint, which is never overwritten with NaNs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import importlib
from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.registry import load_dataset
from mmvae.models.registry import build_model
from mmvae.train.trainer import Trainer, TrainingDiverged

trainer_module = importlib.import_module("mmvae.train.trainer")  # mmvae.train is also a function name

# toy n=300: 240 training rows, 216 after validation, batch 24: 9 steps an epoch.
STEPS = 9


def _cfg(out: Path, **kw) -> Config:
    base = dict(model="mopoe", dataset="toy", data={"n": 300}, epochs=3, batch_size=24, hidden=16, latent_dim=3,
                device="cpu", lr=2e-3, seed=1, out=str(out))
    return Config(**{**base, **kw})


def _poisoned(cfg: Config, bad_steps, kind: str = "loss"):
    """The configured model whose training loss (or gradient) is non-finite at the given calls."""
    torch.manual_seed(cfg.seed)   # as the trainer does before it builds its model
    model = build_model(load_dataset("toy", **cfg.data).specs, cfg)
    calls = {"n": 0}
    clean = model.loss

    def loss(batch, beta=None):
        value, logs = clean(batch, beta)
        if model.training:
            calls["n"] += 1
            if calls["n"] in bad_steps:
                if kind == "loss":
                    value = value * float("nan")
                else:  # finite loss, NaN gradient: d/dp sqrt(0·p) at 0 is 0·inf
                    p = next(model.parameters())
                    value = value + 0.0 * torch.sqrt(p.sum() * 0.0)
        return value, logs

    model.loss = loss
    return model, calls


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_one_non_finite_step_rolls_back_halves_lr_and_training_completes(tmp_path, kind):
    cfg = _cfg(tmp_path / "run")
    model, calls = _poisoned(cfg, {STEPS + 4}, kind)           # 4th step of epoch 2
    Trainer(cfg, model=model, show_progress=False).fit()
    recs = _records(tmp_path / "run")
    events = [r for r in recs if "event" in r]
    assert len(events) == 1
    e = events[0]
    assert e["event"] == "rollback" and e["what"] == kind and e["epoch"] == 2 and e["step"] == STEPS + 4
    assert e["resumed_from_step"] == STEPS and e["lr"] == pytest.approx(1e-3) and e["rollbacks"] == 1
    epochs = [r for r in recs if "event" not in r]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["lr"] for r in epochs] == pytest.approx([2e-3, 1e-3, 1e-3])
    # The 4 steps of epoch 2 were replayed; a non-finite gradient is seen by the next step's loss check
    # (its parameters are NaN after Adam), so one more forward ran before the rollback.
    assert calls["n"] == 3 * STEPS + 4 + (kind == "gradient")
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=True)
    assert state["progress"]["rollbacks"] == 1 and state["progress"]["global_step"] == 3 * STEPS
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert (tmp_path / "run" / "samples.png").exists()


def test_persistent_nan_exits_3_naming_where_and_keeps_the_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    cfg = _cfg(out, max_rollbacks=2)
    model, calls = _poisoned(cfg, set(range(STEPS + 2, 10_000)))   # from the 2nd step of epoch 2 on
    monkeypatch.setattr(trainer_module, "build_model", lambda specs, c: model)
    args = ["train", "--dataset", "toy", "--set", "data.n=300", "--epochs", "3", "--batch-size", "24",
            "--set", "hidden=16", "--latent-dim", "3", "--device", "cpu", "--lr", "2e-3", "--seed", "1",
            "--set", "max_rollbacks=2", "--out", str(out)]
    assert main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # First failure at step 11; every replay from the epoch-1 checkpoint then fails at its first step.
    assert err.startswith("mmvae: training diverged: non-finite loss at epoch 2, step 1 (global step 10)")
    assert "after 2 rollback(s)" in err
    assert f"last good checkpoint: {out / 'model.safetensors'} (epoch 1, global step {STEPS})" in err
    recs = _records(out)
    assert [r.get("event") for r in recs] == [None, "rollback", "rollback", "diverged"]
    assert [r["step"] for r in recs] == [STEPS, STEPS + 2, STEPS + 1, STEPS + 1]
    assert [r["lr"] for r in recs if r.get("event") == "rollback"] == pytest.approx([1e-3, 5e-4])
    # The checkpoint on disk is the one of epoch 1: finite and equal to a clean one-epoch run.
    clean = tmp_path / "clean"
    clean_cfg = _cfg(clean, epochs=1)
    torch.manual_seed(clean_cfg.seed)   # as the trainer does before it builds its model
    Trainer(clean_cfg, model=build_model(load_dataset("toy", **clean_cfg.data).specs, clean_cfg),
            show_progress=False).fit()
    a, b = load_file(out / "model.safetensors"), load_file(clean / "model.safetensors")
    for k in a:
        assert bool(torch.isfinite(a[k]).all()) and torch.equal(a[k], b[k])
    assert torch.load(out / "training_state.pt", weights_only=True)["progress"]["global_step"] == STEPS


def test_nan_before_any_epoch_ends_rolls_back_to_the_start(tmp_path):
    cfg = _cfg(tmp_path / "run", epochs=1, max_rollbacks=0)
    model, _ = _poisoned(cfg, {3})
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3 \(global step 3\).*epoch 0, global step 0"):
        Trainer(cfg, model=model, show_progress=False).fit()
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=True)
    assert state["progress"]["global_step"] == 0                   # only the step-0 checkpoint exists


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_with_grad_clip_a_non_finite_gradient_is_caught_at_its_own_step(tmp_path, kind):
    cfg = _cfg(tmp_path / "run", grad_clip=5.0)
    model, calls = _poisoned(cfg, {STEPS + 4}, kind)
    Trainer(cfg, model=model, show_progress=False).fit()
    events = [r for r in _records(tmp_path / "run") if "event" in r]
    assert [(e["what"], e["step"], e["resumed_from_step"]) for e in events] == [(kind, STEPS + 4, STEPS)]
    assert calls["n"] == 3 * STEPS + 4                         # the clipping norm catches it before the update


def test_non_finite_gradient_on_an_epochs_last_step_never_reaches_a_checkpoint(tmp_path):
    """No next step in the epoch: the check before the snapshot catches the NaN parameters."""
    cfg = _cfg(tmp_path / "run", checkpoint_every=0)
    model, calls = _poisoned(cfg, {2 * STEPS}, "gradient")     # last step of epoch 2
    Trainer(cfg, model=model, show_progress=False).fit()
    recs = _records(tmp_path / "run")
    events = [r for r in recs if "event" in r]
    assert [(e["what"], e["epoch"], e["resumed_from_step"]) for e in events] == [("parameter", 2, STEPS)]
    assert [r["epoch"] for r in recs if "event" not in r] == [1, 2, 3]
    assert all(bool(torch.isfinite(w).all()) for w in load_file(tmp_path / "run" / "model.safetensors").values())
    state = torch.load(tmp_path / "run" / "training_state.pt", weights_only=True)
    assert state["progress"]["global_step"] == 3 * STEPS
    for s in state["optimizer"]["state"].values():
        assert all(bool(torch.isfinite(v).all()) for v in s.values())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_adam_turns_a_non_finite_gradient_element_into_a_nan_parameter(fused, amsgrad, bad):
    """What the guard relies on without a gradient pass: after Adam's step (fused or not, at any point
    of training) every element whose gradient was non-finite is NaN, so the parameter check sees it."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50))
    opt = torch.optim.Adam([w], lr=1e-3, amsgrad=amsgrad, fused=fused, foreach=None if fused else False)
    for _ in range(3):   # some state first
        w.grad = torch.randn(50)
        opt.step()
    g = torch.randn(50)
    g[[3, 17]] = bad
    w.grad = g
    opt.step()
    assert bool(torch.isnan(w[[3, 17]]).all())
    assert int(torch.isfinite(w).sum()) == 48


def test_all_finite_is_exact():
    big = torch.full((1000,), 3e38)                            # finite, but its sum overflows
    assert trainer_module.all_finite([big, torch.zeros(3)])
    assert trainer_module.all_finite([]) and trainer_module.all_finite([torch.zeros(0)])
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(10)
        t[4] = bad
        assert not trainer_module.all_finite([torch.ones(5), t])
    mixed = torch.tensor([float("inf"), -float("inf")])        # sums to NaN: still found
    assert not trainer_module.all_finite([mixed])
