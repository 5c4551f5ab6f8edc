"""Colour photographs shipped inside scikit-image, used as PolyMNIST backgrounds offline."""
from __future__ import annotations

import numpy as np

# Five colour photographs, one per PolyMNIST modality (Sutter et al. 2021 used five of their own).
PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def load_photograph(name: str, downscale: int = 2) -> np.ndarray:
    """A photograph as float32 (H, W, 3) in [0, 1], block-averaged by ``downscale`` so crops show texture."""
    import skimage.data

    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    h, w = (img.shape[0] // downscale) * downscale, (img.shape[1] // downscale) * downscale
    img = img[:h, :w].reshape(h // downscale, downscale, w // downscale, downscale, 3).mean((1, 3))
    return img
