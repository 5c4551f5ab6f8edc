"""A synthetic bimodal dataset with a shared discrete factor: learnable in seconds, for tests and demos."""
from __future__ import annotations

import torch

from .dataset import DatasetSplits, ModalitySpec, MultimodalDataset
from .registry import register_dataset


def toy_bimodal(n: int = 2000, classes: int = 5, dim: int = 16, noise: float = 0.3, seed: int = 0) -> DatasetSplits:
    """Rows share a class c; ``a = P_a[c] + noise``, ``b = P_b[c] + noise`` with random prototypes P."""
    g = torch.Generator().manual_seed(seed)
    protos = {m: torch.randn(classes, dim, generator=g) * 1.5 for m in ("a", "b")}
    y = torch.randint(0, classes, (n,), generator=g)
    data = {m: protos[m][y] + noise * torch.randn(n, dim, generator=g) for m in protos}
    specs = {m: ModalitySpec(m, "vector", (dim,), "normal") for m in protos}
    n_test = n // 5
    full = MultimodalDataset(specs, data, label=y, num_classes=classes,
                             description="toy bimodal: prototypes of a shared class plus noise")
    train, test = full.subset(torch.arange(n_test, n)), full.subset(torch.arange(n_test))
    for part in (full, train, test):  # set after subset(): dataclasses.replace would drop the attribute
        part.prototypes = protos  # type: ignore[attr-defined]
    return DatasetSplits(train, test, name="toy")


@register_dataset("toy", "synthetic bimodal vectors sharing a class (seconds to learn); options n, classes, dim")
def toy(seed: int = 0, n: int = 2000, classes: int = 5, dim: int = 16, **_) -> DatasetSplits:
    return toy_bimodal(int(n), int(classes), int(dim), seed=0)
