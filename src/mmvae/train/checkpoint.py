"""Run-folder files written atomically (temp file + rename): a crash never leaves half a checkpoint.

Weights go to safetensors (what users load); the resumable state (weights again, optimizer, RNG,
progress) to one torch file loaded with ``weights_only`` (no pickled code is ever executed on load).
Keeping the weights inside the state makes a checkpoint one atomic file: a kill between two writes can
never pair new weights with old progress.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..config import FORMAT_VERSION, Config
from ..errors import UserError

WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
STATE = "training_state.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
TMP_PREFIX = ".tmp-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_temp(path: Path, write: Callable[[str], None]) -> str:
    """Call ``write(tmp)`` on a new temporary file beside ``path`` (named ``.tmp-<pid>-<name>.*``, so a
    leftover of a killed process is recognised), make it durable and return its name. The caller
    renames it into place (:func:`atomic_write`, :func:`mmvae.train.integrity.commit`)."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{path.name}.", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run files get the user's usual mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        return tmp
    except (OSError, RuntimeError, SafetensorError) as e:
        # torch.save reports a full disk as RuntimeError, safetensors as SafetensorError.
        discard(tmp)
        raise cannot_write(path, e) from None
    except BaseException:
        discard(tmp)
        raise


def cannot_write(path: Path, e: BaseException) -> UserError:
    why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    return UserError(f"cannot write {path} ({why}): free disk space or choose a writable folder")


def replace(tmp: str, path: Path) -> None:
    """Rename a finished temporary file over ``path`` (atomic on one file system)."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        discard(tmp)
        raise cannot_write(path, e) from None


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; the old file survives any failure."""
    replace(write_temp(path, write), Path(path))


def discard(tmp: str | None) -> None:
    try:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    except OSError:
        pass


def _writer_pid(name: str) -> int | None:
    """The pid in ``.tmp-<pid>-<name>.*``; None for any other name (older mmvae versions)."""
    head = name[len(TMP_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True   # someone else's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Delete our temporary files (``.tmp-*``) left by a process killed in the middle of a write: those
    whose writer is dead or unknown (older names). Call it while holding the folder's lock, so no
    other mmvae process is writing there. Returns the names removed."""
    removed = []
    for f in Path(folder).glob(f"{TMP_PREFIX}*"):
        pid = _writer_pid(f.name)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        if f.is_file() and not f.is_symlink():
            discard(str(f))
            removed.append(f.name)
    return removed


def write_json(path: Path, obj: Any) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)

    atomic_write(path, w)


def weights_writer(model: torch.nn.Module | dict[str, torch.Tensor], progress: dict | None = None
                   ) -> Callable[[str], None]:
    """A writer of the model's weights (a module, or its state dict, e.g. a snapshot's) as safetensors;
    ``progress`` (epoch, global_step, ...) goes into the file's metadata, so a run whose training state
    is damaged can restart from these weights."""
    state = model if isinstance(model, dict) else model.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": "mmvae"}
    for key in PROGRESS_META:
        if progress is not None and key in progress:
            meta[key] = json.dumps(progress[key])
    return lambda tmp: save_file(tensors, tmp, metadata=meta)


PROGRESS_META = ("epoch", "step_in_epoch", "global_step", "best_val", "rollbacks")


def save_weights(model: torch.nn.Module, path: Path, progress: dict | None = None) -> None:
    atomic_write(path, weights_writer(model, progress))


def weights_progress(path: Path) -> dict | None:
    """The training progress stored in a weights file's metadata, or None (older files, damage)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        out = {k: json.loads(meta[k]) for k in PROGRESS_META if k in meta}
    except (SafetensorError, OSError, ValueError, TypeError, RecursionError):
        return None
    if not all(k in out for k in ("epoch", "step_in_epoch", "global_step")):
        return None
    if not all(type(out[k]) is int and out[k] >= 0 for k in ("epoch", "step_in_epoch", "global_step")):
        return None
    if not isinstance(out.get("best_val", 0.0), (int, float)) or isinstance(out.get("best_val"), bool):
        out.pop("best_val")
    if type(out.get("rollbacks", 0)) is not int or out.get("rollbacks", 0) < 0:
        out.pop("rollbacks")
    return out


class WeightsUnreadable(UserError):
    """A weights file that is missing, truncated or not safetensors."""


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise WeightsUnreadable(f"{path} is missing: the run folder is incomplete (train it again or pick another run)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise WeightsUnreadable(f"{path} is corrupt or truncated ({first}): restore it or train again") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = read_weights(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"{path} does not match the model in config.json ({first}): was the run folder mixed up?") from None


def state_writer(state: dict) -> Callable[[str], None]:
    """A writer of the resumable state. Through a file object, so the zip records inside are named
    ``archive/...`` rather than after the temporary file (whose name holds the pid): the same state
    gives the same bytes in every process."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    return write


def save_state(state: dict, path: Path) -> None:
    atomic_write(path, state_writer(state))


STATE_KEYS = ("format_version", "model", "optimizer", "progress")


class StateUnreadable(UserError):
    """training_state.pt is missing, truncated or not a torch file (damage, not a version mismatch)."""


def load_state(path: Path) -> dict:
    """The resumable state (weights, optimizer, progress, RNG) of a run; UserError if unusable."""
    path = Path(path)
    if not path.exists():
        raise StateUnreadable(f"{path} is missing: cannot resume this run (start a new one without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise StateUnreadable(f"{path} is corrupt or truncated ({type(e).__name__}): cannot resume; start a new run") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise StateUnreadable(f"{path} is not an mmvae training state (missing "
                              f"{[k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]}): "
                              f"cannot resume; start a new run")
    return state


def default_run_dir(cfg: Config) -> Path:
    base = Path("runs") / f"{cfg.model}-{Path(str(cfg.dataset)).stem}"
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def read_run_config(path: Path) -> dict:
    path = Path(path)
    f = path / CONFIG
    if not path.is_dir() or not f.exists():
        raise UserError(f"{path} is not a run folder (no {CONFIG}): give the folder that `mmvae train` wrote")
    try:
        saved = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{f} is corrupt ({str(e)[:120]}): the run folder cannot be used") from None
    except OSError as e:
        raise UserError(f"cannot read {f} ({e.strerror}): check its permissions") from None
    if not isinstance(saved, dict) or saved.get("format_version") != FORMAT_VERSION:
        version = saved.get("format_version") if isinstance(saved, dict) else None
        raise UserError(f"{path} was written by an incompatible mmvae (format {version}, "
                        f"this version reads {FORMAT_VERSION}): retrain it with this version")
    return saved
