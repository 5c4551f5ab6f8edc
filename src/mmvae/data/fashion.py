"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) image + one-hot class: the MVAE image-label setting on
clothes. Read from ``--data-dir``, the cache, or where the Debian package ``dataset-fashion-mnist`` puts
it (/usr/share/datasets/fashion-mnist); downloaded with checksums otherwise."""
from __future__ import annotations

import numpy as np

from .dataset import DatasetSplits, sample_rows
from .mnist_label import image_label_splits
from .registry import register_dataset
from .sources.cache import availability
from .sources.catalog import FASHION_MNIST
from .sources.readers import load_idx_dataset


@register_dataset("fashion-label", "Fashion-MNIST image + one-hot class (10 clothes), 60k/10k; option n (rows)",
                  available=lambda: availability(FASHION_MNIST))
def fashion_label(seed: int = 0, data_dir=None, download: bool = True, n: int | None = None, **_) -> DatasetSplits:
    xtr, ytr, xte, yte = load_idx_dataset(FASHION_MNIST, data_dir, download)
    images, labels = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
    is_test = np.r_[np.zeros(len(ytr), bool), np.ones(len(yte), bool)]
    keep = sample_rows(len(labels), n)
    if keep is not None:
        k = keep.numpy()
        images, labels, is_test = images[k], labels[k], is_test[k]
    return image_label_splits(images, labels, np.nonzero(~is_test)[0], np.nonzero(is_test)[0],
                              "Fashion-MNIST image + class")
