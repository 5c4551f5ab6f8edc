"""Datasets by name: each entry is one decorated builder function in its own module."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .dataset import DatasetSplits


@dataclass
class DatasetEntry:
    name: str
    description: str
    build: Callable[..., DatasetSplits]
    available: Callable[[], tuple[bool, str]]


DATASETS: dict[str, DatasetEntry] = {}


def _always() -> tuple[bool, str]:
    return True, "offline"


def register_dataset(name: str, description: str, available: Callable[[], tuple[bool, str]] = _always):
    """Register ``build(seed=..., **options) -> DatasetSplits`` under ``name``."""

    def deco(fn):
        DATASETS[name] = DatasetEntry(name, description, fn, available)
        return fn

    return deco


def load_dataset(name_or_path: str, seed: int = 0, **options) -> DatasetSplits:
    """Build a registered dataset by name, or read the user's own ``.npz`` file / folder of ``.npy``."""
    from . import builtin  # noqa: F401  (registers the built-in datasets)

    if name_or_path in DATASETS:
        check_options(name_or_path, DATASETS[name_or_path].build, options)
        splits = DATASETS[name_or_path].build(seed=seed, **options)
        splits.name = name_or_path
        return splits
    path = Path(name_or_path)
    if path.suffix == ".npz" or path.is_dir() or path.exists():
        from .arrays import load_arrays

        check_options(str(path), load_arrays, options)
        return load_arrays(path, seed=seed, **options)
    known = ", ".join(sorted(DATASETS))
    raise UserError(f"unknown dataset '{name_or_path}': use one of {known}, or a path to an .npz file")


def check_options(name: str, build: Callable, options: dict) -> None:
    """Reject ``data.<option>`` keys the builder does not name: a misspelt option must not be ignored."""
    params = inspect.signature(build).parameters.values()
    known = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"seed", "path"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown data option(s) {', '.join(unknown)} for dataset '{name}': its options are "
                        f"{', '.join(sorted(known)) or 'none'}")
