"""The one batch type used everywhere: modality tensors plus a boolean mask of observed rows."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """A minibatch of multimodal data.

    ``data[m]`` has shape ``(B, *shape_m)``; ``mask[m]`` is a ``(B,)`` bool tensor, True where modality
    ``m`` is observed in that row. Rows where a modality is missing may hold anything (zeros, NaN):
    the models never encode them and never score them. ``label`` is an optional ``(B,)`` class index
    used by evaluation only. A fully observed batch simply has masks of ones (``complete`` is True).
    """

    data: dict[str, Tensor]
    mask: dict[str, Tensor] = field(default_factory=dict)
    label: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.size
        for name, x in self.data.items():
            if name not in self.mask:
                self.mask[name] = torch.ones(n, dtype=torch.bool, device=x.device)

    @property
    def size(self) -> int:
        return next(iter(self.data.values())).shape[0]

    @property
    def modalities(self) -> list[str]:
        return list(self.data)

    @property
    def complete(self) -> bool:
        return all(bool(m.all()) for m in self.mask.values())

    def observed(self, name: str) -> Tensor:
        return self.mask[name]

    def incomplete(self, names) -> list[str]:
        """The modalities of ``names`` absent from the batch or missing in some row (models without masks
        refuse such batches)."""
        return [m for m in names if m not in self.data or not bool(self.mask[m].all())]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            {k: v.to(device, non_blocking=True) for k, v in self.data.items()},
            {k: v.to(device, non_blocking=True) for k, v in self.mask.items()},
            None if self.label is None else self.label.to(device),
        )

    def select(self, names) -> "Batch":
        """The same rows restricted to the given modalities."""
        names = list(names)
        return Batch({k: self.data[k] for k in names}, {k: self.mask[k] for k in names}, self.label)

    def rows(self, index: Tensor) -> "Batch":
        return Batch(
            {k: v[index] for k, v in self.data.items()},
            {k: v[index] for k, v in self.mask.items()},
            None if self.label is None else self.label[index],
        )
