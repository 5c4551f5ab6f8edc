"""``--set log=tensorboard``: every epoch's scalars and sample grid in RUN/tb/ for TensorBoard.

Needs the optional extra (``pip install 'mmvae[tensorboard]'``); events are written by torch's own
``SummaryWriter``. Per epoch: each number of the epoch's metrics.jsonl record (train_*, val_loss, β,
lr, seconds) under ``epoch/<key>`` at the global step, rollbacks under ``events/rollback``, and the
sample grid of ``samples.png`` (inputs, translations, prior samples) as the image ``samples``.
metrics.jsonl stays the record of the run; the event files are a view of it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..errors import UserError

LOGGERS = ("text", "tensorboard")
FOLDER = "tb"


def check_log_option(value) -> str:
    name = str(value).lower()
    if name not in LOGGERS:
        raise UserError(f"log={value!r} is unknown: use {' or '.join(LOGGERS)}")
    return name


class TensorBoardLog:
    """Writes epoch records and sample grids into ``run/tb`` (one writer per training invocation)."""

    def __init__(self, run: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("log=tensorboard needs the tensorboard package: pip install 'mmvae[tensorboard]' "
                            "(or pip install tensorboard), or drop --set log=tensorboard") from None
        self.dir = Path(run) / FOLDER
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def record(self, rec: dict) -> None:
        step = int(rec.get("step", 0))
        if "event" in rec:
            self.writer.add_scalar(f"events/{rec['event']}", float(rec.get("lr", 0.0)), step)
        else:
            for key, value in rec.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step",):
                    self.writer.add_scalar(f"epoch/{key}", float(value), step)
        self.writer.flush()

    @torch.no_grad()
    def samples(self, model, data, step: int, seed: int) -> None:
        """The sample grid of samples.png, drawn now, as an image (HWC, RGB)."""
        import matplotlib.image

        from ..evaluation.pictures import sample_grid

        was_training = model.training
        model.eval()
        with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            png = sample_grid(model, data, Path(tmp) / "samples.png")
            img = matplotlib.image.imread(str(png))[..., :3]
        model.train(was_training)
        self.writer.add_image("samples", img, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
