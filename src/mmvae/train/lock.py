"""One writer per folder: ``mmvae train`` locks its run folder, ``mmvae evaluate`` its evaluation/ folder.

The lock is ``fcntl.flock`` on a file ``.lock`` in the folder, holding the owner's pid for the message
a second process gets. The kernel releases a flock when its process dies (even by ``kill -9``), so a
lock file left by a dead process is simply taken over. The owner deletes the file when it is done;
since another process may have opened the file just before, a new owner checks that the file it
locked is still the one at that path (else it retries on the new one).

Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK = ".lock"


class FolderLock:
    """``with FolderLock(folder, what):`` or ``acquire()`` / ``release()``; UserError when taken."""

    def __init__(self, folder: Path, what: str = "train", unwritable=None):
        self.folder = Path(folder)
        self.what = what
        self.unwritable = unwritable    # why -> UserError, for a folder where the lock file cannot be made
        self.path = self.folder / LOCK
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        if fcntl is None or self.fd is not None:
            return self
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if self.unwritable is not None:
                    raise self.unwritable(e.strerror) from None
                raise UserError(f"cannot write in {self.folder} ({e.strerror}): choose a writable folder") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "another process"
                raise UserError(f"{self.folder} is in use by another mmvae {self.what} ({who}): wait for it to "
                                f"finish or stop it, or use another folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:     # the previous owner deleted the file after we opened it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self
        raise UserError(f"could not lock {self.folder} (its lock file keeps changing): try again")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)       # while still locked: a waiting process then retries on a new file
        except OSError:
            pass
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
