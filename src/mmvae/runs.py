"""Run folders: load a trained model back with its config and data description."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Config
from .data.dataset import ModalitySpec
from .models.registry import build_model
from .train.checkpoint import BEST, WEIGHTS, load_weights
from .train.trainer import read_run_config


@dataclass
class Run:
    """A trained run: its folder, resolved config, modality specs and the model (in eval mode)."""

    path: Path
    config: Config
    specs: dict[str, ModalitySpec]
    model: torch.nn.Module
    info: dict

    def dataset(self):
        """The run's dataset splits, rebuilt from its config (same seed, same options)."""
        from .data.registry import load_dataset
        from .data.select import select_modalities

        splits = load_dataset(self.config.dataset, seed=self.config.seed, **self.config.data)
        return select_modalities(splits, self.config.modalities)


def load_run(path: str | Path, which: str = "last", device: str = "cpu") -> Run:
    """Load a run folder written by ``mmvae train``: ``which`` is ``last`` or ``best`` (validation)."""
    path = Path(path)
    saved = read_run_config(path)
    cfg = Config.from_dict(saved["config"])
    specs = {d["name"]: ModalitySpec.from_dict(d) for d in saved["modalities"]}
    model = build_model(specs, cfg)
    weights = path / (BEST if which == "best" and (path / BEST).exists() else WEIGHTS)
    load_weights(model, weights)
    model.to(device).eval()
    return Run(path, cfg, specs, model, saved)
