"""The Trainer's steps compute exactly what a bare loop computes: the same shuffling (seeded by
(seed, epoch)), the same per-step noise seeds (distributed.noise_seed), the same KL weight, the same
fused Adam. Whatever the Trainer adds per step (divergence guard, logs, progress) must not change a
single bit of the parameters or of the logged training losses."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from mmvae.config import Config
from mmvae.train import distributed
from mmvae.train.schedule import kl_weight
from mmvae.train.trainer import Trainer, make_adam


def _bare(model, cfg, data, steps_per_epoch):
    """The reference loop; returns the mean training loss of each epoch (``cfg.amp``: off or bf16, the
    loss under the same autocast as the Trainer's)."""
    opt = make_adam(model.parameters(), lr=cfg.lr)
    model.train()
    step, means = 0, []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        total, rows = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            index = order[i:i + cfg.batch_size]
            torch.manual_seed(distributed.noise_seed(cfg.seed, step, 0, 0))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                loss, _ = model.loss(data.batch(index), kl_weight(step, steps_per_epoch, cfg.warmup, cfg.beta))
            loss = loss.float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(index)
            rows += len(index)
            step += 1
        means.append(total / rows)
    return means


@pytest.mark.parametrize("amp", ["off", "bf16"])
@pytest.mark.parametrize("model", ["mopoe", "mvae", "mmvae"])
def test_trainer_equals_a_bare_loop_bit_for_bit(tmp_path, model, amp):
    cfg = Config(model=model, dataset="toy", data={"n": 300}, epochs=3, batch_size=24, hidden=16, latent_dim=3,
                 device="cpu", lr=2e-3, seed=3, warmup=1, out=str(tmp_path / "run"), amp=amp)
    trainer = Trainer(cfg, show_progress=False)
    initial = copy.deepcopy(trainer.model)
    trainer.fit()
    means = _bare(initial, trainer.cfg, trainer.train_data, trainer.steps_per_epoch)
    trained = trainer.model.state_dict()
    for k, v in initial.state_dict().items():
        assert torch.equal(v, trained[k]), k
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in recs] == means
