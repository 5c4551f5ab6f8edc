"""Datasets by name: each entry is one decorated builder function in its own module."""
from __future__ import annotations

import inspect
import os
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
        return check_split_names(splits, f"dataset '{name_or_path}'")
    path = Path(name_or_path)
    if path.suffix == ".npz" or path.is_dir() or path.exists():
        from .arrays import load_arrays

        check_options(str(path), load_arrays, options)
        return check_split_names(load_arrays(path, seed=seed, **options), f"'{path}'")
    known = ", ".join(sorted(DATASETS))
    raise UserError(f"unknown dataset '{name_or_path}': use one of {known}, or a path to an .npz file")


def resolve_dataset_paths(cfg) -> None:
    """Store a dataset given as a path (and ``data.data_dir``) as an absolute path, so that the run folder's
    config.json finds its data from any working directory (``mmvae evaluate`` run elsewhere)."""
    from . import builtin  # noqa: F401

    name = cfg.dataset
    if isinstance(name, str) and name and name not in DATASETS:
        path = Path(name).expanduser()
        if path.suffix == ".npz" or path.exists():
            cfg.dataset = os.path.abspath(path)
    data_dir = (cfg.data or {}).get("data_dir")
    if isinstance(data_dir, str) and data_dir:
        cfg.data = {**cfg.data, "data_dir": os.path.abspath(Path(data_dir).expanduser())}


def check_split_names(splits: DatasetSplits, where: str) -> DatasetSplits:
    """Every modality name valid (:mod:`mmvae.data.names`) and equal to its spec's name."""
    from .names import check_modality_names

    check_modality_names(splits.specs, where)
    for key, spec in splits.specs.items():
        if spec.name != key:
            raise UserError(f"{where}: modality {key!r} carries a spec named {spec.name!r}: they must be equal")
    return splits


def check_options(name: str, build: Callable, options: dict) -> None:
    """Reject ``data.<option>`` keys the builder does not name: a misspelt option must not be ignored."""
    params = inspect.signature(build).parameters.values()
    known = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"seed", "path"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown data option(s) {', '.join(unknown)} for dataset '{name}': its options are "
                        f"{', '.join(sorted(known)) or 'none'}")
