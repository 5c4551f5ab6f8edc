"""The trainer's own options, checked before anything is built: device, mixed precision, limits."""
from __future__ import annotations

import torch

from ..config import Config
from ..errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16}
AMP_CHOICES = ("auto", *AMP_DTYPES)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices natively: a CUDA device with bf16 support, or an x86 CPU
    with AVX512-BF16 or AMX-BF16 (there a bf16 GEMM runs about twice the fastest float32 one: bench/roofline.py;
    elsewhere bf16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            caps = torch.cpu.get_capabilities()
        except (AttributeError, RuntimeError):   # torch without the query: assume emulation
            return False
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``amp=auto``: bf16 autocast where the device runs bf16 natively, else off; off and bf16 as they are."""
    amp = str(amp).lower()
    if amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    return amp


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
    if str(cfg.amp).lower() not in AMP_CHOICES:
        raise UserError(f"amp={cfg.amp!r} is unknown: use auto, off or bf16")
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
