"""In-memory multimodal datasets: tensors sliced by index, never per-sample ``__getitem__``."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch import Tensor

from ..errors import UserError
from .batch import Batch

KINDS = ("image", "categorical", "vector", "text")
# The default likelihood of every image in [0, 1], grey or colour, in the built-in datasets and a user's
# .npz (data/arrays.py): Bernoulli on grey levels (the cross-entropy form). Chosen by measurement against
# Laplace/Normal with fixed or learned scale and the continuous Bernoulli: docs/defaults.md.
IMAGE_LIKELIHOOD = "bernoulli"


@dataclass(frozen=True)
class ModalitySpec:
    """What a modality is: its name, kind, per-sample shape and default likelihood.

    ``kind`` is one of ``image`` (C, H, W in [0, 1]), ``categorical`` (one-hot over ``num_classes``),
    ``text`` (one-hot tokens ``(L, V)``, all-zero rows are padding) or ``vector`` (any other real
    array; networks flatten it). ``network`` names a registered network other than the kind's default
    (e.g. ``"mnist-mlp"`` for MNIST in MNIST-SVHN, where 28x28 images would otherwise get the conv nets).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    likelihood: str
    num_classes: int | None = None
    vocab: tuple[str, ...] | None = None
    network: str | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "shape": list(self.shape), "likelihood": self.likelihood}
        if self.num_classes is not None:
            d["num_classes"] = self.num_classes
        if self.vocab is not None:
            d["vocab"] = list(self.vocab)
        if self.network is not None:
            d["network"] = self.network
        return d

    @staticmethod
    def from_dict(d: dict) -> "ModalitySpec":
        return ModalitySpec(
            d["name"], d["kind"], tuple(d["shape"]), d["likelihood"], d.get("num_classes"),
            tuple(d["vocab"]) if d.get("vocab") is not None else None, d.get("network"),
        )


@dataclass
class MultimodalDataset:
    """Tensors of N rows per modality, a per-modality observed mask, and optional integer labels."""

    specs: dict[str, ModalitySpec]
    data: dict[str, Tensor]
    mask: dict[str, Tensor] = field(default_factory=dict)
    label: Tensor | None = None
    num_classes: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self)
        for name in self.data:
            if name not in self.mask:
                self.mask[name] = torch.ones(n, dtype=torch.bool)
        if self.label is not None and self.num_classes is None:
            self.num_classes = int(self.label.max()) + 1 if len(self.label) else 0

    def __len__(self) -> int:
        return next(iter(self.data.values())).shape[0]

    @property
    def modalities(self) -> list[str]:
        return list(self.specs)

    def batch(self, index: Tensor | slice) -> Batch:
        return Batch(
            {k: v[index] for k, v in self.data.items()},
            {k: v[index] for k, v in self.mask.items()},
            None if self.label is None else self.label[index],
        )

    def subset(self, index: Tensor) -> "MultimodalDataset":
        return replace(
            self,
            data={k: v[index] for k, v in self.data.items()},
            mask={k: v[index] for k, v in self.mask.items()},
            label=None if self.label is None else self.label[index],
        )

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                start: int = 0) -> Iterator[Batch]:
        """Minibatches by index slicing; ``start`` skips the first ``start`` batches (exact resume)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for i in range(start * batch_size, n, batch_size):
            idx = order[i:i + batch_size] if shuffle else slice(i, i + batch_size)
            yield self.batch(idx)

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size

    def counts(self) -> dict[str, int]:
        """Rows by which modalities they observe, e.g. {'a+b': 900, 'a': 50, 'b': 50}."""
        names = self.modalities
        keys: dict[str, int] = {}
        stacked = torch.stack([self.mask[m] for m in names], 1)
        patterns, counts = torch.unique(stacked, dim=0, return_counts=True)
        for p, c in zip(patterns.tolist(), counts.tolist()):
            key = "+".join(m for m, o in zip(names, p) if o) or "none"
            keys[key] = c
        return keys


@dataclass
class DatasetSplits:
    """A dataset's train and test parts (validation is carved out of train by the trainer)."""

    train: MultimodalDataset
    test: MultimodalDataset
    name: str = ""

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return self.train.specs


def validation_split(data: MultimodalDataset, fraction: float, seed: int) -> tuple[MultimodalDataset, MultimodalDataset]:
    """A seeded split of the training rows into (train, validation)."""
    n = len(data)
    n_val = int(round(n * fraction))
    if fraction <= 0 or n_val == 0:
        return data, data.subset(torch.arange(0))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    return data.subset(perm[n_val:].sort().values), data.subset(perm[:n_val].sort().values)


def sample_rows(total: int, n: int | None, seed: int = 0) -> Tensor | None:
    """Sorted indices of a seeded random subset of ``n`` of ``total`` rows (None: keep all); the
    ``data.n`` option of the built-in datasets, for quick runs."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise UserError(f"data.n={n!r}: give a whole number of rows")
    if n >= total:
        return None
    if n < 2:
        raise UserError(f"data.n={n} is too small: use at least 2 rows")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: int(n)].sort().values


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()
