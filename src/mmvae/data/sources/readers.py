"""Read a located dataset into numpy arrays (cached per process, keyed by the files' paths and times)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import UserError
from .cache import DataSource, present_or_fetch
from .catalog import SVHN
from .idx import read_idx
from .svhn import read_svhn_mat

Split4 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _key(paths: dict[str, Path]) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths.values())


@lru_cache(maxsize=4)
def _read_idx_set(key: tuple) -> Split4:
    arrays = [read_idx(p) for p, _, _ in key]
    xtr, ytr, xte, yte = arrays
    for x, y, part in ((xtr, ytr, "train"), (xte, yte, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"the {part} IDX files hold images {x.shape} and labels {y.shape}: "
                            "expected (N, 28, 28) images and N labels")
    return xtr.astype(np.uint8), ytr.astype(np.int64), xte.astype(np.uint8), yte.astype(np.int64)


def load_idx_dataset(source: DataSource, data_dir=None, download: bool = True) -> Split4:
    """(train images uint8 (N, 28, 28), train labels, test images, test labels) of an IDX dataset."""
    return _read_idx_set(_key(present_or_fetch(source, data_dir, download)))


@lru_cache(maxsize=2)
def _read_svhn(key: tuple) -> Split4:
    (train, _, _), (test, _, _) = key
    return (*read_svhn_mat(train), *read_svhn_mat(test))


def load_svhn(data_dir=None, download: bool = True) -> Split4:
    """(train images uint8 (N, 3, 32, 32), labels 0..9, test images, test labels)."""
    return _read_svhn(_key(present_or_fetch(SVHN, data_dir, download)))
