"""MNIST image + one-hot digit label: the MVAE setting (Wu & Goodman 2018, Sec. 5.1)."""
from __future__ import annotations

import numpy as np
import torch

from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec, MultimodalDataset, one_hot
from .registry import register_dataset
from .mnist import mnist_availability, mnist_digits


def image_label_splits(images: np.ndarray, labels: np.ndarray, train_idx, test_idx, description: str) -> DatasetSplits:
    """Image (1, 28, 28) in [0, 1] (likelihood ``IMAGE_LIKELIHOOD``), label one-hot with a Categorical one."""
    specs = {"image": ModalitySpec("image", "image", (1, 28, 28), IMAGE_LIKELIHOOD),
             "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}

    def part(idx):
        y = torch.from_numpy(labels[idx].astype(np.int64))
        x = torch.from_numpy(images[idx].astype(np.float32) / 255.0)[:, None]
        return MultimodalDataset(specs, {"image": x, "label": one_hot(y, 10)}, label=y, num_classes=10,
                                 description=description)

    return DatasetSplits(part(train_idx), part(test_idx))


@register_dataset("mnist-label", "MNIST digit + one-hot label (MVAE setting); full MNIST when present, else the offline "
                  "5,000-digit sample; options source=auto|full|sample, n (rows)", available=mnist_availability)
def mnist_label(seed: int = 0, n: int | None = None, source: str = "auto", data_dir=None, download: bool = True,
                **_) -> DatasetSplits:
    d = mnist_digits(source, data_dir, download, n)
    what = "full MNIST" if d.full else "the 5,000-digit sample"
    return image_label_splits(d.images, d.labels, d.train, d.test, f"MNIST + label from {what}")
