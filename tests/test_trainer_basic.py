"""Trainer basics: one metrics record per epoch, best checkpoint kept, KL warm-up per minibatch, load_run."""
from __future__ import annotations

import json

import pytest
import torch

from mmvae.config import Config
from mmvae.runs import load_run
from mmvae.train.checkpoint import load_weights
from mmvae.train.trainer import Trainer


def _config(tmp_path, **kw) -> Config:
    base = dict(model="mvae", dataset="toy", data={"n": 300}, epochs=3, batch_size=50, latent_dim=4, hidden=32,
                out=str(tmp_path / "run"))
    base.update(kw)
    return Config(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run with warm-up, recording the β of every training call of model.loss."""
    tmp = tmp_path_factory.mktemp("trainer")
    trainer = Trainer(_config(tmp, warmup=2, beta=0.8), show_progress=False)
    calls = []
    loss = trainer.model.loss

    def spy(batch, beta=None):
        calls.append((trainer.model.training, beta))
        return loss(batch, beta)

    trainer.model.loss = spy
    trainer.fit()
    del trainer.model.loss
    return trainer, calls


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_metrics_one_record_per_epoch(trained):
    trainer, _ = trained
    records = [r for r in _records(trainer.out) if "event" not in r]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        assert {"train_loss", "val_loss", "beta", "lr", "step"} <= set(r)
        assert all(isinstance(r[k], float) and r[k] == r[k] for k in ("train_loss", "val_loss"))
    assert [r["step"] for r in records] == [5, 10, 15]               # 216 training rows, batch 50
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_kl_warmup_rises_linearly_per_minibatch(trained):
    """β_s = β · min(1, s / (warmup · steps per epoch)) for global step s (MVAE's per-minibatch annealing);
    validation always scores with the full β."""
    trainer, calls = trained
    train_betas = [b for training, b in calls if training]
    assert len(train_betas) == 15
    assert train_betas == pytest.approx([0.8 * min(1.0, s / 10) for s in range(15)])
    assert all(b == pytest.approx(0.8) for training, b in calls if not training)
    assert [r["beta"] for r in _records(trainer.out) if "event" not in r] == pytest.approx([0.4, 0.8, 0.8])


def test_best_checkpoint_is_the_best_validation_epoch(trained):
    trainer, _ = trained
    out = trainer.out
    assert (out / "best.safetensors").is_file() and (out / "model.safetensors").is_file()
    records = [r for r in _records(out) if "event" not in r]
    last = trainer.validate()["val_loss"]
    assert last == pytest.approx(records[-1]["val_loss"], rel=1e-6)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        load_weights(trainer.model, out / "best.safetensors")
        best = trainer.validate()["val_loss"]
    finally:
        trainer.model.load_state_dict(state)
    assert best == pytest.approx(min(r["val_loss"] for r in records), rel=1e-6)


def test_load_run_gives_back_the_trained_model(trained):
    trainer, _ = trained
    run = load_run(trainer.out)
    assert run.config.model == "mvae" and list(run.specs) == ["a", "b"]
    model = trainer.model.eval()
    x = trainer.splits.test.batch(slice(0, 16))
    for source in ({"a": x.data["a"]}, {"b": x.data["b"]}, dict(x.data)):
        got, want = run.model.translate(source), model.translate(source)
        for m in want:
            assert torch.equal(got[m], want[m])
        assert torch.equal(run.model.embed(source), model.embed(source))
    torch.manual_seed(1)
    g1 = run.model.generate(4)
    torch.manual_seed(1)
    g2 = model.generate(4)
    assert all(torch.equal(g1[m], g2[m]) for m in g1)
    assert torch.equal(run.dataset().test.data["a"], trainer.splits.test.data["a"])


def test_train_without_warmup_uses_full_beta_from_the_first_step(tmp_path):
    trainer = Trainer(_config(tmp_path, model="mopoe", epochs=1, beta=1.5), show_progress=False)
    seen = []
    loss = trainer.model.loss
    trainer.model.loss = lambda batch, beta=None: (seen.append(beta), loss(batch, beta))[1]
    trainer.fit()
    assert seen and all(b == pytest.approx(1.5) for b in seen)
