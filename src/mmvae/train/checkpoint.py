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


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; the old file survives any failure."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run files get the user's usual mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError, SafetensorError) as e:
        # torch.save reports a full disk as RuntimeError, safetensors as SafetensorError.
        _discard(tmp)
        why = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot write {path} ({why}): free disk space or choose a writable --out") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str | None) -> None:
    try:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    except OSError:
        pass


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files left by a process killed in the middle of a write (never a real checkpoint)."""
    for f in Path(folder).glob(f"{TMP_PREFIX}*"):
        _discard(str(f))


def write_json(path: Path, obj: Any) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)

    atomic_write(path, w)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "mmvae"}))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} is missing: the run folder is incomplete (train it again or pick another run)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is corrupt or truncated ({e}): restore it or train again") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise UserError(f"{path} does not match the model in config.json ({first}): was the run folder mixed up?") from None


def save_state(state: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


STATE_KEYS = ("format_version", "model", "optimizer", "progress")


def load_state(path: Path) -> dict:
    """The resumable state (weights, optimizer, progress, RNG) of a run; UserError if unusable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} is missing: cannot resume this run (start a new one without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise UserError(f"{path} is corrupt or truncated ({type(e).__name__}): cannot resume; start a new run") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise UserError(f"{path} is not an mmvae training state (missing {[k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]}): "
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{f} is corrupt ({e}): the run folder cannot be used") from None
    if not isinstance(saved, dict) or saved.get("format_version") != FORMAT_VERSION:
        version = saved.get("format_version") if isinstance(saved, dict) else None
        raise UserError(f"{path} was written by an incompatible mmvae (format {version}, "
                        f"this version reads {FORMAT_VERSION}): retrain it with this version")
    return saved
