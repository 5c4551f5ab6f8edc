"""Message aggregation of Nexus (Vasco, Yin, Melo & Paiva 2022, §3.2-3.3): each modality's latent sends a
deterministic message, the nexus node reads their mean over the modalities it is given, and forced
perceptual dropout (FPD) hides a random subset of them during training so that the nexus learns to infer
from any subset.
"""
from __future__ import annotations

from math import comb

import torch
from torch import Tensor

from ..distributions.noise import GLOBAL_NOISE, Noise
from .fusions import nonempty_subsets, subset_masks


def mean_messages(messages: dict[str, Tensor], keep: dict[str, Tensor]) -> Tensor:
    """The mean of the kept messages of each row: messages {m: (B, F)}, keep {m: (B,)} -> (B, F)."""
    names = list(messages)
    w = torch.stack([keep[m] for m in names]).to(messages[names[0]].dtype)          # (M, B)
    stacked = torch.stack([messages[m] for m in names])                              # (M, B, F)
    return (w.unsqueeze(-1) * stacked).sum(0) / w.sum(0).clamp_min(1.0).unsqueeze(-1)


def forced_dropout(masks: dict[str, Tensor], rate: float, noise: Noise = GLOBAL_NOISE,
                   name: str = "dropout") -> dict[str, Tensor]:
    """Which modalities each row's nexus reads: a row that observes every modality keeps them all with
    probability 1 − ``rate``, else a random non-empty proper subset, its size uniform on 1..M−1 and the
    subset uniform among those of that size (official code ``mean_drop``: n ~ U{1..M−1} modalities
    dropped at random; MultiVae: a random subset of size U{1..M−1} kept). A row with a missing modality
    keeps what it observes. The pick is one categorical draw over all non-empty subsets per row
    (``noise.choice(weights, 1, name)``), so FixedNoise can fix it."""
    names = list(masks)
    if rate <= 0 or len(names) < 2:
        return dict(masks)
    subsets = nonempty_subsets(names)
    member = subset_masks(names, subsets, next(iter(masks.values())).device)        # (S, M)
    obs = torch.stack([masks[m] for m in names])                                     # (M, B)
    complete = obs.all(0).to(torch.float64)                                          # (B,)
    same = (member.unsqueeze(-1) == obs.unsqueeze(0)).all(1).to(torch.float64)      # (S, B): the observed set
    m = len(names)
    proper = torch.tensor([0.0 if len(s) == m else 1.0 / ((m - 1) * comb(m, len(s))) for s in subsets],
                          dtype=torch.float64, device=member.device)
    weight = same * (1 - rate * complete) + rate * complete * proper.unsqueeze(-1)   # (S, B), columns sum to 1
    pick = noise.choice(weight, 1, name)[0]                                          # (B,)
    kept = member[pick].t()                                                          # (M, B)
    return {n: kept[i] for i, n in enumerate(names)}
