"""Training: trainer, KL warm-up schedule, atomic checkpoints, divergence guard."""
from .trainer import Trainer, TrainingDiverged, read_run_config, train

__all__ = ["Trainer", "TrainingDiverged", "read_run_config", "train"]
