"""Coherence classifiers: one per modality, predicting the row's label from that modality alone.

Shi et al. 2019 (App. and official code) use small CNNs (two conv layers, dropout, two fully connected
layers) trained with Adam 1e-3; we use the same shape for images and an MLP for every other kind.
Trained on the run's training split, scored on its test split, and cached as safetensors in
RUN/evaluation/classifiers/ with a JSON card so that a second evaluation does not retrain. A user may
pass any callable ``x (B, *shape) -> logits (B, C)`` instead.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..data.dataset import ModalitySpec, MultimodalDataset
from .classifier_cache import entry_paths, load_cached, save_cached

CACHE_VERSION = 1


class ConvClassifier(nn.Module):
    """Two 3x3 conv layers (32, 64) with max-pooling, dropout, two linear layers; any C x H x W input."""

    def __init__(self, shape: tuple[int, ...], classes: int):
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(128, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLPClassifier(nn.Module):
    """Flatten, two hidden layers of 256 with dropout, linear output (vectors, one-hot classes, text)."""

    def __init__(self, shape: tuple[int, ...], classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 256), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def make_classifier(spec: ModalitySpec, classes: int) -> nn.Module:
    if spec.kind == "image" and len(spec.shape) == 3 and min(spec.shape[1:]) >= 4:
        return ConvClassifier(spec.shape, classes)
    return MLPClassifier(spec.shape, classes)


@torch.no_grad()
def predict(classifier: Callable, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Class indices (B,) from a classifier returning logits (B, C) or class indices (B,)."""
    if isinstance(classifier, nn.Module):
        classifier.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        y = classifier(x[i:i + batch_size])
        out.append(y.argmax(-1) if y.dim() > 1 else y.long())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def accuracy(classifier: Callable, data: MultimodalDataset, m: str, device) -> float:
    rows = data.mask[m]
    if not bool(rows.any()):
        return math.nan
    x = data.data[m][rows].to(device)
    return float((predict(classifier, x).cpu() == data.label[rows]).float().mean())


def train_classifier(spec: ModalitySpec, classes: int, x: Tensor, y: Tensor, epochs: int, seed: int,
                     device, batch_size: int = 128, lr: float = 1e-3) -> nn.Module:
    """Adam on cross-entropy over the observed training rows of one modality (seeded)."""
    torch.manual_seed(seed)
    net = make_classifier(spec, classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def _card(spec: ModalitySpec, classes: int, epochs: int, seed: int, n_train: int) -> dict:
    return {"version": CACHE_VERSION, "modality": spec.to_dict(), "classes": classes, "epochs": epochs,
            "seed": seed, "train_rows": n_train}


def coherence_classifiers(train: MultimodalDataset, test: MultimodalDataset, cache: Path | None,
                          epochs: int = 5, seed: int = 0, device="cpu",
                          given: Mapping[str, Callable] | None = None, log=print) -> tuple[dict, dict]:
    """Classifiers for every modality (user-given, cached, or trained now) and their test accuracies."""
    classes = int(train.num_classes or int(train.label.max()) + 1)
    given = dict(given or {})
    nets, acc = {}, {}
    for m, spec in train.specs.items():
        if m in given:
            nets[m] = given[m]
        else:
            rows = train.mask[m]
            card = _card(spec, classes, epochs, seed, int(rows.sum()))
            net = make_classifier(spec, classes).to(device)
            if cache is not None and load_cached(Path(cache), m, card, net, device, log):
                log(f"classifier {m}: cached ({entry_paths(Path(cache), m)[0]})")
            else:
                log(f"classifier {m}: training on {int(rows.sum())} rows for {epochs} epochs")
                net = train_classifier(spec, classes, train.data[m][rows], train.label[rows], epochs, seed, device)
                if cache is not None:
                    save_cached(Path(cache), m, card, net)
            nets[m] = net
        acc[m] = accuracy(nets[m], test, m, device)
    return nets, acc
