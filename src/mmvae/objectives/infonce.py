"""The contrastive terms of the factorised MMVAE (``models/fmmvae.py``; equations: docs/models/fmmvae.md).

**fission** (the factorizing-mmvae study's term, its ``m_infoNCE_naive``; the default). Per modality m,
the MMVAE's expert q_s(· | x_m) and the unimodal VAE's posterior q_p(· | x_m) each draw a sample, z_s and
z_p (the samples of their bounds), and four per-dimension *densities* are compared in every latent
dimension d:

    positives  q_s(z_s,d), q_p(z_p,d)     (each encoder at its own sample, target 1)
    negatives  q_p(z_s,d), q_s(z_p,d)     (each encoder at the other's sample, target 0)

The densities themselves (exp of the log-densities) are the logits of a 4-way soft-target cross-entropy
(``torch.nn.CrossEntropyLoss`` with the probability targets [1, 1, 0, 0], the class axis being these four)

    CE_m = mean over rows and dimensions of −[log softmax(d)_1 + log softmax(d)_2],

which is small when each encoder puts its density where the other puts little: the two encoders of the
same modality are pushed apart. With K samples per row the densities are averaged over the K samples
first, as the source does (it uses K = 1). Not a bound on anything, and it needs the shared and private
latents to have the same dimension.

**infonce** (ours, documented as such). InfoNCE between paired codes (van den Oord, Li & Vinyals 2018,
"Representation Learning with Contrastive Predictive Coding", eq. 4): for N paired rows (a_i, b_i) and a
critic f(a, b) = exp(cos(a, b) / τ),

    L_NCE(a → b) = −1/N Σ_i log [ f(a_i, b_i) / Σ_j f(a_i, b_j) ],

the cross-entropy of picking the partner b_i among the N candidates of the batch. ``log N − L_NCE`` is a
lower bound on the mutual information I(a; b) (eq. 5 of the paper). We use the symmetric form
½ [L(a → b) + L(b → a)] (as CLIP, Radford et al. 2021) on the shared experts' means of every pair of
co-observed modalities.
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution


def fission_cross_entropy(q_shared: Distribution, q_private: Distribution, z_shared: Tensor,
                          z_private: Tensor) -> Tensor:
    """Per row and dimension (B, D): the soft-target cross-entropy of the four densities, for one modality.

    ``q_shared``, ``q_private``: diagonal posteriors with batch shape (B, D); ``z_shared``, ``z_private``:
    their samples (K, B, D)."""
    densities = torch.stack([q_shared.log_prob(z_shared).exp().mean(0),       # own sample: target 1
                             q_private.log_prob(z_private).exp().mean(0),     # own sample: target 1
                             q_private.log_prob(z_shared).exp().mean(0),      # other's sample: target 0
                             q_shared.log_prob(z_private).exp().mean(0)], 1)  # other's sample: target 0
    log_p = F.log_softmax(densities, dim=1)                                      # (B, 4, D)
    return -(log_p[:, 0] + log_p[:, 1])


def fission_contrast(q_shared: Mapping[str, Distribution], q_private: Mapping[str, Distribution],
                     z_shared: Mapping[str, Tensor], z_private: Mapping[str, Tensor],
                     masks: Mapping[str, Tensor]) -> Tensor:
    """Σ_m CE_m: each modality's cross-entropy averaged over the rows that observe it and the dimensions
    (a modality no row observes adds 0; missing rows may hold anything, NaN included)."""
    total = next(iter(z_shared.values())).new_zeros(())
    for m in q_shared:
        seen = masks[m]
        if not bool(seen.any()):
            continue
        ce = fission_cross_entropy(q_shared[m], q_private[m], z_shared[m], z_private[m])
        total = total + (ce[seen] if not bool(seen.all()) else ce).mean()
    return total


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
