"""Rows computed when a batch asks for them, for datasets too large to hold as dense float tensors.

MMVAE's MNIST-SVHN pairs repeat every image 30 times (1.68M pairs: 26 GB as float32), and one-hot text
is (N, L, V) (CUB: ~18 GB). Both are stored compactly (uint8 images plus pair indices; token ids) and
expanded per batch. ``LazyRows`` offers the few tensor features the library uses on dataset columns:
``shape``, ``len``, ``dtype``, ``is_floating_point()`` and indexing, which returns a real tensor.
``LazyDataset.subset`` keeps the rows lazy (validation splits, ``data.keep``).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from .dataset import MultimodalDataset


class LazyRows:
    """A column of ``len(positions)`` rows; row i is ``self.materialize(positions[i])``."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, positions: Tensor, row_shape: tuple[int, ...]):
        self.positions = positions.long()
        self.row_shape = tuple(row_shape)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.positions), *self.row_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.positions)

    def is_floating_point(self) -> bool:
        return True

    def __getitem__(self, index) -> Tensor:
        pos = self.positions[index]
        return self.materialize(pos.reshape(-1)).reshape(*pos.shape, *self.row_shape)

    def rows(self, index) -> "LazyRows":
        """The same column restricted to ``index``, still lazy."""
        raise NotImplementedError

    def materialize(self, positions: Tensor) -> Tensor:
        raise NotImplementedError

    def to(self, *args, **kwargs) -> Tensor:
        return self[:].to(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)})"


class IndexedRows(LazyRows):
    """Rows ``base[positions] * scale`` (uint8 images scaled to [0, 1], repeated by pair indices)."""

    def __init__(self, base: Tensor, positions: Tensor, scale: float = 1.0):
        super().__init__(positions, tuple(base.shape[1:]))
        self.base, self.scale = base, float(scale)

    def materialize(self, positions: Tensor) -> Tensor:
        return self.base[positions].float() * self.scale

    def rows(self, index) -> "IndexedRows":
        return IndexedRows(self.base, self.positions[index], self.scale)


class OneHotRows(LazyRows):
    """Token ids (M, L) as one-hot (L, V) rows; id 0 (padding) gives an all-zero row."""

    def __init__(self, ids: Tensor, vocab_size: int, positions: Tensor | None = None):
        positions = torch.arange(len(ids)) if positions is None else positions
        super().__init__(positions, (ids.shape[1], int(vocab_size)))
        self.ids, self.vocab_size = ids.long(), int(vocab_size)

    def materialize(self, positions: Tensor) -> Tensor:
        from .text import one_hot_tokens

        return one_hot_tokens(self.ids[positions], self.vocab_size)

    def rows(self, index) -> "OneHotRows":
        return OneHotRows(self.ids, self.vocab_size, self.positions[index])


class LazyDataset(MultimodalDataset):
    """A MultimodalDataset whose columns may be LazyRows; ``subset`` keeps them lazy."""

    def subset(self, index: Tensor) -> "LazyDataset":
        return replace(
            self,
            data={k: v.rows(index) if isinstance(v, LazyRows) else v[index] for k, v in self.data.items()},
            mask={k: v[index] for k, v in self.mask.items()},
            label=None if self.label is None else self.label[index],
        )
