"""Importance-sampled log-likelihoods: marginal log p(x_m), joint log p(X), conditional log p(x_a | x_b).

log p(x_S) ≈ log 1/K Σ_k p(z_k) Π_{m∈S} p(x_m | z_k) / q(z_k | x_S),  z_k ~ q(z | x_S)
(Burda et al. 2016, eq. 8; the estimator of MVAE, Wu & Goodman 2018, §5, and of MultiVae's
``compute_joint_nll``). The proposal is the model's fused posterior given the subset S; for a mixture
posterior (MMVAE, MoPoE) the sample is drawn from the mixture and weighted by the mixture density, so
the estimate stays unbiased in p (and a lower bound in expectation for log p).

* The likelihoods are *unweighted* (λ_m = 1): a true log p(X), unlike the training objective of MMVAE
  whose test "joint log-likelihood" carries the likelihood rescaling.
* Conditional: log p(x_a | x_b) = log p(x_a, x_b) − log p(x_b), the difference of two estimates (the
  definition in DESIGN §3); both use the same random numbers for a row, which cancels part of the noise.
  Each term is a stochastic lower bound in expectation, so the difference is not a bound either way.
* All K samples of a row are drawn from a generator seeded by (seed, row index) with uniform draws
  transformed by the inverse CDF, so the estimate of a row does not depend on how rows or samples are
  chunked (chunks only bound memory). The log-mean-exp is accumulated exactly across sample chunks.
* A model may provide its own ``log_likelihood(batch, modalities, k) -> (B,)`` (MEME has no fused
  posterior); models with neither that nor ``posterior``/``reconstruction``/``prior`` are skipped with a
  recorded note.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import torch
from torch import Tensor

from ..data.batch import Batch
from ..data.dataset import MultimodalDataset
from ..progress import Progress

ROW_SEED_STRIDE = 1_000_003  # seeds (seed, row) -> seed * stride + row: distinct for any row count below it


def supports_importance_sampling(model) -> bool:
    """The generic estimator needs a fused posterior, the per-modality reconstruction and the prior."""
    return all(callable(getattr(model, name, None)) for name in ("posterior", "reconstruction")) and \
        hasattr(model, "prior")


def row_uniforms(rows: Sequence[int], start: int, count: int, width: int, seed: int,
                 generators: dict[int, torch.Generator]) -> Tensor:
    """Uniforms (count, B, width) for samples start..start+count of each row, from that row's own stream.

    ``generators`` carries each row's generator from one sample chunk to the next: the CPU uniform
    kernel draws serially, so two chunks of 300 and 700 give the same numbers as one chunk of 1000.
    """
    out = []
    for r in rows:
        g = generators.get(r)
        if g is None:
            g = generators[r] = torch.Generator().manual_seed(seed * ROW_SEED_STRIDE + int(r))
        out.append(torch.rand(count, width, generator=g))
    return torch.stack(out, 1)


def sample_mixture(post, u: Tensor) -> Tensor:
    """z (K, B, D) from a DiagonalMixture by inversion: u[..., 0] picks the component (by the cumulative
    weights of the row), u[..., 1:] are pushed through the component's inverse CDF."""
    k, b, _ = u.shape
    d = post.loc.shape[-1]
    tiny = 1e-6
    eps = u[..., 1:].clamp(tiny, 1 - tiny)
    if post.num_components == 1:
        loc, scale = post.loc[0].expand(k, b, d), post.scale[0].expand(k, b, d)
    else:
        cum = post.weight.t().cumsum(-1)                                   # (B, G)
        cum = cum / cum[:, -1:].clamp_min(1e-12)
        pick = (u[..., :1] > cum.unsqueeze(0)).sum(-1).clamp_max(post.num_components - 1)  # (K, B)
        idx = pick.unsqueeze(-1).expand(k, b, d)
        loc = torch.gather(post.loc.transpose(0, 1).unsqueeze(0).expand(k, -1, -1, -1), 2,
                           idx.unsqueeze(2)).squeeze(2)
        scale = torch.gather(post.scale.transpose(0, 1).unsqueeze(0).expand(k, -1, -1, -1), 2,
                             idx.unsqueeze(2)).squeeze(2)
    return post.family(loc, scale, validate_args=False).icdf(eps)


def unweighted_reconstruction(model, z: Tensor, batch: Batch) -> Tensor:
    """Σ_m log p(x_m | z) with λ_m = 1: z (K, B, D) -> (K, B). One call when the model's reconstruction
    takes ``weighted=False`` (MultimodalVAE: all decoders at once, vectorised where it applies); else
    each modality is scored alone and divided by its training weight λ."""
    import inspect

    if "weighted" in inspect.signature(model.reconstruction).parameters:
        return model.reconstruction(z.unsqueeze(0), batch, weighted=False)[0]
    weights = getattr(model, "weights", {}) or {}
    total = z.new_zeros(z.shape[:-1])
    for m in batch.data:
        lp = model.reconstruction(z.unsqueeze(0), batch.select([m]))[0]
        total = total + lp / float(weights.get(m, 1.0))
    return total


@torch.no_grad()
def importance_log_likelihood(model, batch: Batch, rows: Sequence[int], k: int, sample_chunk: int,
                              seed: int = 0) -> Tensor:
    """log p(x_S) per row of ``batch`` (whose modalities are S), (B,); ``rows`` are the global row ids
    that seed the random streams."""
    post = model.posterior(batch)
    prior = model.prior
    # A posterior that is not a DiagonalMixture (JNF's flow posteriors) samples itself from the uniforms.
    own = getattr(post, "from_uniforms", None)
    d = post.loc.shape[-1] if own is None else post.event_shape[-1]
    generators: dict[int, torch.Generator] = {}
    acc = None
    for start in range(0, k, sample_chunk):
        count = min(sample_chunk, k - start)
        u = row_uniforms(rows, start, count, 1 + d, seed, generators).to(prior.loc.device, prior.loc.dtype)
        z = sample_mixture(post, u) if own is None else own(u)                  # (count, B, D)
        lw = prior.log_prob(z).sum(-1) + unweighted_reconstruction(model, z, batch) - post.log_prob(z)
        part = torch.logsumexp(lw, 0)
        acc = part if acc is None else torch.logaddexp(acc, part)
    return acc - math.log(k)


def estimate(model, batch: Batch, rows: Sequence[int], k: int, sample_chunk: int, seed: int) -> Tensor:
    """log p(x_S) by the model's own estimator when it has one, else the generic importance sampler."""
    own = getattr(model, "log_likelihood", None)
    if callable(own):
        return own(batch, list(batch.data), k)
    return importance_log_likelihood(model, batch, rows, k, sample_chunk, seed)


def likelihood_subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    """The subsets whose log p(x_S) the report needs: every modality, every pair (for conditionals),
    and all modalities together (the joint)."""
    subsets = [(m,) for m in modalities]
    if len(modalities) > 2:
        subsets += list(combinations(modalities, 2))
    if len(modalities) > 3:   # log p(rest), for log p(x_m | all other modalities)
        subsets += list(combinations(modalities, len(modalities) - 1))
    if len(modalities) > 1:
        subsets.append(tuple(modalities))
    return subsets


#: Decoded samples per pass on a CPU (rows × samples). Conv decoders run fastest at a few hundred to a
#: thousand rows per call, where a layer's activations still fit the caches, and ~15% slower at 2048; MLP
#: decoders gain a little up to 2048. Whole K=1000 estimates of 16 rows at 1024 codes per pass against the
#: memory budget alone: 1.12x faster on MLPs (5344 codes per pass before) and PolyMNIST-3 (1776), equal on
#: conv MNIST+SVHN (1360) (``python bench/likelihood_chunks.py``, docs/results/likelihood-chunks.md); the
#: default run's model (``mmvae train``) 1.24-1.29x (5344 before; docs/results/likelihood-chunks-default-run.md).
CPU_ROWS_PER_PASS = 1024


def default_sample_chunk(data: MultimodalDataset, k: int, row_chunk: int, budget: int = 1 << 22,
                         device=None) -> int:
    """Samples per pass: ``row_chunk`` × samples × (largest modality size) stays near ``budget`` floats
    (~16 MB per decoder output on the default budget) and, on a CPU (``device`` None or "cpu"),
    ``row_chunk`` × samples near :data:`CPU_ROWS_PER_PASS` decoded rows, the fastest call size there
    (a GPU wants the largest calls memory allows). The estimates do not depend on the chunking."""
    size = max(math.prod(s.shape) for s in data.specs.values())
    samples = budget // max(1, row_chunk * size)
    if device is None or torch.device(device).type == "cpu":
        samples = min(samples, CPU_ROWS_PER_PASS // max(1, row_chunk))
    return max(1, min(k, samples))


@torch.no_grad()
def log_likelihoods(model, data: MultimodalDataset, k: int = 1000, row_chunk: int = 16,
                    sample_chunk: int | None = None, seed: int = 0, device=None,
                    subsets: list[tuple[str, ...]] | None = None) -> dict[str, Tensor]:
    """log p(x_S) per row for every subset S (default: :func:`likelihood_subsets`), keyed "a", "a+b", ...

    Rows that do not observe all of S get NaN (they are left out of the means)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if getattr(model, "likelihood_note", None):
        raise ValueError(f"no log-likelihood for {type(model).__name__}: {model.likelihood_note}")
    device = device or next(model.parameters()).device
    chunk = sample_chunk or default_sample_chunk(data, k, min(row_chunk, max(1, len(data))), device=device)
    out: dict[str, Tensor] = {}
    subsets = subsets or likelihood_subsets(data.modalities)
    observed = {s: torch.stack([data.mask[m] for m in s]).all(0) for s in subsets}
    current = {"subset": ""}
    with Progress(sum(int(o.sum()) for o in observed.values()), f"likelihood (K = {k})", unit="rows",
                  postfix=lambda: {"log p of": current["subset"]}) as bar:
        for subset in subsets:
            current["subset"] = "+".join(subset)
            values = torch.full((len(data),), math.nan, dtype=torch.float64)
            ids = torch.nonzero(observed[subset]).squeeze(1)
            for i in range(0, len(ids), row_chunk):
                rows = ids[i:i + row_chunk]
                batch = data.batch(rows).select(subset).to(device)
                values[rows] = estimate(model, batch, rows.tolist(), k, chunk, seed).double().cpu()
                bar.update(len(rows))
            out["+".join(subset)] = values
    return out


def summarise(per_row: dict[str, Tensor], modalities: list[str], k: int) -> dict:
    """Means in nats per sample: marginal per modality, joint, and conditionals log p(a | b) = log p(a, b) −
    log p(b) for every ordered pair (for more than two modalities the pairs' joints are reported too)."""
    def mean(t: Tensor) -> float:
        t = t[~torch.isnan(t)]
        return float(t.mean()) if t.numel() else math.nan

    result: dict = {"k": int(k), "weighted": False,
                    "rows": int((~torch.isnan(next(iter(per_row.values())))).sum()),
                    "marginal": {m: mean(per_row[m]) for m in modalities}}
    if len(modalities) > 1:
        result["joint"] = mean(per_row["+".join(modalities)])
        pair = (lambda a, b: per_row["+".join(modalities)]) if len(modalities) == 2 else \
            (lambda a, b: per_row["+".join(sorted((a, b), key=modalities.index))])
        result["conditional"] = {f"{a}|{b}": mean(pair(a, b) - per_row[b])
                                 for a in modalities for b in modalities if a != b}
        if len(modalities) > 2:
            result["pairs"] = {"+".join(s): mean(per_row["+".join(s)]) for s in combinations(modalities, 2)}
            joint = per_row["+".join(modalities)]
            result["conditional_given_rest"] = {
                f"{m}|{'+'.join(r for r in modalities if r != m)}":
                    mean(joint - per_row["+".join(r for r in modalities if r != m)]) for m in modalities}
    return result


@torch.no_grad()
def conditional_log_likelihood(model, data: MultimodalDataset, targets: Sequence[str], given: Sequence[str],
                               k: int = 1000, seed: int = 0, **kwargs) -> Tensor:
    """log p(x_T | x_G) per row for any disjoint non-empty sets of modalities T and G:
    log p(x_T, x_G) − log p(x_G), each by importance sampling with the fused posterior of its subset
    (the conditional likelihoods users asked MultiVae for). Rows missing any of T ∪ G get NaN."""
    targets, given = list(targets), list(given)
    unknown = [m for m in targets + given if m not in data.specs]
    if unknown or not targets or not given or set(targets) & set(given):
        raise ValueError(f"targets {targets} and given {given} must be disjoint, non-empty sets of the "
                         f"modalities {data.modalities}")
    order = data.modalities
    union = tuple(m for m in order if m in targets or m in given)
    cond = tuple(m for m in order if m in given)
    per = log_likelihoods(model, data, k=k, seed=seed, subsets=[union, cond], **kwargs)
    return per["+".join(union)] - per["+".join(cond)]
