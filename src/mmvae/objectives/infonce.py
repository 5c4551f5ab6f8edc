"""InfoNCE between paired codes (van den Oord, Li & Vinyals 2018, "Representation Learning with
Contrastive Predictive Coding", eq. 4), the contrastive term of the factorised MMVAE.

For N paired rows (a_i, b_i) and a critic f(a, b) = exp(cos(a, b) / τ),

    L_NCE(a → b) = −1/N Σ_i log [ f(a_i, b_i) / Σ_j f(a_i, b_j) ],

the cross-entropy of picking the partner b_i among the N candidates of the batch (the other N − 1 rows
are the negatives). ``log N − L_NCE`` is a lower bound on the mutual information I(a; b) (eq. 5 of the
paper), so minimising L_NCE pulls the codes of paired rows together and pushes unpaired ones apart. We
use the symmetric form ½ [L(a → b) + L(b → a)] (as CLIP, Radford et al. 2021) so neither modality is the
"context".

Not the factorizing-mmvae study's term: its "InfoNCE" is a soft-target cross-entropy between
per-dimension posterior densities, which is not a bound on mutual information; see docs/models/fmmvae.md.
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE of paired rows a, b (N, D) with the cosine critic: a scalar in [0, ~log N]."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature        # (N, N): row i vs j
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def paired_info_nce(codes: Mapping[str, Tensor], masks: Mapping[str, Tensor], temperature: float = 0.1) -> Tensor:
    """Mean InfoNCE over every pair of modalities, each on the rows that observe both.

    ``codes[m]`` is (B, D); rows where m is missing may hold anything (NaN included): they are dropped
    before the similarity is computed. A pair with fewer than two co-observed rows has no negatives and
    is skipped; with no usable pair the term is 0.
    """
    terms = []
    for s, t in combinations(list(codes), 2):
        both = masks[s] & masks[t]
        if int(both.sum()) < 2:
            continue
        terms.append(info_nce(codes[s][both], codes[t][both], temperature))
    if not terms:
        return next(iter(codes.values())).new_zeros(())
    return torch.stack(terms).mean()
