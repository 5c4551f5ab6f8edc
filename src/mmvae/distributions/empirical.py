"""The empirical distribution of inputs seen in training, kept with a model's weights.

A conditional model p(x_t | x_C) (CVAE: Sohn, Lee & Yan 2015) has no p(x_C) of its own; to draw joint
samples (x_C, x_t) it draws x_C from the first N training rows it saw (uniformly, with replacement) and
x_t from the model. :class:`InputBank` is that store as a mixin of ``nn.Module``: buffers
``bank_<modality>`` (N, *shape) and ``bank_filled`` (how many rows are stored) on the model itself, so
they are saved in its state dict (``model.safetensors``) and a loaded run generates as the trained one.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor


class InputBank:
    """Mixin for an ``nn.Module``: call :meth:`init_bank` in ``__init__``, :meth:`remember_inputs` on each
    training batch (the loss does it), :meth:`draw_inputs` to sample stored rows."""

    def init_bank(self, shapes: Mapping[str, tuple[int, ...]], size: int) -> None:
        self.banked = list(shapes)
        for m, shape in shapes.items():
            self.register_buffer(f"bank_{m}", torch.zeros(int(size), *shape))
        self.register_buffer("bank_filled", torch.zeros((), dtype=torch.long))

    def remember_inputs(self, data: Mapping[str, Tensor]) -> None:
        """Store the first rows of ``data`` while training, until the bank is full."""
        size, have = len(getattr(self, f"bank_{self.banked[0]}")), int(self.bank_filled)
        if self.training and have < size:
            take = min(size - have, len(data[self.banked[0]]))
            with torch.no_grad():
                for m in self.banked:
                    getattr(self, f"bank_{m}")[have:have + take] = data[m][:take]
                self.bank_filled += take

    def draw_inputs(self, n: int) -> dict[str, Tensor]:
        """``n`` stored rows drawn uniformly with replacement; ValueError while the bank is empty."""
        if int(self.bank_filled) == 0:
            raise ValueError(f"{type(self).__name__} draws from the inputs it stored in training: it has none yet "
                             f"(train it first)")
        pick = torch.randint(0, int(self.bank_filled), (n,), device=self.bank_filled.device)
        return {m: getattr(self, f"bank_{m}")[pick] for m in self.banked}
