"""Where the model meets the data: checks run once before training, never inside the loop.

A dataset may be valid on its own and still wrong for the chosen model: a Bernoulli likelihood scores
only x in [0, 1] (Bernoulli(logits).log_prob(x) = x·l − softplus(l) is a cross-entropy only there,
and unbounded above outside), a categorical one only one-hot (or soft) targets. NaN or infinite values
in observed rows would turn the first loss into NaN and look like divergence; so would huge finite
values (beyond ±MAX_ABS, e.g. an unscaled uint64 column): a squared error of 1e19 overflows float32.
Labels must index the dataset's classes (evaluation builds classifiers with ``num_classes`` outputs).
The test split must hold rows (the sample grid and every metric draw from it) and observe every
modality.
"""
from __future__ import annotations

import torch

from ..data.dataset import MultimodalDataset
from ..errors import UserError

CHUNK = 8192  # rows per pass: bounded extra memory even for large image datasets
MAX_ABS = 1e6  # larger values make float32 losses and gradients overflow or swamp every other modality


def likelihood_names(model, specs, cfg) -> dict[str, str]:
    """The likelihood each modality is scored with: the model's own when it exposes them."""
    liks = getattr(model, "likelihoods", None)
    out = {}
    for m, spec in specs.items():
        name = getattr(liks[m], "name", None) if liks is not None and m in liks else None
        out[m] = name or (cfg.likelihood or {}).get(m, spec.likelihood)
    return out


def check_dataset(data: MultimodalDataset, likelihoods: dict[str, str], part: str) -> None:
    """Raise UserError naming the modality, the problem and the fix."""
    n = len(data)
    for m, spec in data.specs.items():
        x, mask = data.data[m], data.mask.get(m)
        if tuple(x.shape[1:]) != tuple(spec.shape):
            raise UserError(f"{part} data: modality '{m}' has per-row shape {tuple(x.shape[1:])}, its spec says "
                            f"{tuple(spec.shape)}")
        if mask is None or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
            raise UserError(f"{part} data: the mask of '{m}' must be a bool tensor of shape ({n},)")
        if not x.is_floating_point():
            raise UserError(f"{part} data: modality '{m}' has dtype {x.dtype}: models need floating point data")
        lik = likelihoods.get(m, spec.likelihood)
        lo, hi = _observed_range(x, mask, m, part)
        if lo is None:
            continue
        if max(abs(lo), abs(hi)) > MAX_ABS:
            raise UserError(f"{part} data: modality '{m}' has values up to {max(abs(lo), abs(hi)):.4g} in magnitude; "
                            f"at most {MAX_ABS:.0e} is accepted (larger ones overflow float32 losses): standardise "
                            f"it (subtract the mean, divide by the standard deviation) or rescale it")
        if lik in ("bernoulli", "continuous_bernoulli", "categorical") and (lo < 0.0 or hi > 1.0):
            fix = (f"rescale it to [0, 1] or use --set likelihood.{m}=normal" if lik != "categorical"
                   else "store one-hot (or probability) rows")
            raise UserError(f"{part} data: modality '{m}' is scored with a {lik} likelihood, which needs values in "
                            f"[0, 1], but its observed values span [{lo:.4g}, {hi:.4g}]: {fix}")
    if data.label is not None and len(data.label):
        lab = data.label
        if lab.dtype.is_floating_point or lab.dtype == torch.bool:
            raise UserError(f"{part} data: labels must be integer class indices, got {lab.dtype}")
        k = data.num_classes
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or (k is not None and hi >= k):
            raise UserError(f"{part} data: labels span [{lo}, {hi}] but the dataset declares {k} classes: "
                            f"labels must lie in 0..{(k or 1) - 1}")


def _observed_range(x: torch.Tensor, mask: torch.Tensor, m: str, part: str):
    """(min, max) over observed rows, after checking they are finite; (None, None) if none observed."""
    lo, hi = None, None
    for i in range(0, x.shape[0], CHUNK):
        rows = x[i:i + CHUNK][mask[i:i + CHUNK]]
        if rows.numel() == 0:
            continue
        finite = torch.isfinite(rows)
        if not bool(finite.all()):
            first = int(torch.nonzero(~finite.reshape(rows.shape[0], -1).all(1))[0, 0])
            row = i + int(torch.nonzero(mask[i:i + CHUNK]).squeeze(1)[first])
            raise UserError(f"{part} data: modality '{m}' holds NaN or infinite values in observed rows (first: row "
                            f"{row}): clean them or mark those rows missing")
        a, b = float(rows.min()), float(rows.max())
        lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    return lo, hi


def check_training_data(model, splits, cfg) -> None:
    """Check train and test parts against the model's likelihoods before any step is taken."""
    liks = likelihood_names(model, splits.specs, cfg)
    check_dataset(splits.train, liks, "training")
    check_test_split(splits.test)
    check_dataset(splits.test, liks, "test")


def check_test_split(test: MultimodalDataset) -> None:
    """Refused before training: a test split without rows, or where every row misses a modality (the
    sample grid at the end of training and every metric draw from it)."""
    if len(test) == 0:
        raise UserError("the test split is empty (no test rows, or every test row misses a modality): nothing "
                        "could be drawn or evaluated; give the data test rows that observe every modality")
    never = [m for m in test.modalities if not bool(test.mask[m].any())]
    if never:
        raise UserError(f"every test row misses modality {', '.join(repr(m) for m in never)}: nothing could be "
                        f"drawn or evaluated for it; give the data test rows that observe every modality")
