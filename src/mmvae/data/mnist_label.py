"""MNIST image + one-hot digit label: the MVAE setting (Wu & Goodman 2018, Sec. 5.1)."""
from __future__ import annotations

import numpy as np
import torch

from .dataset import DatasetSplits, ModalitySpec, MultimodalDataset, one_hot
from .registry import register_dataset
from .sources.mnist_sample import load_mnist_sample, mnist_sample_available, seeded_split


def image_label_splits(images: np.ndarray, labels: np.ndarray, train_idx, test_idx, description: str) -> DatasetSplits:
    """Image (1, 28, 28) in [0, 1] with a Bernoulli likelihood, label one-hot with a Categorical one."""
    specs = {"image": ModalitySpec("image", "image", (1, 28, 28), "bernoulli"),
             "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}

    def part(idx):
        y = torch.from_numpy(labels[idx].astype(np.int64))
        x = torch.from_numpy(images[idx].astype(np.float32) / 255.0)[:, None]
        return MultimodalDataset(specs, {"image": x, "label": one_hot(y, 10)}, label=y, num_classes=10,
                                 description=description)

    return DatasetSplits(part(train_idx), part(test_idx))


@register_dataset("mnist-label", "MNIST digit + one-hot label (MVAE setting); offline 5,000-digit sample",
                  available=mnist_sample_available)
def mnist_label(seed: int = 0, **_) -> DatasetSplits:
    images, labels = load_mnist_sample()
    tr, te = seeded_split(len(labels), 0.1, 0)
    return image_label_splits(images, labels, tr, te, "MNIST + label from the 5,000-digit sample")
