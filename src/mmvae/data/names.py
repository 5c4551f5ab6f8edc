"""Modality names: checked once where they enter (an .npz, a dataset, a run folder), then trusted.

A modality name becomes a key of ``nn.ModuleDict`` / ``nn.ParameterDict`` (encoders, decoders,
likelihoods, MEME's pseudo-samples), a key of metrics.json and part of file names the library writes
(classifier cache ``<name>.safetensors``, pictures ``cross_<a>_to_<b>.png``). So a name must be:

* ``^[A-Za-z][A-Za-z0-9_-]{0,63}$``: a letter, then up to 63 letters, digits, ``_`` or ``-``; no dot
  (``nn.Module`` paths use dots), no slash, no ``..``, not empty, ASCII only, short enough for any
  file system;
* not an attribute of ``nn.ModuleDict`` / ``nn.ParameterDict`` (``keys``, ``items``, ``values``,
  ``train``, ``eval``, ``forward``, ``to``, ``type``, ``cuda``, ...): torch refuses those as keys;
* unique ignoring case, since two files ``A.json`` and ``a.json`` are one file on macOS and Windows.

:func:`child_path` builds every path named after a modality and refuses one that would leave its folder.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from torch import nn

from ..errors import UserError

PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
_NAME = re.compile(PATTERN)
# What torch refuses as a ModuleDict / ParameterDict key in this version, plus the common ones by name
# (a run folder written under another torch version must read the same everywhere).
RESERVED = frozenset(
    {n for n in dir(nn.ModuleDict()) + dir(nn.ParameterDict()) if not n.startswith("_")}
    | {"keys", "items", "values", "train", "eval", "forward", "to", "type", "cuda", "cpu", "float", "double",
       "half", "apply", "modules", "children", "parameters", "buffers", "training", "update", "pop", "clear",
       "get", "copy", "state_dict", "load_state_dict", "compile"})


def name_problem(name) -> str | None:
    """Why ``name`` cannot be a modality name, or None when it can."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if name == "":
        return "is empty"
    if not _NAME.fullmatch(name):
        return f"does not match {PATTERN} (a letter, then letters, digits, '_' or '-'; at most 64 characters)"
    if name in RESERVED:
        return "is the name of a torch nn.ModuleDict attribute"
    return None


FIX = "rename it (e.g. 'image', 'text_1')"


def check_modality_name(name, where: str, fix: str = FIX) -> str:
    """Return ``name`` or raise a UserError naming it, ``where`` it comes from and ``fix``."""
    why = name_problem(name)
    if why is not None:
        raise UserError(f"{where}: modality name {name!r} {why}: {fix}")
    return name


def check_modality_names(names: Iterable, where: str, fix: str = FIX) -> list[str]:
    """Every name valid and no two equal ignoring case."""
    names = list(names)
    seen: dict[str, str] = {}
    for n in names:
        check_modality_name(n, where, fix)
        other = seen.setdefault(n.lower(), n)
        if other != n:
            raise UserError(f"{where}: modality names {other!r} and {n!r} differ only in case (their files would "
                            f"collide on some file systems): {fix}")
    return names


_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")


def child_path(folder: Path, stem: str, suffix: str = "") -> Path:
    """``folder / (stem + suffix)`` for a stem built from checked names (letters, digits, ``_``, ``-``);
    refuses anything else, so no file named after a modality can land outside ``folder``."""
    if not isinstance(stem, str) or not _STEM.fullmatch(stem):
        raise UserError(f"refusing to write {stem!r}{suffix} in {folder}: file names built from modality "
                        f"names may hold only letters, digits, '_' and '-' (rename the modality)")
    path = Path(folder) / f"{stem}{suffix}"
    if path.parent != Path(folder):
        raise UserError(f"refusing to write {path}: it is not inside {folder}")
    return path
