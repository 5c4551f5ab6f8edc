"""MNIST-SVHN pairing and lazy batch gathering at the real sizes, on synthetic arrays (no download).

Reports the time to build MMVAE's pairs (dm=30, max_d=10000) from label arrays of MNIST's and SVHN's
training sizes and class frequencies, the memory the lazy columns take against dense float32, and the
cost of gathering a 128-pair batch from uint8 images (``IndexedRows``) against slicing dense floats.

    OMP_NUM_THREADS=1 python bench/datasets_pairing.py
"""
from __future__ import annotations

import time

import numpy as np
import torch

from mmvae.data.lazy import IndexedRows
from mmvae.data.mnist_svhn import mmvae_pairs

# Per-digit training counts of MNIST and SVHN (published class frequencies of the two training sets).
MNIST_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
SVHN_COUNTS = [4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659]


def labels(counts, seed):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(10), counts))


def main() -> None:
    torch.manual_seed(0)
    lm, ls = labels(MNIST_COUNTS, 0), labels(SVHN_COUNTS, 1)
    t = time.perf_counter()
    ia, ib = mmvae_pairs(lm, ls, dm=30, max_d=10_000, seed=0)
    build = time.perf_counter() - t
    mnist = torch.randint(0, 256, (len(lm), 1, 28, 28), dtype=torch.uint8)
    svhn = torch.randint(0, 256, (len(ls), 3, 32, 32), dtype=torch.uint8)
    col_m = IndexedRows(mnist, torch.from_numpy(ia), 1 / 255)
    col_s = IndexedRows(svhn, torch.from_numpy(ib), 1 / 255)
    lazy_mb = (mnist.numel() + svhn.numel() + 2 * 8 * len(ia)) / 2**20
    dense_gb = len(ia) * (784 + 3072) * 4 / 2**30
    order = torch.randperm(len(ia))
    reps = 2000
    t = time.perf_counter()
    for i in range(reps):
        idx = order[i * 128:(i + 1) * 128]
        col_m[idx], col_s[idx]
    lazy_us = (time.perf_counter() - t) / reps * 1e6
    dense_m, dense_s = torch.rand(20000, 1, 28, 28), torch.rand(20000, 3, 32, 32)   # a dense slice for comparison
    t = time.perf_counter()
    for i in range(reps):
        idx = torch.randint(0, 20000, (128,))
        dense_m[idx], dense_s[idx]
    dense_us = (time.perf_counter() - t) / reps * 1e6
    print(f"pairs: {len(ia):,} (dm=30, max_d=10000), built in {build:.2f} s")
    print(f"memory: lazy {lazy_mb:.0f} MiB (uint8 images + int64 pair indices) vs dense float32 {dense_gb:.1f} GiB")
    print(f"128-pair batch gather: lazy uint8 {lazy_us:.0f} us, dense float32 index {dense_us:.0f} us")


if __name__ == "__main__":
    main()
