"""What ``--resume`` may change, and how it repairs the run's metrics.jsonl.

A resumed run continues with the settings saved in its config.json. A setting given again with another
value is a deliberate override: allowed for the keys in :data:`SAFE` (how long, how fast, on what
hardware, how strongly the KL is weighted, which estimator), recorded as an event in metrics.jsonl and
saved in config.json; refused for everything else, above all the keys that define the model's
shape or its data (:data:`SHAPE`, :data:`DATA`): the saved weights and optimizer state would not fit,
or the run would silently become another experiment. ``max_steps`` and ``time_limit`` bound one
invocation: they are recorded with the event, not saved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import Config
from ..errors import UserError
from .checkpoint import (BEST, STATE, WEIGHTS, StateUnreadable, WeightsUnreadable, atomic_write, load_state,
                         read_weights, weights_progress)
from .integrity import DamagedFile, move_aside, verify

SAFE = ("lr", "epochs", "max_steps", "time_limit", "checkpoint_every", "device", "amp", "compile", "vectorise",
        "grad_accum", "grad_clip", "max_rollbacks", "beta", "warmup", "objective", "k", "kl", "weights", "subsample_k")
SLICE = ("max_steps", "time_limit")      # per invocation: not saved in config.json
SHAPE = ("model", "dataset", "data", "modalities", "latent_dim", "hidden", "posterior", "likelihood", "scale",
         "default_scale", "prior", "network")
DATA = ("batch_size", "seed", "val_fraction", "paired_fraction", "observed", "amsgrad")
IGNORED = ("out",)


def _flat(name: str, value) -> dict[str, object]:
    if isinstance(value, dict):
        return {f"{name}.{k}": v for k, v in value.items()}
    return {name: value}


def differences(saved: Config, wanted: Config) -> dict[str, tuple]:
    """{key: (saved value, wanted value)} for every setting that differs (dicts per key: ``data.n``)."""
    out = {}
    a, b = saved.to_dict(), wanted.to_dict()
    for name in a:
        if name in IGNORED or a[name] == b.get(name):
            continue
        if name == "amp" and str(b.get(name)).lower() == "auto":   # auto: the precision the run already has
            continue
        fa, fb = _flat(name, a[name]), _flat(name, b.get(name))
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                out[key] = (fa.get(key), fb.get(key))
    return out


def check_overrides(changes: dict[str, tuple], folder: Path) -> None:
    """Refuse every change that is not a safe override, naming the keys and the fix."""
    shape = [k for k in changes if k.split(".")[0] in SHAPE]
    data = [k for k in changes if k.split(".")[0] in DATA]
    other = [k for k in changes if k.split(".")[0] not in SAFE + SHAPE + DATA]
    if shape:
        raise UserError(f"--resume cannot change {', '.join(shape)} of the run in {folder} (it would change the "
                        f"model's shape or data, so the saved weights would not fit): drop it to continue this run, "
                        f"or start a new run with another --out")
    if data or other:
        keys = data + other
        raise UserError(f"--resume cannot change {', '.join(keys)} of the run in {folder} (only "
                        f"{', '.join(SAFE)} may change between slices of a run): drop it, or start a new run")


def apply_overrides(saved: Config, wanted: Config, folder: Path) -> tuple[Config, dict[str, list], dict]:
    """The config to continue with (saved settings + safe overrides), the overrides as {key: [old, new]}
    and this invocation's limits (max_steps, time_limit) where set."""
    changes = {k: v for k, v in differences(saved, wanted).items() if k not in SLICE}
    check_overrides(changes, folder)
    cfg = Config.from_dict(saved.to_dict())
    for key in set(changes) | set(SLICE):
        head = key.split(".")[0]
        setattr(cfg, head, getattr(wanted, head))
    cfg.out = str(folder)
    limits = {k: getattr(wanted, k) for k in SLICE if getattr(wanted, k)}
    return cfg, {k: [old, new] for k, (old, new) in changes.items()}, limits


def repair_metrics(path: Path, step: int, say: Callable[[str], None]) -> None:
    """Make metrics.jsonl fit a checkpoint of global step ``step`` before training goes on.

    Records of later steps are dropped (training writes them again). A torn last line (no newline: the
    process was killed while writing it) is dropped. Any other unreadable line (bytes that are not
    UTF-8, not JSON, not a record) is not silently deleted: it is moved, byte for byte, to
    ``metrics.jsonl.unreadable`` and named in a note."""
    path = Path(path)
    if not path.exists():
        return
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}): check its permissions") from None
    lines = raw.split(b"\n")
    torn = lines.pop()            # b"" when the file ends with a newline
    keep, bad, later = [], [], 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = _record(line)
        if rec is None:
            bad.append((i, line))
        elif _step(rec) > step:
            later += 1
        else:
            keep.append(line)
    if torn.strip():
        rec = _record(torn)
        if rec is not None and _step(rec) <= step:
            keep.append(torn)      # complete but for its newline
        elif rec is None:
            say(f"dropped a torn last line of {path.name} (the run was stopped while writing it)")
    if bad:
        side = path.with_name(path.name + ".unreadable")
        try:
            with open(side, "ab") as f:
                f.write(b"".join(line + b"\n" for _, line in bad))
        except OSError as e:
            raise UserError(f"cannot write {side} ({e.strerror}): free disk space or fix permissions") from None
        say(f"{path.name} line{'s' if len(bad) > 1 else ''} {', '.join(str(i) for i, _ in bad[:10])}"
            f"{' ...' if len(bad) > 10 else ''} could not be read (not UTF-8 JSON records): moved to {side.name}")
    new = b"".join(line + b"\n" for line in keep)
    if new != raw:
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(new))


def _record(line: bytes) -> dict | None:
    try:
        rec = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("step", 0), (int, float)) or isinstance(rec.get("step"), bool):
        return None
    return rec


def _step(rec: dict) -> float:
    return rec.get("step", 0)


@dataclass
class ResumePoint:
    """Where a resumed run continues from: the full training state, or (after damage) weights + progress."""

    state: dict | None = None
    weights: dict | None = None          # tensors of the fallback checkpoint
    progress: dict | None = None         # its progress (epoch, step_in_epoch, global_step, ...)
    source: str = STATE
    notes: list[str] = field(default_factory=list)
    rewrite_weights: bool = False        # model.safetensors is damaged or older than the state: export again


def _intact_weights(path: Path, say) -> tuple[dict | None, str | None]:
    """(tensors, None) when ``path`` verifies and loads, else (None, why)."""
    if not path.exists():
        return None, "missing"
    try:
        verify(path, say=say)
        return read_weights(path), None
    except DamagedFile:
        return None, "its sha256 differs from checksums.json"
    except WeightsUnreadable as e:
        return None, str(e).split(" is ", 1)[-1].split(": restore")[0]


def choose_resume_point(folder: Path, say: Callable[[str], None], main: bool = True) -> ResumePoint:
    """The most recent intact checkpoint of a run folder.

    training_state.pt verified and loaded: continue exactly (a damaged model.safetensors beside it is
    moved aside and written again from the state). training_state.pt damaged, truncated or missing:
    continue from the most recent intact weights file that records its progress (model.safetensors of
    the same checkpoint, else best.safetensors), with a fresh optimizer state, after moving the damaged
    file aside; nothing intact: a UserError naming the damaged file. Only the ``main`` process (rank 0
    under torchrun) moves files; the others read the same choice."""
    folder = Path(folder)
    state_path = folder / STATE
    try:
        verify(state_path, fix="resume falls back to the weights", say=say)
        state = load_state(state_path)
    except (DamagedFile, StateUnreadable) as e:
        return _fall_back(folder, e, say, main)
    point = ResumePoint(state=state)
    weights = folder / WEIGHTS
    tensors, why = _intact_weights(weights, say)
    if tensors is None:
        point.rewrite_weights = True
        if weights.exists() and main:
            aside = move_aside(weights)
            point.notes.append(f"{WEIGHTS} is damaged ({why}): kept as {aside.name} and written again from "
                               f"{STATE}, which holds the same weights")
    else:
        meta = weights_progress(weights)
        point.rewrite_weights = meta is None or meta["global_step"] != state["progress"].get("global_step")
    return point


def _fall_back(folder: Path, error: UserError, say, main: bool) -> ResumePoint:
    best = None
    for name in (WEIGHTS, BEST):
        tensors, _ = _intact_weights(folder / name, say)
        progress = weights_progress(folder / name) if tensors is not None else None
        if progress is not None and (best is None or progress["global_step"] > best[2]["global_step"]):
            best = (name, tensors, progress)
    if best is None:
        raise UserError(f"{str(error).split(': cannot resume')[0].split(': resume falls back')[0]}, and no intact "
                        f"weights file records its progress ({WEIGHTS}, {BEST}): cannot resume; start a new run "
                        f"with another --out") from None
    name, tensors, progress = best
    kept = ""
    if (folder / STATE).exists() and main:
        kept = f"; the damaged file is kept as {move_aside(folder / STATE).name}"
    why = "missing" if "is missing" in str(error) else "damaged"
    note = (f"{STATE} is {why}: continuing from {name} (epoch {progress['epoch']}, global step "
            f"{progress['global_step']}) with a fresh optimizer state (Adam's moments restart){kept}")
    return ResumePoint(weights=tensors, progress=progress, source=name, notes=[note], rewrite_weights=True)
