"""Full MNIST (LeCun et al. 1998, 60k/10k) with the offline 5,000-digit sample as fallback.

``source`` option of the MNIST-based datasets: ``auto`` (full MNIST when its files are already in the
cache or ``--data-dir``; otherwise the offline sample), ``full`` (download when missing) or ``sample``.
Pin ``full`` or ``sample`` for runs that must rebuild the same data on another machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec, MultimodalDataset, sample_rows
from .registry import register_dataset
from .sources.cache import availability, is_present
from .sources.catalog import MNIST
from .sources.mnist_sample import load_mnist_sample, mnist_sample_available, seeded_split
from .sources.readers import load_idx_dataset

SOURCES = ("auto", "full", "sample")


@dataclass
class DigitImages:
    """uint8 images (N, 28, 28), int64 labels, and the train / test row indices."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    origin: str

    @property
    def full(self) -> bool:
        return self.origin == "full"


def resolve_source(source: str, data_dir) -> str:
    if source not in SOURCES:
        raise UserError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
    if source == "auto":
        # A --data-dir says "use my files": never fall back to the sample silently then.
        return "full" if data_dir is not None or is_present(MNIST) else "sample"
    return source


def mnist_digits(source: str = "auto", data_dir=None, download: bool = True, n: int | None = None,
                 split_seed: int = 0) -> DigitImages:
    """MNIST images and labels from the chosen source, optionally a seeded subset of ``n`` rows."""
    origin = resolve_source(source, data_dir)
    if origin == "full":
        xtr, ytr, xte, yte = load_idx_dataset(MNIST, data_dir, download)
        images, labels = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
        is_test = np.r_[np.zeros(len(ytr), bool), np.ones(len(yte), bool)]
        keep = sample_rows(len(labels), n)  # a subset keeps each row's official split
        if keep is not None:
            k = keep.numpy()
            images, labels, is_test = images[k], labels[k], is_test[k]
        return DigitImages(images, labels, np.nonzero(~is_test)[0], np.nonzero(is_test)[0], origin)
    images, labels = load_mnist_sample()
    keep = sample_rows(len(labels), n)
    if keep is not None:
        images, labels = images[keep.numpy()], labels[keep.numpy()]
    tr, te = seeded_split(len(labels), 0.1, split_seed)  # the sample has no official split
    return DigitImages(images, labels, tr, te, origin)


def mnist_availability() -> tuple[bool, str]:
    ok, how = availability(MNIST)
    if ok:
        return ok, f"full MNIST, {how}"
    ok, sample = mnist_sample_available()
    return ok, f"{sample}; full MNIST {how}"


@register_dataset("mnist", "MNIST digits alone (label kept for evaluation); full 60k/10k when present, else the "
                  "offline 5k sample; options source=auto|full|sample, n", available=mnist_availability)
def mnist(seed: int = 0, source: str = "auto", data_dir=None, download: bool = True, n: int | None = None,
          **_) -> DatasetSplits:
    d = mnist_digits(source, data_dir, download, n)
    specs = {"image": ModalitySpec("image", "image", (1, 28, 28), IMAGE_LIKELIHOOD)}

    def part(idx):
        y = torch.from_numpy(d.labels[idx])
        x = torch.from_numpy(d.images[idx].astype(np.float32) / 255.0)[:, None]
        return MultimodalDataset(specs, {"image": x}, label=y, num_classes=10,
                                 description=f"MNIST ({'full' if d.full else '5,000-digit sample'})")

    return DatasetSplits(part(d.train), part(d.test))
