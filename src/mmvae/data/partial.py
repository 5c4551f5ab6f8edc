"""Partially observed training data: which rows keep which modalities (MEME, Joy et al. 2022, Sec. 5).

A fraction ``f`` of the training rows keeps every modality. Of the rest, either one named modality is
always kept and the others are masked (MEME's "MNIST" / "SVHN" schemes), or ``split``: the unpaired
rows are dealt out between the modalities in turn, so no unpaired row is ever seen with two of them.
The mask is drawn once from the seed; test rows are always complete.
"""
from __future__ import annotations

import torch

from ..errors import UserError
from .dataset import MultimodalDataset


def partial_masks(n: int, names: list[str], paired_fraction: float, observed: str, seed: int) -> dict[str, torch.Tensor]:
    """Boolean masks (n,) per modality with exactly round(f * n) fully observed rows."""
    if not 0.0 < paired_fraction <= 1.0:
        raise UserError(f"paired_fraction={paired_fraction} is out of range: use 0 < f <= 1")
    if observed != "split" and observed not in names:
        raise UserError(f"observed='{observed}' names no modality: use one of {names} or 'split'")
    masks = {m: torch.ones(n, dtype=torch.bool) for m in names}
    if paired_fraction >= 1.0:
        return masks
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104729))
    unpaired = perm[int(round(paired_fraction * n)):]
    if observed == "split":
        for i, m in enumerate(names):
            others = torch.cat([unpaired[j::len(names)] for j in range(len(names)) if j != i])
            masks[m][others] = False
    else:
        for m in names:
            if m != observed:
                masks[m][unpaired] = False
    return masks


def apply_partial_observation(data: MultimodalDataset, paired_fraction: float, observed: str,
                              seed: int) -> MultimodalDataset:
    """The training rows with the partial-observation mask combined with any mask the data already has."""
    names = data.modalities
    if observed != "split" and observed not in names:   # checked even at f = 1: a typo must not pass
        raise UserError(f"observed='{observed}' names no modality: use one of {names} or 'split'")
    if paired_fraction == 1.0:
        return data
    if len(names) < 2:
        raise UserError("paired_fraction < 1 needs at least two modalities")
    masks = partial_masks(len(data), names, paired_fraction, observed, seed)
    return MultimodalDataset(data.specs, data.data, {m: data.mask[m] & masks[m] for m in names}, data.label,
                             data.num_classes, data.description)


def drop_unobserved_rows(data: MultimodalDataset) -> MultimodalDataset:
    """Rows observing no modality carry no information and would give empty mixtures: drop them."""
    any_obs = torch.stack([data.mask[m] for m in data.modalities]).any(0)
    return data if bool(any_obs.all()) else data.subset(torch.nonzero(any_obs).squeeze(1))


def rows_observing(data: MultimodalDataset, modalities: list[str] | None = None) -> torch.Tensor:
    """Indices of the rows that observe every one of ``modalities`` (default: all of the data's)."""
    names = list(modalities or data.modalities)
    if not names or len(data) == 0:
        return torch.arange(len(data))
    return torch.nonzero(torch.stack([data.mask[m] for m in names]).all(0)).squeeze(1)


def spread_rows(data: MultimodalDataset, n: int, modalities: list[str] | None = None) -> torch.Tensor:
    """``n`` row indices spread evenly over the rows observing ``modalities`` (for pictures; a test
    split may hold partially observed rows). Without such rows, spread over all rows."""
    pool = rows_observing(data, modalities)
    if len(pool) == 0:
        pool = torch.arange(len(data))
    return pool[torch.linspace(0, len(pool) - 1, n).long()]
