"""Each model learns the toy bimodal dataset (a shared class behind both modalities) to high cross-modal
agreement within seconds: translate a -> b, classify the output by the nearest prototype of b, compare
with the label (the coherence protocol of Shi et al. 2019 with an exact classifier)."""
from __future__ import annotations

import pytest
import torch

from mmvae.config import Config
from mmvae.data.partial import apply_partial_observation
from mmvae.data.toy import toy_bimodal
from mmvae.models.registry import build_model


@pytest.fixture(scope="module")
def toy():
    return toy_bimodal(n=3000, classes=10, noise=0.5)


def agreement(model, data, source: str, target: str) -> float:
    out = model.translate({source: data.data[source]}, [target])[target]
    nearest = torch.cdist(out, data.prototypes[target]).argmin(1)
    return float((nearest == data.label).float().mean())


def fit(model, data, names, epochs: int, lr: float = 2e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in data.batches(64, shuffle=True, generator=g):
            loss, _ = model.loss(batch.select(names))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


CASES = [("vae", {}), ("mvae", {}), ("mmvae", {}), ("mmvae", {"objective": "dreg", "k": 5}), ("mopoe", {})]


@pytest.mark.parametrize("name,extra", CASES, ids=[f"{n}-{e.get('objective', 'default')}" for n, e in CASES])
def test_model_learns_cross_modal_agreement(toy, name, extra):
    torch.manual_seed(0)
    names = ["a"] if name == "vae" else ["a", "b"]
    model = build_model({m: toy.specs[m] for m in names}, Config(model=name, latent_dim=8, hidden=64, **extra))
    pairs = [("a", "a")] if name == "vae" else [("a", "b"), ("b", "a")]
    before = [agreement(model.eval(), toy.test, s, t) for s, t in pairs]
    assert max(before) < 0.5                                  # chance is 0.1: the score has to be earned
    fit(model, toy.train, names, epochs=5)
    after = {f"{s}->{t}": agreement(model, toy.test, s, t) for s, t in pairs}
    assert min(after.values()) > 0.9, after


def test_mopoe_learns_from_half_paired_data(toy):
    """Half the training rows observe only one modality (MEME's 'split' scheme): still coherent."""
    torch.manual_seed(0)
    train = apply_partial_observation(toy.train, 0.5, "split", seed=0)
    assert train.counts()["a+b"] == round(0.5 * len(train))
    model = build_model(toy.specs, Config(model="mopoe", latent_dim=8, hidden=64))
    fit(model, train, ["a", "b"], epochs=5)
    assert agreement(model, toy.test, "a", "b") > 0.9 and agreement(model, toy.test, "b", "a") > 0.9
    # joint generation: both decoders of one prior sample tell the same class
    gen = model.generate(500)
    ya = torch.cdist(gen["a"], toy.test.prototypes["a"]).argmin(1)
    yb = torch.cdist(gen["b"], toy.test.prototypes["b"]).argmin(1)
    assert float((ya == yb).float().mean()) > 0.3             # chance: 0.1
