"""Vectorised experts: modalities whose networks share an architecture run as one batched call.

PolyMNIST-like data has M modalities with identically shaped encoders and decoders. Instead of M calls
of one network each, :func:`stacked_call` stacks the M networks' parameters (``torch.stack`` at call
time, so gradients flow back to each modality's own ``nn.Module``) and evaluates the first network's
forward under ``torch.func.vmap`` with ``torch.func.functional_call``: every layer becomes one grouped
convolution / batched matrix product over the M networks. The per-modality modules stay the source of
truth: parameter names, ``state_dict`` and checkpoints are those of the per-modality path, and user
networks need nothing special.

Why stack at call time rather than keep stacked parameters with per-modality views: views as
``nn.Parameter`` break ``load_state_dict``, optimiser state per parameter and users who replace a
modality's network; the stacking copy is one pass over the parameters per call (measured in
docs/results/speed-vectorised.md), small next to the convolutions it batches.

When it pays: on a GPU the M small calls are launch-bound and one batched call is the win; on one CPU
thread each call is already large enough for the BLAS/oneDNN kernels and the grouped kernels are
slower (0.45-0.9x measured, docs/results/speed-vectorised.md), so ``vectorise="auto"`` (the default)
vectorises on CUDA devices only; ``--set vectorise=true`` forces it, ``false`` turns it off.

Eligible networks: same class, same parameter and buffer names, shapes and dtypes, no hooks, no
BatchNorm (its running statistics are updated in place) and no Dropout (vmap draws one mask per call).
A group whose batched call raises falls back to the per-modality loop for the rest of the run.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

VECTORISE_CHOICES = ("auto", True, False)

_STATEFUL = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def parse_vectorise(value) -> str | bool:
    """``auto`` | true | false (config strings accepted)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low == "auto":
            return "auto"
        if low in ("true", "on", "yes", "1"):
            return True
        if low in ("false", "off", "no", "0"):
            return False
    elif isinstance(value, bool) or value is None:
        return "auto" if value is None else value
    raise ValueError(f"vectorise must be auto, true or false, got {value!r}")


def enabled(setting, device: torch.device) -> bool:
    """Whether to vectorise for inputs on ``device`` under ``setting`` (auto: CUDA only)."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def architecture(module: nn.Module) -> tuple | None:
    """A key equal for networks that can be stacked (None: this network cannot be)."""
    mods = list(module.modules())
    if any(isinstance(m, _STATEFUL) or m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
           for m in mods):
        return None
    params = tuple((n, tuple(p.shape), p.dtype, p.device) for n, p in module.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype, b.device) for n, b in module.named_buffers())
    if not params:
        return None
    return (tuple(type(m) for m in mods), params, buffers)


def groups(modules: Mapping[str, nn.Module], names: Iterable[str]) -> list[list[str]]:
    """The names in order of first appearance, grouped by :func:`architecture` (singletons for the rest)."""
    out: dict = {}
    for i, name in enumerate(names):
        key = architecture(modules[name])
        out.setdefault(("single", i) if key is None else key, []).append(name)
    return list(out.values())


def stacked_call(modules: Sequence[nn.Module], inputs: Sequence[Tensor], shared: Sequence[bool]):
    """``[modules[g](*inputs_g) for g]`` stacked along a new leading axis, in one vmapped call.

    ``inputs[i]`` is either stacked per network (G, ...) or, where ``shared[i]``, one tensor that every
    network reads (e.g. the decoders of MMVAE all decode the same z)."""
    base = modules[0]
    named = [dict(m.named_parameters()) for m in modules]
    params = {n: torch.stack([p[n] for p in named]) for n in named[0]}
    bufs = [dict(m.named_buffers()) for m in modules]
    buffers = {n: torch.stack([b[n] for b in bufs]) for n in bufs[0]}

    def one(p, b, *xs):
        return functional_call(base, (p, b), xs)

    dims = (0, 0, *(None if s else 0 for s in shared))
    return vmap(one, in_dims=dims)(params, buffers, *inputs)


class ExpertGroups:
    """Cached grouping of a ModuleDict's networks for one model; regrouped when a network is replaced."""

    def __init__(self):
        self._key = None
        self._groups: dict[tuple[str, ...], list[list[str]]] = {}
        self.failed: set[tuple[str, ...]] = set()

    def of(self, modules: nn.ModuleDict, names: Sequence[str]) -> list[list[str]]:
        key = tuple((n, id(m)) for n, m in modules.items())
        if key != self._key:
            self._key, self._groups, self.failed = key, {}, set()
        names = tuple(names)
        if names not in self._groups:
            self._groups[names] = groups(modules, names)
        return self._groups[names]


def run_group(cache: ExpertGroups, modules: nn.ModuleDict, group: list[str], inputs: Sequence[Tensor],
              shared: Sequence[bool]):
    """The stacked outputs of ``group``, or None when this group cannot be vectorised (then the caller
    runs its loop; the failure is remembered so it is tried once)."""
    key = tuple(group)
    if len(group) < 2 or key in cache.failed:
        return None
    try:
        return stacked_call([modules[m] for m in group], inputs, shared)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        cache.failed.add(key)
        return None
