"""The trainer: Adam, KL warm-up, validation, checkpoints that resume exactly, a divergence guard,
data parallelism (torchrun), bf16 autocast and torch.compile as options.

Exact resume: the epoch's shuffling comes from a generator seeded by (seed, epoch) and every step's
Monte Carlo noise from a seed of (seed, step, piece, rollbacks) (``distributed.noise_seed``), so the
trajectory is a function of where training stands, not of what ran before in the process; a run
killed at any point and resumed from its last checkpoint reaches the same weights after the same
number of steps as one never interrupted.

Checkpoints: every epoch's end is kept in memory (``Trainer.good``, the rollback point). It goes to disk
(one kill-safe, checksummed commit: train/integrity.py) at the first epoch end at least
``checkpoint_every`` seconds after the last write (0: every epoch end), and always at step 0, at the
end of the run, when ``max_steps`` / ``time_limit`` cut it, after a rollback, before
:class:`TrainingDiverged`, and on Ctrl-C or SIGTERM (:class:`Terminated`). So a SIGKILL loses at most
``checkpoint_every`` seconds plus one epoch of training. The best validation weights are kept in memory
when validation improves and committed with the next checkpoint, after the state they belong to.
Where checkpoints are written never changes the trajectory: the writes only copy ``Trainer.good``.

Divergence: a non-finite loss, gradient or parameter restores the last good state (the last epoch end,
or the start), halves the learning rate, records the event in ``metrics.jsonl`` and goes on; after
``max_rollbacks`` it raises :class:`TrainingDiverged` naming where and the last checkpoint.
Checkpoints are only written from finite parameters and optimizer state. Each step's loss is checked
before its backward pass. Gradients are not read a second time per step (a norm over all of them was
3-4% of a step; with ``grad_clip`` the clipping norm is checked): Adam turns a non-finite gradient
element into a NaN parameter, which the next step's loss check sees (the event then names the step of
the gradient: the parameters are checked when a loss is non-finite), and the parameters and optimizer
state are checked before every snapshot, so before validation, samples and every checkpoint. The
rollback is the same as if the gradient had been caught at once (the same snapshot, learning rate and
noise seeds); only the one step after it is computed in vain.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import FORMAT_VERSION, Config
from ..data.dataset import DatasetSplits, validation_split
from ..data.partial import apply_partial_observation, drop_unobserved_rows
from ..data.registry import check_split_names, load_dataset, resolve_dataset_paths
from ..errors import UserError
from ..data.select import select_modalities
from ..models.registry import build_model, modalities_for
from ..progress import Progress as ProgressLine, duration
from . import distributed
from .checkpoint import (BEST, CONFIG, METRICS, STATE, WEIGHTS, default_run_dir, state_writer, weights_writer,
                         write_json)
from .checkpoint import read_run_config  # noqa: F401  (re-exported by mmvae.train)
from . import integrity, resume as resuming
from .run_folder import RunFolder
from .data_checks import check_training_data
from .options import AMP_DTYPES, check_run_options, pick_device, resolve_amp
from .tensorboard import check_log_option
from .schedule import kl_weight, training_stage

class TrainingDiverged(RuntimeError):
    """Non-finite loss or gradients persisted after the allowed rollbacks."""


class Terminated(KeyboardInterrupt):
    """SIGTERM while training (a scheduler's stop): like Ctrl-C, the last epoch end is saved first."""


def _now() -> float:
    """The clock of the checkpoint cadence (a function, so tests can move time)."""
    return time.monotonic()


@dataclass
class Progress:
    epoch: int = 0            # epochs completed
    step_in_epoch: int = 0    # steps done inside the current epoch
    global_step: int = 0
    best_val: float = math.inf
    rollbacks: int = 0
    sums: dict = field(default_factory=dict)  # running sums of the current epoch's logs (global on rank 0)


class LossModule(nn.Module):
    """``model.loss`` as ``forward``: the one call DDP and torch.compile wrap per micro-batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, beta: float):
        return self.model.loss(batch, beta)


class Trainer:
    """Trains ``cfg.model`` on ``cfg.dataset`` into the run folder ``cfg.out``."""

    def __init__(self, cfg: Config, splits: DatasetSplits | None = None, resume: bool = False,
                 model: torch.nn.Module | None = None, show_progress: bool | None = None):
        self.cfg = cfg
        self.resume = resume
        self.show_progress = show_progress
        self.dist = distributed.from_env()
        self.out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
        cfg.out = str(self.out)
        self.folder = RunFolder(self.out, resume, main=self.dist.is_main)   # created, locked, cleaned
        try:
            self._set_up(cfg, splits, model)
        except BaseException:
            self.folder.abandon()   # bad input leaves no half-made run folder (and never touches a run)
            raise

    def _set_up(self, cfg: Config, splits: DatasetSplits | None, model: torch.nn.Module | None) -> None:
        resolve_dataset_paths(cfg)
        self.overrides, self.limits, self._overrides_saved = {}, {}, False
        if self.resume:
            self._restore_config()
            cfg = self.cfg
        check_run_options(cfg)
        check_log_option(cfg.log)
        self.tb = None                      # TensorBoard view of metrics.jsonl (--set log=tensorboard)
        torch.manual_seed(cfg.seed)
        self.device = distributed.device_for(self.dist, pick_device(cfg.device))
        self.splits = splits or load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data)
        check_split_names(self.splits, f"dataset '{cfg.dataset}'")
        if self.resume:   # the data must still be the data the run was trained on
            from ..runs import check_data_matches_run

            check_data_matches_run(self.splits.specs, self.saved, self.out, cfg.dataset)
        self.splits = select_modalities(self.splits, modalities_for(cfg, self.splits.specs))
        train, self.val = validation_split(self.splits.train, cfg.val_fraction, cfg.seed)
        train = apply_partial_observation(train, cfg.paired_fraction, cfg.observed, cfg.seed)
        self.train_data = drop_unobserved_rows(train)
        if len(self.train_data) == 0:
            raise UserError("no training rows left after the validation split: use more data or --set val_fraction=0")
        self.model = (model or build_model(self.splits.specs, cfg)).to(self.device)
        check_training_data(self.model, self.splits, cfg)
        self.pieces = self.dist.world_size * int(cfg.grad_accum)
        if cfg.batch_size < self.pieces:
            raise UserError(f"--batch-size {cfg.batch_size} is smaller than ranks x grad_accum = {self.pieces}: "
                            f"every piece of a global batch needs a row")
        cfg.amp = resolve_amp(cfg.amp, self.device)   # config.json records the precision that ran
        self.amp_dtype = AMP_DTYPES[cfg.amp]
        self.optimizer = make_adam(self.model.parameters(), lr=cfg.lr, amsgrad=cfg.amsgrad)
        self.progress = Progress()
        self.unsaved = False        # self.good is newer than the checkpoint on disk
        self.best = None            # {"model", "progress"} of best weights not yet on disk
        self.saved_at = _now()
        self.steps_per_epoch = self.train_data.num_batches(cfg.batch_size)
        distributed.init(self.dist, self.device)
        self.loss_fn = self._wrap(LossModule(self.model))

    # ------------------------------------------------------------------------------ set-up
    def _wrap(self, module: nn.Module) -> nn.Module:
        """torch.compile (optional), then DistributedDataParallel under torchrun."""
        if self.cfg.compile:
            module.compile()  # in place: parameter names (and so checkpoints) are unchanged
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # A modality missing from every row of a rank's piece leaves its encoder without gradient
            # on that rank: DDP must then look for unused parameters (one graph traversal per step).
            partial = any(not bool(self.train_data.mask[m].all()) for m in self.train_data.modalities)
            # A model trained in stages leaves the parameters of the other stages without gradient.
            unused = partial or not hasattr(self.model, "fusion") or bool(getattr(self.model, "stage_epochs", ()))
            module = DistributedDataParallel(module, find_unused_parameters=unused)
        return module

    def _say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------------ run folder
    def _restore_config(self) -> None:
        """The run's saved settings, with the safe overrides this invocation gives (train/resume.py)."""
        from ..runs import read_run

        self.saved = read_run(self.out)
        saved_cfg = Config.from_dict(self.saved["config"])
        resolve_dataset_paths(saved_cfg)   # runs of older versions may hold a relative path
        self.cfg, self.overrides, self.limits = resuming.apply_overrides(saved_cfg, self.cfg, self.out)

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
            integrity.commit(self.out, {"observed_mask.pt": state_writer({"modalities": self.train_data.modalities,
                                                                          "mask": masks})})

    def _snapshot(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "torch_rng": torch.get_rng_state(),
            "pieces": self.pieces,
            "progress": copy.deepcopy(self.progress.__dict__),
        }

    def _restore(self, snap: dict) -> None:
        self.model.load_state_dict(snap["model"])
        # a copy: the optimizer adopts the tensors it is given and updates them in place, and ``snap``
        # (the rollback point, written to disk later) must not change
        self.optimizer.load_state_dict(_to_cpu(snap["optimizer"]))
        if "torch_rng" in snap:
            torch.set_rng_state(snap["torch_rng"])
        self.progress = Progress(**copy.deepcopy(snap["progress"]))

    def _checkpoint(self, save: bool = True) -> None:
        """Take the resumable state in memory (the rollback point ``self.good``) and, with ``save``,
        write it to disk; only ever called with finite parameters."""
        p = self.progress
        p.sums = distributed.sum_over_ranks(self.dist, p.sums, self.device)   # rank 0 keeps global sums
        snap = self._snapshot()
        if not self.dist.is_main:
            p.sums = {k: 0.0 for k in p.sums}
            snap["progress"]["sums"] = dict(p.sums)
        self.good = snap
        self.unsaved = True
        if save:
            self._save()

    def _save(self) -> None:
        """Write ``self.good`` (and best weights kept since the last write) to disk, unless it is there."""
        if not self.unsaved:
            return
        snap = self.good
        if self.dist.is_main:
            # The state is one file (weights, optimizer, progress); the weights export beside it records
            # its progress; all are committed with their checksums (train/integrity.py). The best weights
            # come last: renamed after the state they belong to, never before it.
            writers = {STATE: state_writer(snap), WEIGHTS: weights_writer(snap["model"], snap["progress"])}
            if self.best is not None:
                writers[BEST] = weights_writer(self.best["model"], self.best["progress"])
            integrity.commit(self.out, writers)
            if self.overrides and not self._overrides_saved:
                self._save_overrides()    # with the first checkpoint that used them
        self.best, self.unsaved, self.saved_at = None, False, _now()

    def _save_due(self) -> bool:
        every = float(self.cfg.checkpoint_every)
        return every <= 0 or _now() - self.saved_at >= every

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        if self.tb is not None:
            self.tb.record(record)
        try:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise UserError(f"cannot write {self.out / METRICS} ({e.strerror}): free disk space or fix permissions") from None

    def _load_for_resume(self) -> None:
        # verified, or the most recent intact fallback (train/resume.py)
        point = resuming.choose_resume_point(self.out, lambda t: self._say(f"note: {t}"), self.dist.is_main)
        state = point.state
        if state is not None and state.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.out} was written by an incompatible mmvae (state format "
                            f"{state.get('format_version')}, this version reads {FORMAT_VERSION}): start a new run")
        source = self.out / point.source
        try:
            if state is not None:
                self._restore(state)
            else:
                self.model.load_state_dict(point.weights)
                self.progress = Progress(**{k: v for k, v in point.progress.items() if k in Progress.__dataclass_fields__})
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{source} does not fit this model ({first}): was the run folder mixed up?") from None
        if "lr" in self.overrides or state is None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.lr
        if state is not None and state.get("pieces", self.pieces) != self.pieces:
            self._say(f"note: this run was cut into {state['pieces']} pieces per batch (ranks x grad_accum), now "
                      f"{self.pieces}: training continues, but not on the exact trajectory of the first slice")
        if not self.dist.is_main:
            self.progress.sums = {k: 0.0 for k in self.progress.sums}
        self.good = self._snapshot()
        if self.dist.is_main:
            for note in point.notes:
                self._say(f"note: {note}")
            resuming.repair_metrics(self.out / METRICS, self.progress.global_step, lambda t: self._say(f"note: {t}"))
            p = self.progress
            event = {"event": "resume", "epoch": p.epoch, "step": p.global_step, "from": point.source}
            if self.overrides:
                event["overrides"] = self.overrides
                self._say("note: --resume overrides " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in
                                                                 self.overrides.items()))
            event.update(self.limits)
            self._log(event)
            if point.rewrite_weights:
                integrity.commit(self.out, {WEIGHTS: weights_writer(self.model, self.good["progress"])})
        p = self.progress
        if self.dist.is_main:   # on stdout, like "run folder:": stderr stays one line if the run then fails
            print(f"resuming {self.out} from epoch {p.epoch + 1}/{self.cfg.epochs}, step {p.step_in_epoch}/"
                  f"{self.steps_per_epoch} of that epoch (global step {p.global_step})"
                  if p.epoch < self.cfg.epochs else
                  f"{self.out} has already trained its {self.cfg.epochs} epochs (global step {p.global_step}): "
                  f"raise --epochs to train longer", flush=True)

    def _save_overrides(self) -> None:
        """config.json keeps the settings the run continues with (later slices continue with them too)."""
        saved = dict(self.saved)
        config = dict(saved["config"])
        for key in self.overrides:
            head = key.split(".")[0]
            config[head] = getattr(self.cfg, head)
        saved["config"] = config
        write_json(self.out / CONFIG, saved)
        self._overrides_saved = True

    # --------------------------------------------------------------------------------- training
    def fit(self) -> Path:
        done = False
        try:
            with self._sigterm_raises():
                out = self._fit()
            done = True
            return out
        except BaseException:
            self.folder.abandon()   # removes the folder only if this call created it and it is not a run
            raise
        finally:
            self.folder.close()
            if self.tb is not None:
                self.tb.close()
            if self.dist.active:
                # DDP's reducer holds the process group; if it dropped the last reference (as the trainer
                # is freed), gloo's destructor would join its worker thread with the GIL held, which can
                # hang. Drop DDP first, so destroy_process_group releases the group itself.
                self.loss_fn = None
                gc.collect()
            distributed.shutdown(self.dist, wait_for_all=done)

    def _fit(self) -> Path:
        cfg = self.cfg
        if self.resume:
            self._load_for_resume()
            if cfg.max_steps and self.progress.global_step >= cfg.max_steps:
                self._say(f"the run is already at step {self.progress.global_step} (--max-steps {cfg.max_steps} "
                          f"counts all steps of the run): nothing to do")
                return self.out
        else:
            # A checkpoint of step 0 first and config.json (the mark of a run folder) last: a run killed
            # at any moment is either not a run yet, or has a checkpoint to resume from.
            self._checkpoint()
            if self.dist.is_main:
                self._write_config()
        if cfg.log == "tensorboard" and self.dist.is_main:
            from .tensorboard import TensorBoardLog

            self.tb = TensorBoardLog(self.out)
        self.started = time.time()
        try:
            while self.progress.epoch < cfg.epochs:
                if not self._run_epoch():
                    return self.out
            self._save()
        except KeyboardInterrupt:   # Ctrl-C or SIGTERM (Terminated): keep the last epoch end
            self._save_on_interrupt()
            raise
        if self.dist.is_main:
            self._finish()
        return self.out

    def _save_on_interrupt(self) -> None:
        if not hasattr(self, "good"):
            return
        self._save()
        g = self.good["progress"]
        where = f"end of epoch {g['epoch']}" if g["step_in_epoch"] == 0 else \
            f"epoch {g['epoch'] + 1}, step {g['step_in_epoch']}"
        self._say(f"saved the state of step {g['global_step']} ({where}); continue with: "
                  f"mmvae train --resume --out {self.out}")

    @contextlib.contextmanager
    def _sigterm_raises(self):
        """While training, SIGTERM raises :class:`Terminated` (so the last epoch end is saved), unless
        the process already handles SIGTERM or this is not the main thread."""
        if threading.current_thread() is not threading.main_thread() or \
                signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            yield
            return

        def terminated(signum, frame):
            raise Terminated("SIGTERM")

        signal.signal(signal.SIGTERM, terminated)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _global_batches(self, epoch: int, start: int):
        """Row indices of the epoch's global batches from ``start`` on (identical on every rank)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_data), generator=g)
        b = self.cfg.batch_size
        for i in range(start * b, len(order), b):
            yield order[i:i + b]

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _step(self, index: torch.Tensor, beta: float) -> tuple[str | None, bool]:
        """One optimizer step on a global batch: this rank's pieces, weighted by their share of the rows.

        Returns (what went non-finite or None, whether the time limit is reached on some rank); "previous
        gradient": the loss is non-finite because the previous step applied a non-finite gradient."""
        cfg, p, env = self.cfg, self.progress, self.dist
        accum = int(cfg.grad_accum)
        pieces = distributed.shard_pieces(index, self.pieces)
        total = len(index)
        self.optimizer.zero_grad(set_to_none=True)
        step_sums: dict[str, float] = {}
        over = False
        for j in range(accum):
            piece = env.rank * accum + j
            rows = pieces[piece]
            n = len(rows)
            # A rank whose piece is empty still joins the gradient all-reduce, with weight 0.
            batch = self.train_data.batch(rows if n else index[:1]).to(self.device)
            self._seed_noise(distributed.noise_seed(cfg.seed, p.global_step, piece, p.rollbacks))
            sync = j == accum - 1 or not env.active
            with (contextlib.nullcontext() if sync else self.loss_fn.no_sync()):
                with self._autocast():
                    loss, logs = self.loss_fn(batch, beta)
                loss = loss.float()
                over = bool(cfg.time_limit) and time.time() - self.started >= cfg.time_limit
                bad, over = distributed.agree(env, [not bool(torch.isfinite(loss)), over], self.device)
                if bad:
                    # Non-finite parameters here come from the last step's gradient (Adam turns a
                    # non-finite gradient element into a NaN parameter): that step is named.
                    return ("loss" if self._state_finite() else "previous gradient"), over
                (loss * (n * env.world_size / total)).backward()
            step_sums["loss"] = step_sums.get("loss", 0.0) + float(loss.detach()) * n
            for k, v in logs.items():
                step_sums[k] = step_sums.get(k, 0.0) + float(v) * n
            step_sums["rows"] = step_sums.get("rows", 0) + n
        if cfg.grad_clip and not bool(torch.isfinite(self._gradient_norm())):   # the norm is computed anyway
            return "gradient", over
        # Without clipping no pass over the gradients here (it was ~3-4% of a step): a non-finite gradient
        # element makes Adam's update of its parameter NaN (NaN or inf/inf), and non-finite parameters are
        # caught before anything reads them beyond the next forward: by the next step's loss check, or
        # by the check before every snapshot, validation and checkpoint (``_state_finite``).
        self.optimizer.step()
        for k, v in step_sums.items():
            p.sums[k] = p.sums.get(k, 0.0) + v
        p.global_step += 1
        p.step_in_epoch += 1
        return None, over

    def _seed_noise(self, seed: int) -> None:
        """Seed this step's Monte Carlo noise. ``torch.manual_seed`` would also seed every accelerator
        generator (about 2 ms a step on CPU); only the generators this run draws from are seeded."""
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)

    def _gradient_norm(self) -> torch.Tensor:
        """Clip the gradients to ``grad_clip`` (set) and return their total norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)

    def _run_epoch(self) -> bool:
        """One epoch from wherever progress stands; False if cut by max_steps / time_limit."""
        cfg, p = self.cfg, self.progress
        epoch = p.epoch
        stop = False
        staged = self._enter_stage(epoch)
        self.model.train()
        bar = self._progress_line(epoch)
        t0 = time.time()
        for index in self._global_batches(epoch, p.step_in_epoch):
            beta = kl_weight(p.global_step, self.steps_per_epoch, cfg.warmup, cfg.beta)
            what, over = self._step(index, beta)
            if what is not None:
                bar.close()
                if what == "previous gradient":
                    self._diverged(epoch, "gradient", back=1)
                else:
                    self._diverged(epoch, what)
                return True  # the caller's loop continues from the restored position
            bar.update(1)
            if (cfg.max_steps and p.global_step >= cfg.max_steps) or over:
                if p.step_in_epoch >= self.steps_per_epoch:   # cut on the epoch's end: finish the epoch first
                    stop = True
                    break
                bar.close()
                if not self._state_finite():
                    self._diverged(epoch, "parameter")
                    return True
                self._checkpoint()
                self._stopped()
                return False
        bar.close()
        if not self._state_finite():
            self._diverged(epoch, "parameter")
            return True
        sums = distributed.sum_over_ranks(self.dist, p.sums, self.device)
        rows = max(sums.pop("rows", 1), 1)
        train_logs = {f"train_{k}": v / rows for k, v in sums.items()}
        val = self.validate()
        p.epoch += 1
        p.step_in_epoch = 0
        p.sums = {}
        record = {"epoch": p.epoch, "step": p.global_step, **train_logs, **val,
                  "beta": kl_weight(p.global_step, self.steps_per_epoch, cfg.warmup, cfg.beta),
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 3)}
        if staged is not None:
            record["stage"] = staged
        val_loss = val.get("val_loss", train_logs.get("train_loss", math.inf))
        improved = val_loss < p.best_val
        if improved:
            p.best_val = val_loss
        self._log(record)
        self._checkpoint(save=False)
        if improved:    # the weights of this epoch end, written with the next checkpoint
            self.best = {"model": self.good["model"], "progress": self.good["progress"]}
        if self._save_due() or stop or p.epoch >= cfg.epochs:    # due, or the run stops here
            self._save()
        if self.tb is not None:
            self.tb.samples(self.model, self.splits.test, p.global_step, cfg.seed)
        left = cfg.epochs - p.epoch
        self._say(f"epoch {p.epoch}/{cfg.epochs}  train loss {train_logs.get('train_loss', float('nan')):.3f}"
                  + (f"  val loss {val['val_loss']:.3f}" if "val_loss" in val else "")
                  + f"  ({record['seconds']:.1f}s" + (f", ETA {duration(left * record['seconds'])})" if left else ")"))
        if stop and p.epoch < cfg.epochs:
            self._stopped()
            return False
        return True

    def _enter_stage(self, epoch: int) -> int | None:
        """Tell a model trained in stages (``stage_epochs``, train/schedule.py) the stage of this epoch; None
        for other models. The best validation loss restarts with each stage: the stages' losses measure
        different things, and the best weights must come from the last stage."""
        if not getattr(self.model, "stage_epochs", ()):
            return None
        stage = training_stage(self.model, epoch)
        self.model.stage = stage
        p = self.progress
        if p.step_in_epoch == 0 and epoch > 0 and stage != training_stage(self.model, epoch - 1):
            p.best_val = math.inf
        return stage

    def _stopped(self) -> None:
        """A run cut by max_steps / time_limit (after its checkpoint): say how to go on, draw samples.png."""
        p = self.progress
        where = f"end of epoch {p.epoch}" if p.step_in_epoch == 0 else f"epoch {p.epoch + 1}, step {p.step_in_epoch}"
        self._say(f"stopped at step {p.global_step} ({where}); "
                  f"continue with: mmvae train --resume --out {self.out}")
        if self.dist.is_main:
            self._finish()

    def _progress_line(self, epoch: int) -> ProgressLine:
        """The live line inside an epoch (mmvae.progress): steps, rate, the epoch's and the run's ETA."""
        p, cfg = self.progress, self.cfg

        def postfix() -> dict:
            out = {}
            if p.sums.get("rows"):
                out["loss"] = f"{p.sums['loss'] / p.sums['rows']:.2f}"
            out["beta"] = f"{kl_weight(p.global_step, self.steps_per_epoch, cfg.warmup, cfg.beta):.2f}"
            left = cfg.epochs * self.steps_per_epoch - p.global_step
            if cfg.max_steps:
                left = min(left, cfg.max_steps - p.global_step)
            if bar.rate > 0 and left > self.steps_per_epoch - p.step_in_epoch:
                out["run ETA"] = duration(left / bar.rate)
            return out

        bar = ProgressLine(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", unit="steps",
                           initial=p.step_in_epoch, postfix=postfix,
                           enabled=self.show_progress if self.dist.is_main else False)
        return bar

    def _state_finite(self) -> bool:
        """Whether the model's floating tensors and the optimizer's state are all finite (on every rank):
        checked before every snapshot (so before validation and every checkpoint) and when a loss is
        non-finite."""
        tensors = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        tensors += [v for state in self.optimizer.state.values() for v in state.values()
                    if isinstance(v, torch.Tensor) and v.is_floating_point()]
        ok = all_finite(tensors)
        return not distributed.agree(self.dist, [not ok], self.device)[0]

    def _diverged(self, epoch: int, what: str, back: int = 0) -> None:
        """Roll back (or stop) after a non-finite ``what`` at the coming step (``back`` steps before it)."""
        p = self.progress
        step, step_in_epoch = p.global_step + 1 - back, p.step_in_epoch + 1 - back
        where = f"epoch {epoch + 1}, step {step_in_epoch} (global step {step})"
        good = self.good["progress"]
        self._save()    # the rollback point (and any best weights) on disk before going on, or stopping
        if p.rollbacks >= self.cfg.max_rollbacks:
            self._log({"event": "diverged", "epoch": epoch + 1, "step": step, "what": what,
                       "rollbacks": p.rollbacks})
            last = self.out / WEIGHTS
            hint = (f"last good checkpoint: {last} (epoch {good['epoch']}, global step {good['global_step']})"
                    if last.exists() else "no checkpoint was written yet")
            raise TrainingDiverged(f"training diverged: non-finite {what} at {where} after {p.rollbacks} "
                                   f"rollback(s); {hint}. Lower --lr or set grad_clip (--set grad_clip=10).")
        rollbacks = p.rollbacks + 1
        # Halve the rate in force now (already halved by earlier rollbacks to the same snapshot).
        rates = [group["lr"] for group in self.optimizer.param_groups]
        self._restore(self.good)
        self.progress.rollbacks = rollbacks
        for group, lr in zip(self.optimizer.param_groups, rates):
            group["lr"] = 0.5 * lr
        lr = self.optimizer.param_groups[0]["lr"]
        self._log({"event": "rollback", "epoch": epoch + 1, "step": step, "what": what,
                   "resumed_from_step": self.progress.global_step, "lr": lr, "rollbacks": rollbacks})
        self._say(f"non-finite {what} at {where}: rolled back to the last good state (global step "
                  f"{self.progress.global_step}), learning rate halved to {lr:g} ({rollbacks}/{self.cfg.max_rollbacks})")

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean validation loss; under torchrun each rank scores its piece of every batch, summed over ranks."""
        if len(self.val) == 0:
            return {}
        self.model.eval()
        total, rows = 0.0, 0
        env = self.dist
        with torch.random.fork_rng(devices=[]):
            for b, batch_rows in enumerate(torch.arange(len(self.val)).split(max(self.cfg.batch_size, 256))):
                mine = distributed.shard_pieces(batch_rows, env.world_size)[env.rank]
                if len(mine) == 0:
                    continue
                torch.manual_seed(distributed.noise_seed(self.cfg.seed + 1, b, env.rank, 0))
                with self._autocast():
                    loss, _ = self.model.loss(self.val.batch(mine).to(self.device), self.cfg.beta)
                total += float(loss) * len(mine)
                rows += len(mine)
        self.model.train()
        sums = distributed.sum_over_ranks(self.dist, {"total": total, "rows": rows}, self.device)
        return {"val_loss": sums["total"] / max(sums["rows"], 1)}

    def _finish(self) -> None:
        """samples.png, for models that translate and generate (a user's bare nn.Module may not)."""
        from ..evaluation.pictures import sample_grid

        if not all(callable(getattr(self.model, f, None)) for f in ("translate", "generate")) or len(self.splits.test) == 0:
            self._say("samples.png not drawn: the model has no translate/generate, or there are no test rows")
            return
        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            sample_grid(self.model, self.splits.test, self.out / "samples.png")


def make_adam(params, **kwargs) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass over all parameters instead of about ten element-wise
    passes per tensor: 3-4x faster steps on CPU, a third of a small MLP model's training step,
    docs/results/speed.md) wherever every parameter is a floating tensor on a CPU or CUDA device; the
    same update rule (Kingma & Ba 2015) as the default implementation."""
    params = list(params)
    fusable = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fusable:
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a build without the fused kernel for this device
            pass
    return torch.optim.Adam(params, **kwargs)


def all_finite(tensors) -> bool:
    """Whether every element of every tensor is finite. One sum per tensor (read once, nothing allocated
    per element): a sum is finite only if every element is; a sum that overflows on finite elements falls
    back to the exact elementwise test, so the answer is exact either way."""
    tensors = [t.detach() for t in tensors if t.numel()]
    sums: dict[torch.device, list[torch.Tensor]] = {}   # per device: Adam's step counts may sit on the CPU
    for t in tensors:
        sums.setdefault(t.device, []).append(t.sum(dtype=torch.float32))
    if all(bool(torch.isfinite(torch.stack(s).sum())) for s in sums.values()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _to_cpu(obj):
    """Optimizer state on the CPU, so snapshots do not hold a second copy in GPU memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def train(cfg: Config, splits: DatasetSplits | None = None, resume: bool = False, **kwargs) -> Path:
    """Train and return the run folder."""
    return Trainer(cfg, splits=splits, resume=resume, **kwargs).fit()


def _version() -> str:
    from .. import __version__

    return __version__
