"""The trainer's own options, checked before anything is built: device, mixed precision, limits."""
from __future__ import annotations

import torch

from ..config import Config
from ..errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available: use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda") from None


def check_run_options(cfg: Config) -> None:
    """The trainer's own options, checked before anything is built."""
    if str(cfg.amp).lower() not in AMP_DTYPES:
        raise UserError(f"amp={cfg.amp!r} is unknown: use off or bf16")
    if not isinstance(cfg.compile, bool):
        raise UserError(f"compile={cfg.compile!r}: use true or false")
    if int(cfg.grad_accum) < 1:
        raise UserError(f"grad_accum must be at least 1, got {cfg.grad_accum}")
    if int(cfg.max_rollbacks) < 0:
        raise UserError(f"max_rollbacks must be >= 0, got {cfg.max_rollbacks}")
    if int(cfg.max_steps) < 0 or not float(cfg.time_limit) >= 0:
        raise UserError(f"max_steps and time_limit must be >= 0 (0: no limit), got {cfg.max_steps}, {cfg.time_limit}")
    if isinstance(cfg.checkpoint_every, bool) or not float(cfg.checkpoint_every) >= 0:
        raise UserError(f"checkpoint_every must be a number of seconds >= 0 (0: a checkpoint after every epoch), "
                        f"got {cfg.checkpoint_every!r}")
