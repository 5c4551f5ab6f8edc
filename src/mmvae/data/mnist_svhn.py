"""MNIST-SVHN (Shi, Siddharth, Paige & Torr 2019, "Variational Mixture-of-Experts Autoencoders", Sec. 5).

Pairs share the digit only. For every digit d both index lists are truncated to
n_d = min(#MNIST_d, #SVHN_d, max_d) and ``dm`` independent random permutations of each are concatenated,
so every kept image appears ``dm`` times with random same-digit partners (dm = 30, max_d = 10,000:
~1.68M training and ~300k test pairs). ``dm=1`` gives the one-to-one pairing MEME uses (~56k / ~10k).
The index files are saved in the cache (``$MMVAE_DATA/mnist-svhn``) so a pairing is rebuilt exactly.
Networks follow MEME's appendix K: an MLP for MNIST (ModalitySpec.network = "mnist-mlp"), the 32x32
conv for SVHN; Laplace likelihoods, scale 0.75 by default. Images stay uint8 in memory and are gathered
per batch (``lazy.IndexedRows``), so the 1.68M pairs cost index arrays, not 26 GB of floats.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from ..errors import UserError
from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec, sample_rows
from .lazy import IndexedRows, LazyDataset
from .registry import register_dataset
from .sources.cache import availability, cache_dir
from .sources.catalog import MNIST, SVHN
from .sources.readers import load_idx_dataset, load_svhn
from .svhn import svhn_spec


def mmvae_pairs(labels_a: np.ndarray, labels_b: np.ndarray, dm: int = 30, max_d: int = 10_000,
                seed: int = 0, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (ia, ib) with labels_a[ia] == labels_b[ib]: dm permutations of n_d items per digit."""
    if int(dm) < 1 or int(max_d) < 1:
        raise UserError(f"mnist-svhn: dm={dm} and max_d={max_d} must be at least 1")
    rng = np.random.default_rng(seed)
    out_a, out_b = [], []
    for d in range(classes):
        ia, ib = np.nonzero(labels_a == d)[0], np.nonzero(labels_b == d)[0]
        n = min(len(ia), len(ib), int(max_d))
        ia, ib = ia[:n], ib[:n]
        for _ in range(int(dm)):
            out_a.append(ia[rng.permutation(n)])
            out_b.append(ib[rng.permutation(n)])
    return (np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)) if out_a else \
        (np.zeros(0, np.int64), np.zeros(0, np.int64))


def pair_index_file(part: str, labels_a: np.ndarray, labels_b: np.ndarray, dm: int, max_d: int, seed: int):
    """Cache path of a pairing; the name holds a hash of both label arrays, so other data gets other files."""
    digest = hashlib.sha1(labels_a.astype(np.int64).tobytes() + b"|" + labels_b.astype(np.int64).tobytes())
    return cache_dir("mnist-svhn") / f"{part}-dm{dm}-maxd{max_d}-seed{seed}-{digest.hexdigest()[:10]}.npz"


def saved_pairs(part: str, labels_a: np.ndarray, labels_b: np.ndarray, dm: int, max_d: int, seed: int):
    """Load the pairing from its index file, or build and save it (temp file, then rename)."""
    path = pair_index_file(part, labels_a, labels_b, dm, max_d, seed)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                ia, ib = z["mnist"], z["svhn"]
            if len(ia) == len(ib) and (labels_a[ia] == labels_b[ib]).all():
                return ia, ib
        except (OSError, ValueError, KeyError, IndexError):
            pass  # unreadable or stale: rebuild it below
    ia, ib = mmvae_pairs(labels_a, labels_b, dm, max_d, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, mnist=ia, svhn=ib)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs rebuilding the pairing (it is deterministic by seed)
    return ia, ib


def mnist_spec() -> ModalitySpec:
    return ModalitySpec("mnist", "image", (1, 28, 28), IMAGE_LIKELIHOOD, network="mnist-mlp")


def mnist_svhn_available() -> tuple[bool, str]:
    (ok_m, how_m), (ok_s, how_s) = availability(MNIST), availability(SVHN)
    return ok_m and ok_s, f"MNIST: {how_m}; SVHN: {how_s}"


@register_dataset("mnist-svhn", "MNIST-SVHN pairs sharing the digit (MMVAE); options dm=30, max_d=10000, "
                  "pairing_seed=0, n (pairs per split, for quick runs)", available=mnist_svhn_available)
def mnist_svhn(seed: int = 0, dm: int = 30, max_d: int = 10_000, pairing_seed: int = 0, data_dir=None,
               download: bool = True, n: int | None = None, **_) -> DatasetSplits:
    mx_tr, my_tr, mx_te, my_te = load_idx_dataset(MNIST, data_dir, download)
    sx_tr, sy_tr, sx_te, sy_te = load_svhn(data_dir, download)
    specs = {"mnist": mnist_spec(), "svhn": svhn_spec()}

    def part(name, mx, my, sx, sy, offset):
        ia, ib = saved_pairs(name, my, sy, int(dm), int(max_d), int(pairing_seed) + offset)
        keep = sample_rows(len(ia), n, int(pairing_seed) + offset)
        if keep is not None:
            ia, ib = ia[keep.numpy()], ib[keep.numpy()]
        data = {"mnist": IndexedRows(torch.from_numpy(mx[:, None]), torch.from_numpy(ia), 1 / 255),
                "svhn": IndexedRows(torch.from_numpy(sx), torch.from_numpy(ib), 1 / 255)}
        return LazyDataset(specs, data, label=torch.from_numpy(my[ia]), num_classes=10,
                           description=f"MNIST-SVHN {name} pairs (dm={dm}, max_d={max_d})")

    return DatasetSplits(part("train", mx_tr, my_tr, sx_tr, sy_tr, 0), part("test", mx_te, my_te, sx_te, sy_te, 1))
