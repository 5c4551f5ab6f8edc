"""Coherence of generations, judged by per-modality classifiers (Shi et al. 2019, §4; Sutter et al. 2021).

* cross coherence S->t: the fraction of test rows whose generation of t from the modalities S is
  classified as the row's label. The protocol of Shi et al. 2019 (official ``analyse_ms.py``): encode
  the sources, draw **one** z ~ q(z | x_S) per row, decode the likelihood mean of t, classify
  (``model.translate(..., sample=True)``). ``cross_coherence_mean`` decodes the posterior mean instead
  (deterministic; for a broad posterior it can be far higher than the sampled figure, which is why it is
  not the headline). Ordered pairs "a->b" always; for three or more modalities every non-empty proper
  subset to each modality outside it ("a+b->c"), MoPoE's protocol.
* joint coherence: every modality decoded (likelihood mean) from the same z ~ p(z); the fraction of
  samples on which all classifiers agree.
* synergy (three or more modalities): mean cross coherence by the number of given modalities, and the
  gain from one given modality to all the others (the "coherence given 1..4 modalities" curve of MoPoE).
"""
from __future__ import annotations

from itertools import combinations
from typing import Callable, Mapping

import torch

from ..data.dataset import MultimodalDataset
from ..progress import Progress, track
from .classifiers import predict


def source_subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    """Singletons for two modalities; every non-empty proper subset for three or more."""
    if len(modalities) <= 2:
        return [(m,) for m in modalities]
    return [s for r in range(1, len(modalities)) for s in combinations(modalities, r)]


def coherence_key(sources: tuple[str, ...], target: str) -> str:
    return f"{'+'.join(sources)}->{target}"


PROTOCOL = {
    "cross_coherence": "one posterior sample z ~ q(z | x_S) per test row, decoded to the likelihood mean of the "
                       "target and classified (Shi et al. 2019's protocol)",
    "cross_coherence_mean": "the posterior mean of q(z | x_S) decoded to the likelihood mean of the target",
    "joint_coherence": "z ~ p(z) decoded to the likelihood mean of every modality; all classifiers agree",
}


@torch.no_grad()
def cross_coherence(model, test: MultimodalDataset, classifiers: Mapping[str, Callable], device,
                    batch_size: int = 500, sample: bool = True, seed: int = 0) -> tuple[dict[str, float], dict[str, str]]:
    """{"S->t": coherence} over the test rows that observe S; notes for subsets the model refuses.

    ``sample``: decode one posterior sample per row (the official protocol, seeded by ``seed``) or, when
    False, the posterior mean."""
    torch.manual_seed(seed)
    names = test.modalities
    hits: dict[str, int] = {}
    seen: dict[str, int] = {}
    notes: dict[str, str] = {}
    subsets = source_subsets(names)
    bar = Progress(sum(int(torch.stack([test.mask[m] for m in s]).all(0).sum()) for s in subsets),
                   "cross coherence", unit="rows")
    for sources in subsets:
        targets = [t for t in names if t not in sources]
        observed = torch.stack([test.mask[m] for m in sources]).all(0)
        ids = torch.nonzero(observed).squeeze(1)
        try:
            for i in range(0, len(ids), batch_size):
                rows = ids[i:i + batch_size]
                batch = test.batch(rows)
                out = model.translate({m: batch.data[m].to(device) for m in sources}, targets, sample=sample)
                for t in targets:
                    key = coherence_key(sources, t)
                    pred = predict(classifiers[t], out[t]).cpu()
                    hits[key] = hits.get(key, 0) + int((pred == batch.label).sum())
                    seen[key] = seen.get(key, 0) + len(rows)
                bar.update(len(rows))
        except (NotImplementedError, ValueError, KeyError) as e:
            for t in targets:
                hits.pop(coherence_key(sources, t), None)
                notes[coherence_key(sources, t)] = f"the model cannot generate from {'+'.join(sources)}: {e}"
    bar.close()
    return {k: hits[k] / seen[k] for k in hits if seen[k]}, notes


@torch.no_grad()
def joint_coherence(model, classifiers: Mapping[str, Callable], n: int = 10000, batch_size: int = 1000,
                    seed: int = 0, predictions: dict | None = None) -> float:
    """Fraction of prior samples whose generated modalities all receive the same class. ``predictions``, if
    given, receives each modality's predicted classes (for the chance level of ``chance.joint_chance``)."""
    names = list(classifiers)
    torch.manual_seed(seed)
    agree = 0
    chunks: dict[str, list] = {m: [] for m in names}
    for i in track(range(0, n, batch_size), "joint coherence", unit="batches"):
        b = min(batch_size, n - i)
        out = model.generate(b, names)
        preds = torch.stack([predict(classifiers[m], out[m]).cpu() for m in names])
        agree += int((preds == preds[:1]).all(0).sum())
        for m, p in zip(names, preds):
            chunks[m].append(p)
    if predictions is not None:
        predictions.update({m: torch.cat(v) for m, v in chunks.items()})
    return agree / n


def synergy(cross: Mapping[str, float], modalities: list[str]) -> dict | None:
    """Mean cross coherence by number of given modalities and its gain from 1 to M-1 (None for M < 3)."""
    if len(modalities) < 3:
        return None
    by_size: dict[int, list[float]] = {}
    for key, value in cross.items():
        sources = key.split("->")[0].split("+")
        by_size.setdefault(len(sources), []).append(value)
    curve = {str(r): sum(v) / len(v) for r, v in sorted(by_size.items())}
    top = str(len(modalities) - 1)
    gain = curve[top] - curve["1"] if top in curve and "1" in curve else None
    return {"coherence_by_given": curve, "gain": gain}
