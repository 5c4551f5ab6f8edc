"""Relatedness (Joy et al. 2022, MEME §4.2): 2-Wasserstein distances between the encoders' posteriors.

For diagonal Gaussians N(μ1, diag σ1²) and N(μ2, diag σ2²) the distance has the closed form
W2² = ||μ1 − μ2||² + ||σ1 − σ2||²  (Givens & Shortt 1984; the Bures term of commuting covariances), so
the whole matrix d_ij = W2(q(z | s_i), q(z | t_j)) is a Euclidean distance matrix between the vectors
[μ, σ]. Laplace posteriors are compared through Gaussians with their mean and standard deviation
(σ = √2 · scale): the W2 of those moment-matched Gaussians, said so in the report. A mixture posterior
is moment-matched the same way.

Paired distances d_ii against unpaired d_ij (i ≠ j); the class × class mean distance matrix; the
probability that a row's paired distance is below its unpaired ones ("auc").
"""
from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor
from torch.distributions import Distribution, Laplace

from ..data.batch import Batch
from ..data.dataset import MultimodalDataset
from ..fusion.mixture import DiagonalMixture


def w2_diagonal(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """W2 between diagonal Gaussians, elementwise over the leading axes (broadcasting)."""
    return ((mu1 - mu2).pow(2).sum(-1) + (sigma1 - sigma2).pow(2).sum(-1)).sqrt()


def w2_matrix(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """d_ij = W2(N(μ1_i, σ1_i), N(μ2_j, σ2_j)), (N1, N2), as a Euclidean distance between [μ, σ]."""
    a = torch.cat([mu1, sigma1], -1).double()
    b = torch.cat([mu2, sigma2], -1).double()
    sq = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1) - 2 * a @ b.t()
    return sq.clamp_min(0).sqrt()


def moments(dist) -> tuple[Tensor, Tensor, str]:
    """(mean, standard deviation, family name) of a diagonal posterior or a DiagonalMixture."""
    if isinstance(dist, DiagonalMixture):
        family = "laplace" if dist.family is Laplace else "normal"
        comp_std = dist.scale * (math.sqrt(2.0) if dist.family is Laplace else 1.0)
        if dist.num_components == 1:
            return dist.loc[0], comp_std[0], family
        w = dist.weight.unsqueeze(-1)
        mean = (w * dist.loc).sum(0)
        var = (w * (comp_std ** 2 + dist.loc ** 2)).sum(0) - mean ** 2
        return mean, var.clamp_min(0).sqrt(), family + " mixture"
    if isinstance(dist, Distribution):
        return dist.mean, dist.stddev, type(dist).__name__.lower()
    raise TypeError(f"cannot read a mean and standard deviation from {type(dist).__name__}")


@torch.no_grad()
def unimodal_posterior(model, m: str, x: Tensor):
    """q(z | x_m): the fused posterior given m alone, or the model's own ``encode`` (MEME)."""
    if callable(getattr(model, "posterior", None)):
        return model.posterior(Batch({m: x}))
    return model.encode({m: x})


@torch.no_grad()
def posterior_moments(model, data: MultimodalDataset, m: str, device, batch_size: int = 1000):
    means, stds, family = [], [], "normal"
    for i in range(0, len(data), batch_size):
        x = data.data[m][i:i + batch_size].to(device)
        mu, sd, family = moments(unimodal_posterior(model, m, x))
        means.append(mu.float().cpu())
        stds.append(sd.float().cpu())
    return torch.cat(means), torch.cat(stds), family


def summarise_pair(d: Tensor, labels: Tensor | None, classes: int | None) -> dict:
    """Paired (diagonal) against unpaired (off-diagonal) distances, and the class matrix."""
    n = d.shape[0]
    paired = d.diagonal()
    off = ~torch.eye(n, dtype=torch.bool)
    unpaired = d[off]
    out = {"rows": n, "paired_mean": float(paired.mean()), "unpaired_mean": float(unpaired.mean()),
           "paired_median": float(paired.median()), "unpaired_median": float(unpaired.median()),
           "auc": float(((d > paired[:, None]) & off).sum(1).double().div(max(n - 1, 1)).mean())}
    if labels is not None and classes:
        same = (labels[:, None] == labels[None, :]) & off
        out["same_class_unpaired_mean"] = float(d[same].mean()) if bool(same.any()) else math.nan
        out["other_class_mean"] = float(d[~same & off].mean()) if bool((~same & off).any()) else math.nan
        onehot = torch.nn.functional.one_hot(labels, classes).double()            # (n, C)
        dz = d * off
        total = onehot.t() @ dz @ onehot
        count = onehot.t() @ off.double() @ onehot
        out["class_matrix"] = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan)).tolist()
    return out


def relatedness(model, test: MultimodalDataset, device, max_rows: int = 1000, seed: int = 0):
    """{"s~t": summary} for every unordered pair, plus the distance matrices for the pictures."""
    names = test.modalities
    result, matrices, family, labels, refused = {}, {}, "normal", None, {}
    for s, t in combinations(names, 2):
        # the rows observing both modalities of the pair (a test split may hold partially observed rows)
        ids = torch.nonzero(test.mask[s] & test.mask[t]).squeeze(1)
        if len(ids) > max_rows:
            pick = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))[:max_rows]
            ids = ids[pick.sort().values]
        if len(ids) < 2:
            continue
        data = test.subset(ids)
        moments = {}
        for m in (s, t):
            try:   # a model may have no posterior given one modality alone (a conditional VAE)
                moments[m] = posterior_moments(model, data, m, device)
            except (NotImplementedError, ValueError) as e:
                refused[m] = f"{m}: {e}"
        if len(moments) < 2:
            continue
        (mu_s, sd_s, family), (mu_t, sd_t, _) = moments[s], moments[t]
        d = w2_matrix(mu_s, sd_s, mu_t, sd_t)
        result[f"{s}~{t}"] = summarise_pair(d, data.label, test.num_classes if data.label is not None else None)
        matrices[f"{s}~{t}"] = d
        labels = data.label if labels is None else labels
    note = None
    if "laplace" in family or "mixture" in family:
        note = (f"posteriors are {family}: W2 is computed between Gaussians with the same mean and "
                f"standard deviation (moment matching), not between the posteriors themselves")
    if refused:
        note = "; ".join(([note] if note else []) + [f"left out {r}" for r in refused.values()])
    if not result and refused:
        note = "no posterior given single modalities: " + "; ".join(refused.values())
    return {"pairs": result, "posterior": family if result else None, "note": note}, matrices, labels
