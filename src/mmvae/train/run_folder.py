"""The run folder of one ``mmvae train`` invocation: created, locked, cleaned of stale temporaries, and
removed again when the invocation fails before it became a run (no config.json): bad input never
leaves an empty or half-made run folder behind, and a folder it did not create is never removed."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from .checkpoint import BEST, CONFIG, METRICS, STATE, TMP_PREFIX, WEIGHTS, remove_stale_temporaries
from .integrity import MANIFEST
from .lock import LOCK, FolderLock

# Files a new run writes before config.json marks the folder as a run.
OWN_FILES = (STATE, WEIGHTS, BEST, METRICS, MANIFEST, "observed_mask.pt", LOCK)


class RunFolder:
    def __init__(self, path: Path, resume: bool, main: bool = True):
        self.path = Path(path)
        self.created = False
        self.lock = FolderLock(self.path, "train")
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder: choose another --out")
        if resume and not (self.path / CONFIG).exists():
            raise UserError(f"--resume: {self.path} is not a run folder (no {CONFIG}); give --out of an existing run")
        try:
            if main and not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.path.mkdir()
                    self.created = True
                except FileExistsError:
                    pass
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run folder {self.path} ({e.strerror}): choose a writable --out") from None
        if not main:
            return
        try:
            self.lock.acquire()
            if not resume and (self.path / CONFIG).exists():
                raise UserError(f"{self.path} already holds a run: use --resume to continue it or another --out")
            remove_stale_temporaries(self.path)
        except BaseException:
            self.abandon()
            raise

    def is_run(self) -> bool:
        return (self.path / CONFIG).exists()

    def abandon(self) -> None:
        """After a failure: remove the folder if this invocation created it and it is not a run yet."""
        try:
            if self.created and not self.is_run():
                for f in self.path.iterdir():
                    if f.name in OWN_FILES or f.name.startswith(TMP_PREFIX):
                        if f.is_file() and f.name != LOCK:
                            os.unlink(f)
                self.lock.release()
                try:
                    self.path.rmdir()     # only if nothing else is there
                except OSError:
                    pass
        except OSError:
            pass
        finally:
            self.lock.release()

    def close(self) -> None:
        self.lock.release()
