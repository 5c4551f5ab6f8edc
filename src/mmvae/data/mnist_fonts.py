"""MNIST-Fonts: MNIST paired by class with SVHN-like digits rendered from fonts, fully offline.

A stand-in for MNIST-SVHN (Shi et al. 2019) where SVHN is not available: the second modality ``fonts``
is 3x32x32 colour digits rendered from matplotlib's TrueType fonts on photo patches, with SVHN's
nuisances (size, position, rotation/shear, neighbouring digits at the edges, blur, noise, any contrast;
``sources/font_digits.py``). For every MNIST digit of a split one font picture of the same class is
rendered, so both pools hold the same number of images per class, and the pairs follow MMVAE's
construction (``mnist_svhn.mmvae_pairs``): per class, ``dm`` independent random permutations of each
pool are concatenated, so every image appears ``dm`` times with random same-class partners.
Networks and likelihoods are those of MNIST-SVHN (``mnist_spec``: the MNIST MLP; ``svhn_spec``: the
32x32 conv networks). The pictures and pairs depend on ``data_seed`` only (not on the training seed).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from ..errors import UserError
from .dataset import DatasetSplits
from .lazy import IndexedRows, LazyDataset
from .mnist import mnist_availability, mnist_digits
from .mnist_svhn import mmvae_pairs, mnist_spec
from .registry import register_dataset
from .sources.font_digits import render_font_digits
from .svhn import svhn_spec


def part_seeds(data_seed: int, part: int) -> tuple[int, int]:
    """Independent seeds (rendering, pairing) for a split (0: train, 1: test)."""
    render, pairing = np.random.SeedSequence([int(data_seed), part]).generate_state(2)
    return int(render), int(pairing)


@register_dataset("mnist-fonts", "MNIST paired by class with SVHN-like font digits on photos (3x32x32), offline "
                  "stand-in for MNIST-SVHN; options dm=10 (pairs per image), data_seed, source=auto|full|sample, "
                  "n (MNIST digits)", available=mnist_availability)
def mnist_fonts(seed: int = 0, dm: int = 10, data_seed: int = 0, source: str = "auto", n: int | None = None,
                data_dir=None, download: bool = True, **_) -> DatasetSplits:
    if isinstance(dm, bool) or not isinstance(dm, numbers.Integral) or dm < 1:
        raise UserError(f"mnist-fonts: data.dm={dm!r} must be a whole number >= 1 (pairs per image)")
    d = mnist_digits(source, data_dir, download, n)
    specs = {"mnist": mnist_spec(), "fonts": svhn_spec("fonts")}
    origin = "full MNIST" if d.full else "the 5,000-digit MNIST sample"

    def part(idx: np.ndarray, which: int, name: str) -> LazyDataset:
        labels = d.labels[idx]
        render_seed, pair_seed = part_seeds(data_seed, which)
        fonts = render_font_digits(labels, render_seed)                 # one picture per digit, same class
        ia, ib = mmvae_pairs(labels, labels, int(dm), max(len(labels), 1), pair_seed)
        data = {"mnist": IndexedRows(torch.from_numpy(d.images[idx][:, None]), torch.from_numpy(ia), 1 / 255),
                "fonts": IndexedRows(torch.from_numpy(fonts), torch.from_numpy(ib), 1 / 255)}
        return LazyDataset(specs, data, label=torch.from_numpy(labels[ia]), num_classes=10,
                           description=f"MNIST-Fonts {name} pairs from {origin} (dm={dm})")

    return DatasetSplits(part(d.train, 0, "train"), part(d.test, 1, "test"))
