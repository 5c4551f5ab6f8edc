"""Chance levels: what a figure is worth when the model has learnt nothing, so every metric has a reference.

* **Accuracy-type figures** (classifier accuracy, cross coherence, latent accuracy): a prediction that
  ignores the input. With balanced test labels (largest class at most 10 % above 1/C) that is 1/C; with
  unbalanced labels the majority-class rate (what always answering the largest class scores), and the
  rule says which.
* **Joint coherence**: the classifiers agree on modalities generated from one z ~ p(z). If the modalities
  were generated independently with the class frequencies f_m(c) the classifiers actually predict on those
  samples, they would agree with probability Σ_c Π_m f_m(c) (C^−(M−1) for uniform predictions). A model
  whose prior samples all decode to one blob that every classifier calls "1" has a high joint coherence
  *and* a high chance level: only the gap means anything.
* **Log-likelihood of a categorical modality**: the uniform distribution over its C classes,
  −log C per categorical position. For text (one-hot words (L, V), padding rows all zero) the uniform
  over the V vocabulary entries for every scored token (the words and the end token; padding is not
  scored): −n̄ · log V with n̄ the mean number of scored tokens of the rows evaluated.
* ``flag``: "below" when a figure is at or below its chance level, "near" when an accuracy-type figure is
  within two binomial standard errors above it (not distinguishable from chance on n rows), else None.

Everything here is plain numbers, stored in metrics.json under ``chance`` so any report can read it.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from ..data.dataset import ModalitySpec

BALANCE_TOLERANCE = 1.1   # labels count as balanced when the largest class is at most 10 % above 1/C


def label_chance(labels: Tensor, classes: int) -> dict:
    """{"value", "rule"}: 1/C for balanced labels, the majority-class rate otherwise."""
    counts = torch.bincount(labels.long().flatten(), minlength=int(classes)).double()
    top = float(counts.max() / counts.sum()) if counts.sum() > 0 else 1.0 / classes
    if top <= BALANCE_TOLERANCE / classes:
        return {"value": 1.0 / classes,
                "rule": f"1/classes = 1/{classes} (test labels balanced: largest class {top:.1%})"}
    return {"value": top, "rule": f"majority-class rate (test labels unbalanced: largest class {top:.1%} "
                                  f"against 1/{classes} = {1 / classes:.1%})"}


def joint_chance(predictions: Mapping[str, Tensor], classes: int) -> dict:
    """{"value", "rule"}: Σ_c Π_m f_m(c), f_m the frequency of class c among modality m's predictions."""
    freqs = [torch.bincount(p.long().flatten(), minlength=int(classes)).double() / max(1, p.numel())
             for p in predictions.values()]
    value = float(torch.stack(freqs).prod(0).sum())
    return {"value": value, "rule": "agreement of independent generations with the predicted class frequencies "
                                    f"of the prior samples, Σ_c Π_m f_m(c) (uniform predictions: "
                                    f"{classes}^-{len(freqs) - 1} = {classes ** -(len(freqs) - 1):.4f})"}


def uniform_log_likelihood(spec: ModalitySpec, x: Tensor | None = None) -> dict | None:
    """{"value", "rule"} of the uniform distribution for a categorical or text modality (None otherwise).
    ``x``: the rows evaluated (text: their one-hot tokens, to count the scored tokens)."""
    if spec.kind == "categorical":
        c = int(spec.shape[-1])
        return {"value": -math.log(c), "rule": f"uniform over {c} classes: -log {c}"}
    if spec.kind == "text":
        v = int(spec.shape[-1])
        tokens = float((x.abs().sum(-1) > 0).sum(-1).double().mean()) if x is not None and len(x) else float(spec.shape[0])
        return {"value": -tokens * math.log(v),
                "rule": f"uniform over the {v} vocabulary entries for each scored token (words + end token, "
                        f"{tokens:.2f} per row on average; padding is not scored): -{tokens:.2f} x log {v}"}
    return None


def flag(value, chance, n: int | None = None, accuracy: bool = True) -> str | None:
    """"below" (at or below chance), "near" (accuracy within 2 standard errors above chance on n rows), None."""
    if value is None or chance is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if value <= chance:
        return "below"
    if accuracy and n and chance < 1 and value < chance + 2 * math.sqrt(chance * (1 - chance) / n):
        return "near"
    return None
