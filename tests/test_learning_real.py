"""Every model's defaults learn to translate on real data within seconds (issue 10, item 5).

Each model trains with its library defaults (as ``mmvae train`` would, through the Trainer) for a few
hundred steps on the offline 5,000-digit MNIST sample with its label, then translates the test rows
from one posterior *sample* (the papers' coherence protocol). A small pixel classifier, trained once
here, judges the generated images; the argmax judges the generated labels. Chance is 0.10; the
thresholds sit well below what the defaults reach at this step count (measured: docs/results/quality.md,
"Learning tests"), so a change that breaks a default fails here, and noise does not.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmvae.config import Config
from mmvae.data.registry import load_dataset
from mmvae.evaluation.coherence import cross_coherence
from mmvae.train.trainer import Trainer

STEPS = 250
# model -> minimum sample-based coherence in every direction (image->label, label->image; vae: image->image)
THRESHOLDS = {"vae": 0.5, "mvae": 0.5, "mmvae": 0.6, "mopoe": 0.6, "meme": 0.5, "fmmvae": 0.5}


@pytest.fixture(scope="module")
def mnist_label():
    return load_dataset("mnist-label", source="sample")


@pytest.fixture(scope="module")
def judges(mnist_label):
    """{modality: classifier}: an MLP on pixels (about 0.9 test accuracy) and the argmax of a label."""
    torch.manual_seed(0)
    train = mnist_label.train
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(4):
        for idx in torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).split(64):
            loss = nn.functional.cross_entropy(net(train.data["image"][idx]), train.label[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    test = mnist_label.test
    with torch.no_grad():
        acc = float((net(test.data["image"]).argmax(1) == test.label).float().mean())
    assert acc > 0.85, acc
    return {"image": net, "label": lambda y: y}


class FromSample:
    """The model with ``translate`` decoding one posterior sample (the papers' protocol)."""

    def __init__(self, model):
        self.model = model

    def translate(self, data, targets=None, sample=True):
        return self.model.translate(data, targets, sample=True)


@pytest.mark.parametrize("name", list(THRESHOLDS))
def test_default_model_learns_to_translate_real_digits(name, mnist_label, judges, tmp_path):
    cfg = Config(model=name, dataset="mnist-label", epochs=1000, max_steps=STEPS, seed=0, out=str(tmp_path / name))
    trainer = Trainer(cfg, splits=mnist_label, show_progress=False)
    trainer.fit()
    model = trainer.model.eval()
    test = trainer.splits.test
    torch.manual_seed(0)
    if name == "vae":   # one modality: the image decoded from a sample of its own posterior
        out = model.translate({"image": test.data["image"]}, ["image"], sample=True)["image"]
        scores = {"image->image": float((judges["image"](out).argmax(1) == test.label).float().mean())}
    else:
        scores, _ = cross_coherence(FromSample(model), test, judges, "cpu")
    assert min(scores.values()) >= THRESHOLDS[name], scores
