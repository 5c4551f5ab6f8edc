"""Checksums of a run folder's checkpoint files, so that bit damage is found before it is used.

``checksums.json`` (the manifest) lists the sha256 of every checkpoint file (model.safetensors,
best.safetensors, training_state.pt, observed_mask.pt). A checkpoint is committed in five steps:

1. each new file is written to a temporary file and flushed to disk, and its sha256 is computed;
2. the manifest is rewritten (atomically) accepting, per file, the new digest *and* the old one;
3. each temporary file is renamed over its final name;
4. the manifest is rewritten accepting only the new digests.

A process killed between any two steps leaves every file either old or new, and both are accepted:
a kill never produces a false "damaged" verdict. A file whose digest is not accepted was changed
after it was written (bit rot, a bad copy, an editor) and is reported by name (:class:`DamagedFile`).

Run folders written before the manifest existed (no checksums.json) are accepted with a note: their
files are only checked by loading them; the manifest appears with the next checkpoint. A file the
manifest does not list (e.g. an older best.safetensors) is accepted with a note too.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .checkpoint import atomic_write, discard, replace, write_temp

MANIFEST = "checksums.json"
FORMAT = 1


class DamagedFile(UserError):
    """A checkpoint file whose content no longer matches the digest recorded when it was written."""

    def __init__(self, path: Path, fix: str):
        self.path = Path(path)
        super().__init__(f"{path} is damaged: its sha256 differs from the one recorded in {MANIFEST} when it was "
                         f"written: {fix}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, list[str]] | None:
    """{file name: accepted digests}, or None when there is no usable manifest."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if data.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
        return {str(k): [str(d) for d in v] for k, v in files.items() if isinstance(v, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
        return None


def _write_manifest(folder: Path, files: dict[str, list[str]]) -> None:
    text = json.dumps({"format": FORMAT, "algorithm": "sha256", "files": files}, indent=1, sort_keys=True)
    atomic_write(Path(folder) / MANIFEST, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def commit(folder: Path, writers: dict[str, Callable[[str], None]]) -> None:
    """Write the named files of ``folder`` with their checksums, safe against a kill at any moment."""
    folder = Path(folder)
    tmps: dict[str, str] = {}
    try:
        for name, write in writers.items():
            tmps[name] = write_temp(folder / name, write)
        new = {name: sha256(Path(tmp)) for name, tmp in tmps.items()}
        files = read_manifest(folder) or {}
        pending = dict(files)
        for name, digest in new.items():
            old = files.get(name)
            if old is None and (folder / name).is_file():
                old = [sha256(folder / name)]   # an unlisted file (older run folder): keep it acceptable
            pending[name] = [digest] + [d for d in (old or []) if d != digest]
        _write_manifest(folder, pending)
        for name in list(tmps):
            replace(tmps.pop(name), folder / name)
        _write_manifest(folder, {**pending, **{name: [digest] for name, digest in new.items()}})
    finally:
        for tmp in tmps.values():
            discard(tmp)


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


_NOTED: set[str] = set()


def verify(path: Path, fix: str = "restore it from a copy or train the run again",
           say: Callable[[str], None] = _note) -> bool:
    """Check ``path`` against its folder's manifest: True if verified, False if it cannot be (no manifest,
    or the file is not listed; noted once per folder); raises :class:`DamagedFile` when it differs."""
    path = Path(path)
    files = read_manifest(path.parent)
    if files is None:
        key = str(path.parent.resolve())
        if key not in _NOTED:
            _NOTED.add(key)
            state = "is unreadable" if (path.parent / MANIFEST).exists() else "is missing (an older mmvae)"
            say(f"{path.parent / MANIFEST} {state}: the checkpoint files cannot be verified, only loaded; the "
                f"next checkpoint writes a new one")
        return False
    accepted = files.get(path.name)
    if accepted is None:
        say(f"{path} is not listed in {MANIFEST}: it cannot be verified, only loaded")
        return False
    if not path.is_file():
        return False     # a missing file is reported by its loader
    if sha256(path) not in accepted:
        raise DamagedFile(path, fix)
    return True


def forget(folder: Path, name: str) -> None:
    """Drop a file from the manifest (it was moved aside)."""
    files = read_manifest(folder)
    if files is not None and name in files:
        files.pop(name)
        _write_manifest(folder, files)


def move_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (``.damaged-2``, ... if taken): nothing is deleted."""
    path = Path(path)
    target, i = path.with_name(path.name + ".damaged"), 2
    while target.exists():
        target, i = path.with_name(f"{path.name}.damaged-{i}"), i + 1
    os.replace(path, target)
    forget(path.parent, path.name)
    return target
