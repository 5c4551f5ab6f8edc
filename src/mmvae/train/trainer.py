"""The trainer: Adam, KL warm-up, validation, checkpoints that resume exactly, a divergence guard.

Exact resume: the epoch's shuffling comes from a generator seeded by (seed, epoch), the global torch
RNG state is saved with every checkpoint, and validation and pictures run inside ``fork_rng`` so they
never move the training stream. A run cut at any step (``max_steps``, ``time_limit``) and resumed
therefore follows the same trajectory as one that was never interrupted.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import FORMAT_VERSION, Config
from ..data.dataset import DatasetSplits, validation_split
from ..data.partial import apply_partial_observation, drop_unobserved_rows
from ..data.registry import load_dataset
from ..errors import UserError
from ..models.registry import build_model
from .checkpoint import BEST, CONFIG, METRICS, STATE, WEIGHTS, load_state, load_weights, save_state, save_weights, write_json
from .schedule import kl_weight


class TrainingDiverged(RuntimeError):
    """Non-finite loss or gradients persisted after the allowed rollbacks."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available: use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda") from None


def default_run_dir(cfg: Config) -> Path:
    base = Path("runs") / f"{cfg.model}-{Path(str(cfg.dataset)).stem}"
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


@dataclass
class Progress:
    epoch: int = 0            # epochs completed
    step_in_epoch: int = 0    # steps done inside the current epoch
    global_step: int = 0
    best_val: float = math.inf
    rollbacks: int = 0
    sums: dict = field(default_factory=dict)  # running sums of the current epoch's logs


class Trainer:
    """Trains ``cfg.model`` on ``cfg.dataset`` into the run folder ``cfg.out``."""

    def __init__(self, cfg: Config, splits: DatasetSplits | None = None, resume: bool = False,
                 model: torch.nn.Module | None = None, show_progress: bool | None = None):
        self.cfg = cfg
        self.resume = resume
        self.show_progress = show_progress
        self.out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
        cfg.out = str(self.out)
        self._check_out_dir()
        if resume:
            self._restore_config()
            cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.device = pick_device(cfg.device)
        self.splits = splits or load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data)
        train, self.val = validation_split(self.splits.train, cfg.val_fraction, cfg.seed)
        train = apply_partial_observation(train, cfg.paired_fraction, cfg.observed, cfg.seed)
        self.train_data = drop_unobserved_rows(train)
        self.model = (model or build_model(self.splits.specs, cfg)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, amsgrad=cfg.amsgrad)
        self.progress = Progress()
        self.steps_per_epoch = self.train_data.num_batches(cfg.batch_size)
        if len(self.train_data) == 0:
            raise UserError("no training rows left after the validation split: use more data or --set val_fraction=0")

    # ------------------------------------------------------------------------------ run folder
    def _check_out_dir(self) -> None:
        has_run = (self.out / CONFIG).exists()
        if self.resume and not has_run:
            raise UserError(f"--resume: {self.out} is not a run folder (no {CONFIG}); give --out of an existing run")
        if not self.resume and has_run:
            raise UserError(f"{self.out} already holds a run: use --resume to continue it or another --out")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run folder {self.out} ({e.strerror}): choose a writable --out") from None

    def _restore_config(self) -> None:
        saved = read_run_config(self.out)
        keep = {k: getattr(self.cfg, k) for k in ("epochs", "max_steps", "time_limit", "device")}
        self.cfg = Config.from_dict(saved["config"])
        for k, v in keep.items():
            setattr(self.cfg, k, v)
        self.cfg.out = str(self.out)

    def _write_config(self) -> None:
        counts = self.train_data.counts()
        write_json(self.out / CONFIG, {
            "format_version": FORMAT_VERSION,
            "mmvae_version": _version(),
            "config": self.cfg.to_dict(),
            "modalities": [s.to_dict() for s in self.splits.specs.values()],
            "num_classes": self.splits.train.num_classes,
            "data": {"train_rows": len(self.train_data), "validation_rows": len(self.val),
                     "test_rows": len(self.splits.test), "observed_patterns": counts},
        })
        if self.cfg.paired_fraction < 1.0:
            masks = torch.stack([self.train_data.mask[m] for m in self.train_data.modalities], 1)
            save_state({"modalities": self.train_data.modalities, "mask": masks}, self.out / "observed_mask.pt")

    def _snapshot(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "progress": copy.deepcopy(self.progress.__dict__),
        }

    def _restore(self, snap: dict) -> None:
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        torch.set_rng_state(snap["torch_rng"])
        if snap.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(snap["cuda_rng"])
        self.progress = Progress(**copy.deepcopy(snap["progress"]))

    def _checkpoint(self) -> None:
        """Save weights and state; only ever called with finite parameters."""
        save_weights(self.model, self.out / WEIGHTS)
        snap = self._snapshot()
        state = {k: v for k, v in snap.items() if k != "model"}
        save_state(state, self.out / STATE)
        self.good = snap

    def _log(self, record: dict) -> None:
        try:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise UserError(f"cannot write {self.out / METRICS} ({e.strerror}): free disk space or fix permissions") from None

    def _load_for_resume(self) -> None:
        load_weights(self.model, self.out / WEIGHTS)
        state = load_state(self.out / STATE)
        if state.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.out} was written by an incompatible mmvae (state format "
                            f"{state.get('format_version')}, this version reads {FORMAT_VERSION}): start a new run")
        state["model"] = self.model.state_dict()
        self._restore(state)
        self.good = self._snapshot()
        # Metrics written after the checkpoint (a crash between the two) are dropped.
        path = self.out / METRICS
        if path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            keep = [ln for ln in lines if json.loads(ln).get("epoch", 0) <= self.progress.epoch]
            path.write_text("".join(ln + "\n" for ln in keep))

    # --------------------------------------------------------------------------------- training
    def fit(self) -> Path:
        cfg = self.cfg
        if self.resume:
            self._load_for_resume()
        else:
            self._write_config()
            self.good = self._snapshot()
        started = time.time()
        stopped_early = False
        while self.progress.epoch < cfg.epochs:
            done = self._run_epoch(started)
            if not done:
                stopped_early = True
                break
        if not stopped_early:
            self._finish()
        return self.out

    def _batches(self, epoch: int, start: int):
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return self.train_data.batches(self.cfg.batch_size, shuffle=True, generator=g, start=start)

    def _run_epoch(self, started: float) -> bool:
        """One epoch from wherever progress stands; False if cut by max_steps / time_limit."""
        cfg, p = self.cfg, self.progress
        epoch = p.epoch
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=p.step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=(not sys.stderr.isatty()) if self.show_progress is None else not self.show_progress,
                   dynamic_ncols=True)
        t0 = time.time()
        for batch in self._batches(epoch, p.step_in_epoch):
            batch = batch.to(self.device)
            beta = kl_weight(p.global_step, self.steps_per_epoch, cfg.warmup, cfg.beta)
            loss, logs = self.model.loss(batch, beta)
            self.optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
            if not torch.isfinite(loss) or not torch.isfinite(norm):
                what = "loss" if not torch.isfinite(loss) else "gradient"
                self._diverged(epoch, p.step_in_epoch, what)
                bar.close()
                return True  # the caller's loop continues from the restored position
            self.optimizer.step()
            p.global_step += 1
            p.step_in_epoch += 1
            n = batch.size
            p.sums["loss"] = p.sums.get("loss", 0.0) + float(loss.detach()) * n
            for k, v in logs.items():
                p.sums[k] = p.sums.get(k, 0.0) + float(v) * n
            p.sums["rows"] = p.sums.get("rows", 0) + n
            bar.update(1)
            bar.set_postfix(loss=f"{p.sums['loss'] / p.sums['rows']:.2f}", beta=f"{beta:.2f}")
            if (cfg.max_steps and p.global_step >= cfg.max_steps) or (cfg.time_limit and time.time() - started >= cfg.time_limit):
                bar.close()
                self._checkpoint()
                print(f"stopped at step {p.global_step} (epoch {epoch + 1}, step {p.step_in_epoch}); "
                      f"continue with: mmvae train --resume --out {self.out}", file=sys.stderr)
                return False
        bar.close()
        rows = max(p.sums.pop("rows", 1), 1)
        train_logs = {f"train_{k}": v / rows for k, v in p.sums.items()}
        val = self.validate()
        p.epoch += 1
        p.step_in_epoch = 0
        p.sums = {}
        record = {"epoch": p.epoch, "step": p.global_step, **train_logs, **val,
                  "beta": kl_weight(p.global_step, self.steps_per_epoch, cfg.warmup, cfg.beta),
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 3)}
        val_loss = val.get("val_loss", train_logs.get("train_loss", math.inf))
        improved = val_loss < p.best_val
        if improved:
            p.best_val = val_loss
        self._log(record)
        self._checkpoint()
        if improved:
            save_weights(self.model, self.out / BEST)
        print(f"epoch {p.epoch}/{cfg.epochs}  train loss {train_logs.get('train_loss', float('nan')):.3f}"
              + (f"  val loss {val['val_loss']:.3f}" if "val_loss" in val else "")
              + f"  ({record['seconds']:.1f}s)", file=sys.stderr)
        return True

    def _diverged(self, epoch: int, step: int, what: str) -> None:
        p = self.progress
        last = self.out / WEIGHTS if (self.out / WEIGHTS).exists() else None
        where = f"epoch {epoch + 1}, step {step + 1} (global step {p.global_step + 1})"
        if p.rollbacks >= self.cfg.max_rollbacks:
            self._log({"event": "diverged", "epoch": epoch, "step": p.global_step, "what": what})
            hint = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
            raise TrainingDiverged(f"training diverged: non-finite {what} at {where} after {p.rollbacks} "
                                   f"rollback(s); {hint}. Lower --lr or set grad_clip (--set grad_clip=10).")
        rollbacks = p.rollbacks + 1
        self._restore(self.good)
        self.progress.rollbacks = rollbacks
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        lr = self.optimizer.param_groups[0]["lr"]
        self._log({"event": "rollback", "epoch": epoch, "step": p.global_step, "what": what,
                   "resumed_from_epoch": self.progress.epoch, "lr": lr, "rollbacks": rollbacks})
        print(f"non-finite {what} at {where}: rolled back to the last good state (epoch {self.progress.epoch}), "
              f"learning rate halved to {lr:g} ({rollbacks}/{self.cfg.max_rollbacks})", file=sys.stderr)

    @torch.no_grad()
    def validate(self) -> dict:
        if len(self.val) == 0:
            return {}
        self.model.eval()
        total, rows = 0.0, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed + 1)
            for batch in self.val.batches(max(self.cfg.batch_size, 256)):
                loss, _ = self.model.loss(batch.to(self.device), self.cfg.beta)
                total += float(loss) * batch.size
                rows += batch.size
        self.model.train()
        return {"val_loss": total / rows}

    def _finish(self) -> None:
        from ..evaluation.pictures import sample_grid

        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            sample_grid(self.model, self.splits.test, self.out / "samples.png")


def train(cfg: Config, splits: DatasetSplits | None = None, resume: bool = False, **kwargs) -> Path:
    """Train and return the run folder."""
    return Trainer(cfg, splits=splits, resume=resume, **kwargs).fit()


def read_run_config(path: Path) -> dict:
    path = Path(path)
    f = path / CONFIG
    if not path.is_dir() or not f.exists():
        raise UserError(f"{path} is not a run folder (no {CONFIG}): give the folder that `mmvae train` wrote")
    try:
        saved = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{f} is corrupt ({e}): the run folder cannot be used") from None
    if saved.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} was written by an incompatible mmvae (format {saved.get('format_version')}, "
                        f"this version reads {FORMAT_VERSION}): retrain it with this version")
    return saved


def _version() -> str:
    from .. import __version__

    return __version__

