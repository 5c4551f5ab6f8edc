"""MNIST-Fonts: rendering speed, how hard the font modality is, and the sample picture.

Measures (1) the time to render 20,000 font digits (glyph bank and photographs loaded beforehand, as
after a first use in a process), (2) the test accuracy of logistic regression on raw pixels and of a
tiny CNN trained for a few epochs on rendered pictures (chance: 0.10), and (3) writes
docs/mnist-fonts.png (three MNIST / fonts pairs per digit, from the dataset itself).

    OMP_NUM_THREADS=1 python bench/mnist_fonts.py
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmvae.data.registry import load_dataset
from mmvae.data.sources.font_digits import backgrounds, glyph_bank, render_font_digits

ROOT = Path(__file__).resolve().parents[1]


def render_speed(n: int = 20_000) -> float:
    glyph_bank(), backgrounds()
    t = time.perf_counter()
    render_font_digits(np.arange(n) % 10, 0)
    return time.perf_counter() - t


def pictures(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.random.default_rng(seed).permutation(np.arange(n) % 10)
    return render_font_digits(y, seed).astype(np.float32) / 255.0, y


def logistic_accuracy(n_train: int = 500) -> float:
    from sklearn.linear_model import LogisticRegression

    (xtr, ytr), (xte, yte) = pictures(n_train, 1), pictures(1000, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=300, C=0.1).fit(xtr.reshape(n_train, -1), ytr)
    return float(clf.score(xte.reshape(len(yte), -1), yte))


def tiny_cnn(n_train: int = 4000, epochs: int = 8) -> list[float]:
    """Test accuracy after each epoch of a three-layer CNN (Adam 2e-3, batch 64)."""
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = pictures(n_train, 1), pictures(1000, 2)
    xtr, ytr, xte, yte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 16, 10))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    accuracy = []
    for _ in range(epochs):
        perm = torch.randperm(n_train)
        for i in range(0, n_train, 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accuracy.append(float((net(xte).argmax(1) == yte).float().mean()))
    return accuracy


def sample_picture(path: Path, per_class: int = 3) -> None:
    """Columns: digits 0-9; rows: MNIST above its paired fonts picture, ``per_class`` pairs each."""
    import matplotlib.image

    test = load_dataset("mnist-fonts", source="sample", dm=1).test
    labels = test.label.numpy()
    first = [np.nonzero(labels == c)[0][:per_class] for c in range(10)]
    rows = []
    for k in range(per_class):
        idx = torch.tensor([f[k] for f in first])
        b = test.batch(idx)
        mnist = torch.nn.functional.pad(b.data["mnist"], (2, 2, 2, 2)).expand(-1, 3, -1, -1)
        for x in (mnist, b.data["fonts"]):
            rows.append(torch.cat(list(x.permute(0, 2, 3, 1)), 1))
    grid = torch.cat(rows, 0).numpy()
    grid = grid.repeat(2, 0).repeat(2, 1)
    matplotlib.image.imsave(path, np.clip(grid, 0, 1))


def main() -> None:
    print(f"render 20,000 pictures: {render_speed():.2f} s")
    print(f"logistic regression, raw pixels, 500 training pictures: test accuracy {logistic_accuracy():.3f} "
          f"(chance 0.100)")
    acc = tiny_cnn()
    print("tiny CNN, 4,000 training pictures, test accuracy per epoch: " + " ".join(f"{a:.3f}" for a in acc))
    out = ROOT / "docs" / "mnist-fonts.png"
    sample_picture(out)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
