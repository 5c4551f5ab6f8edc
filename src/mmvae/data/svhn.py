"""SVHN alone (Netzer et al. 2011): 32x32 colour house-number digits, 73,257 train / 26,032 test."""
from __future__ import annotations

import numpy as np
import torch

from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec, sample_rows
from .lazy import IndexedRows, LazyDataset
from .registry import register_dataset
from .sources.cache import availability
from .sources.catalog import SVHN
from .sources.readers import load_svhn


def svhn_spec(name: str = "svhn") -> ModalitySpec:
    """3x32x32 in [0, 1] with the default image likelihood (the MMVAE/MEME papers' Laplace: the presets)."""
    return ModalitySpec(name, "image", (3, 32, 32), IMAGE_LIKELIHOOD)


@register_dataset("svhn", "SVHN digits alone (label kept for evaluation), 73k/26k; option n (rows per split)",
                  available=lambda: availability(SVHN))
def svhn(seed: int = 0, data_dir=None, download: bool = True, n: int | None = None, **_) -> DatasetSplits:
    xtr, ytr, xte, yte = load_svhn(data_dir, download)
    specs = {"svhn": svhn_spec()}

    def part(x: np.ndarray, y: np.ndarray, rows_seed: int):
        keep = sample_rows(len(y), n, rows_seed)
        if keep is not None:
            x, y = x[keep.numpy()], y[keep.numpy()]
        # uint8 in memory (a quarter of float32), scaled to [0, 1] per batch
        data = IndexedRows(torch.from_numpy(x), torch.arange(len(y)), 1 / 255)
        return LazyDataset(specs, {"svhn": data}, label=torch.from_numpy(y), num_classes=10,
                           description="SVHN 32x32")

    return DatasetSplits(part(xtr, ytr, 0), part(xte, yte, 1))
