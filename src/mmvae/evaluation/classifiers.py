"""Coherence classifiers: one per modality, predicting the row's label from that modality alone.

Shi et al. 2019 (App. and official code) use small CNNs (two conv layers, dropout, two fully connected
layers) trained 30 epochs with Adam 1e-3; we use the same shape for images and an MLP for every other
kind. Protocol (``PROTOCOL``): Adam 1e-3, batch 128, at most 30 epochs (the official count), stopped
early at a validation plateau: 10% of the training rows (seeded) are held out, accuracy on them is
measured after every epoch, training stops after ``patience`` = 3 epochs without improvement and the
best epoch's weights are kept (``patience=0``: exactly the official 30 epochs, no hold-out). Scored on
the run's test split, and cached as safetensors in RUN/evaluation/classifiers/ with a JSON card holding
the whole protocol, so a second evaluation does not retrain and a change of protocol does. A user may
pass any callable ``x (B, *shape) -> logits (B, C)`` instead.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ..data.dataset import ModalitySpec, MultimodalDataset
from ..progress import Progress
from .classifier_cache import entry_paths, load_cached, save_cached

CACHE_VERSION = 2   # 2: trained to a validation plateau (at most 30 epochs); 1 was 5 fixed epochs

PROTOCOL = {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "max_epochs": 30, "patience": 3,
            "val_fraction": 0.1}


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
                     device, batch_size: int = 128, lr: float = 1e-3, patience: int = 0,
                     val_fraction: float = 0.1, desc: str = "") -> nn.Module:
    """Adam on cross-entropy over the observed training rows of one modality (seeded), at most ``epochs``
    epochs. ``patience`` > 0: a seeded ``val_fraction`` of the rows is held out and training stops after
    ``patience`` epochs without a better validation accuracy, keeping the best epoch's weights.
    The number of epochs run is left in ``net.epochs_run``."""
    torch.manual_seed(seed)
    net = make_classifier(spec, classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n_val = int(round(val_fraction * x.shape[0])) if patience > 0 else 0
    order = torch.randperm(x.shape[0], generator=g)
    val, fit = order[:n_val], order[n_val:]
    best, best_state, stale, run = -1.0, None, 0, 0
    steps = (len(fit) + batch_size - 1) // batch_size
    bar = Progress(epochs * steps, f"classifier {desc}".strip(), unit="steps")   # an upper bound: may stop early
    for _ in range(epochs):
        net.train()
        perm = fit[torch.randperm(len(fit), generator=g)]
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
        run += 1
        if n_val:
            score = float((predict(net, x[val].to(device)).cpu() == y[val]).float().mean())
            if score > best:
                best, stale = score, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.epochs_run = run
    return net.eval()


def _card(spec: ModalitySpec, classes: int, epochs: int, seed: int, n_train: int, patience: int) -> dict:
    """What a cached classifier was trained with: any difference retrains it."""
    return {"version": CACHE_VERSION, "modality": spec.to_dict(), "classes": classes, "seed": seed,
            "train_rows": n_train, **PROTOCOL, "max_epochs": epochs, "patience": patience,
            "val_fraction": PROTOCOL["val_fraction"] if patience > 0 else 0.0}


def protocol_text(epochs: int, patience: int) -> str:
    """One sentence for reports: how the coherence classifiers were trained."""
    if patience > 0:
        return (f"Adam {PROTOCOL['lr']:g}, batch {PROTOCOL['batch_size']}, at most {epochs} epochs, stopped after "
                f"{patience} epochs without a better accuracy on {PROTOCOL['val_fraction']:.0%} of the training "
                f"rows held out (best epoch kept)")
    return f"Adam {PROTOCOL['lr']:g}, batch {PROTOCOL['batch_size']}, {epochs} epochs on all training rows"


def coherence_classifiers(train: MultimodalDataset, test: MultimodalDataset, cache: Path | None,
                          epochs: int = PROTOCOL["max_epochs"], seed: int = 0, device="cpu",
                          given: Mapping[str, Callable] | None = None, log=print,
                          patience: int = PROTOCOL["patience"]) -> tuple[dict, dict]:
    """Classifiers for every modality (user-given, cached, or trained now) and their test accuracies.
    ``epochs`` is the most epochs; ``patience`` the validation plateau rule (0: all ``epochs``)."""
    classes = int(train.num_classes or int(train.label.max()) + 1)
    given = dict(given or {})
    nets, acc = {}, {}
    for m, spec in train.specs.items():
        if m in given:
            nets[m] = given[m]
        else:
            rows = train.mask[m]
            card = _card(spec, classes, epochs, seed, int(rows.sum()), patience)
            net = make_classifier(spec, classes).to(device)
            if cache is not None and load_cached(Path(cache), m, card, net, device, log):
                log(f"classifier {m}: cached ({entry_paths(Path(cache), m)[0]})")
            else:
                log(f"classifier {m}: training on {int(rows.sum())} rows for at most {epochs} epochs")
                net = train_classifier(spec, classes, train.data[m][rows], train.label[rows], epochs, seed, device,
                                       PROTOCOL["batch_size"], PROTOCOL["lr"], patience, PROTOCOL["val_fraction"], desc=m)
                log(f"classifier {m}: stopped after {net.epochs_run} epochs")
                if cache is not None:
                    save_cached(Path(cache), m, card, net)
            nets[m] = net
        acc[m] = accuracy(nets[m], test, m, device)
    return nets, acc
