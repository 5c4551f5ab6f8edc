"""The evaluation folder (RUN/evaluation/): locked by one ``mmvae evaluate`` at a time, cleaned of
temporaries left by a killed evaluation, and its previous metrics.json read back if intact.

A damaged metrics.json (not UTF-8 JSON, or not the object ``evaluate`` writes) is never a reason to
fail: it is renamed to ``metrics.json.damaged`` with a note, and the metrics are computed afresh, so
the failure cannot repeat. A folder that cannot be written (read-only run folder, full disk) is
refused with one line: evaluate a writable copy of the run folder instead.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..train.checkpoint import remove_stale_temporaries
from ..train.lock import FolderLock

WRITE_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
DICT_KEYS = ("timings", "notes", "refused", "pictures", "settings")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr, flush=True)


def cannot_write(folder: Path, why: str) -> UserError:
    return UserError(f"cannot write the evaluation into {folder} ({why}): copy the run folder somewhere writable "
                     f"and evaluate the copy, or free disk space")


def read_previous(folder: Path, say: Callable[[str], None] = _note) -> dict:
    """metrics.json of an earlier evaluation (merged with the new results), or {} (none, or damaged)."""
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or any(not isinstance(record.get(k, {}), dict) for k in DICT_KEYS):
            raise ValueError("not an evaluation record")
        return record
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        aside, i = path.with_name("metrics.json.damaged"), 2
        while aside.exists():
            aside, i = path.with_name(f"metrics.json.damaged-{i}"), i + 1
        os.replace(path, aside)
        say(f"{path} was damaged ({type(e).__name__}): kept as {aside.name}; the metrics are computed afresh")
        return {}


@contextlib.contextmanager
def evaluation_folder(folder: Path, log: Callable = print):
    """Create and lock ``folder``; yield the previous record; turn write failures into one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(folder, e.strerror or type(e).__name__) from None
    lock = FolderLock(folder, "evaluate", unwritable=lambda why: cannot_write(folder, why))
    lock.acquire()
    try:
        for d in (folder, folder / "classifiers"):
            if d.is_dir():
                remove_stale_temporaries(d)
        yield read_previous(folder)
    except OSError as e:
        if e.errno in WRITE_ERRORS:
            raise cannot_write(folder, e.strerror or type(e).__name__) from None
        raise
    finally:
        lock.release()
