"""Run-folder files written atomically (temp file + rename): a crash never leaves half a checkpoint.

Weights go to safetensors; optimizer, RNG and progress to a torch file loaded with ``weights_only``
(no pickled code is ever executed on load).
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

from ..errors import UserError

WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
STATE = "training_state.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; the old file survives any failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write {path} ({e.strerror or e}): free disk space or choose a writable --out") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def load_state(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} is missing: cannot resume this run (start a new one without --resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise UserError(f"{path} is corrupt or truncated ({type(e).__name__}): cannot resume; start a new run") from None
