"""SVHN cropped digits (Netzer et al. 2011): the ``train_32x32.mat`` / ``test_32x32.mat`` MATLAB files.

Each file holds ``X`` of shape (32, 32, 3, N) uint8 and ``y`` of shape (N, 1) with digits 1..10, where
10 stands for the digit 0.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,) in 0..9."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except (OSError, ValueError, NotImplementedError, TypeError) as e:
        raise UserError(f"cannot read '{path}' as a MATLAB file ({type(e).__name__}: {e}): fetch it again") from None
    if "X" not in mat or "y" not in mat:
        raise UserError(f"'{path}' has no X and y arrays: expected an SVHN *_32x32.mat file")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise UserError(f"'{path}': X has shape {x.shape} and y {len(y)} entries: expected X (32, 32, 3, N), y (N,)")
    labels = y.astype(np.int64) % 10  # SVHN writes the digit 0 as 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8)
    return images, labels
