"""The whole configuration of a run as one dataclass (resolved, saved as config.json in the run folder)."""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError

FORMAT_VERSION = 1


@dataclass
class Config:
    # what to train
    # The no-argument default must translate both ways within about a minute on 2 CPU cores, judged on
    # posterior *samples*: MoPoE on MNIST + label does (docs/defaults.md, docs/results/quality.md,
    # "Default run"); MVAE's label->image samples stay near 0.3 at any label weight that keeps
    # image->label, since its objective has no cross-reconstruction term.
    model: str = "mopoe"
    dataset: str = "mnist-label"
    data: dict[str, Any] = field(default_factory=dict)        # dataset options, e.g. data.modalities=5
    modalities: list[str] | None = None                       # train on these modalities only
    # optimisation
    epochs: int = 60                                          # the default run: 1,920 steps of mnist-label
    batch_size: int = 128
    lr: float = 1e-3
    amsgrad: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    grad_clip: float = 0.0                                    # 0: no clipping
    # model
    latent_dim: int = 20
    hidden: int = 400                                         # hidden units of the MLPs (docs/defaults.md)
    activation: str | None = None                             # relu | silu | gelu | ... of the default networks
    objective: str | None = None                              # elbo | iwae | dreg | dreg-authors (model default if None)
    k: int | None = None                                      # samples per expert (1 for elbo, 10 otherwise)
    kl: str | None = None                                     # analytic | mc (model default if None)
    beta: float = 1.0                                         # final KL weight
    warmup: float | None = None                               # epochs of linear KL warm-up (model default if None)
    posterior: str | None = None                              # normal | laplace (model default if None)
    prior: str | None = None                                  # None/standard (fixed) | learned | learned-loc-scale
    likelihood: dict[str, str] = field(default_factory=dict)  # per modality override
    scale: dict[str, Any] = field(default_factory=dict)       # per modality decoder scale (float or "learned")
    default_scale: float = 0.75
    weights: Any = None                                       # uniform | rescale | {modality: λ}
    subsample_k: int = 0                                      # MVAE: random extra subsets per step
    # partial observation (training rows only)
    paired_fraction: float = 1.0
    observed: str = "split"                                   # a modality name, or split
    # robustness and output
    max_rollbacks: int = 3
    max_steps: int = 0                                        # 0: no limit; stop (resumably) after this step
    time_limit: float = 0.0                                   # seconds; 0: no limit
    checkpoint_every: float = 60.0                            # seconds between checkpoints on disk (written at
                                                              # an epoch's end); 0: after every epoch
    device: str = "auto"
    amp: str = "auto"                                         # auto (bf16 autocast where the device runs bf16
                                                              # natively, else off) | off | bf16 (docs/defaults.md)
    compile: bool = False                                     # torch.compile the loss computation
    vectorise: Any = "auto"                                   # auto (CUDA only) | true | false: stacked experts
    grad_accum: int = 1                                       # micro-batches per step (per rank under torchrun)
    out: str | None = None
    log: str = "text"                                         # text | tensorboard (also RUN/tb/, mmvae[tensorboard])
    extra: dict[str, Any] = field(default_factory=dict)       # model-specific options (e.g. MEME's)
    network: dict[str, str] = field(default_factory=dict)     # per modality registered network (nets/registry.py)
    preset: str | None = None                                 # paper preset the run started from (`mmvae presets`)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Config":
        names = {f.name for f in fields(Config)}
        return Config(**{k: v for k, v in d.items() if k in names})


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text.startswith("[") and text.endswith("]"):   # [a, b] with bare words: a list of names
            return [w.strip().strip("'\"") for w in text[1:-1].split(",") if w.strip()]
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _coerce(name: str, value: Any, current: Any) -> Any:
    if isinstance(current, dict) and value is not None and not isinstance(value, dict):
        raise UserError(f"--set {name}: this option is set per key: use --set {name}.<key>=VALUE")
    if current is None or value is None or isinstance(current, (dict, list)):
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise UserError(f"--set {name}: expected true or false, got {value!r}")
    if isinstance(current, int) and isinstance(value, float):
        if not value.is_integer():  # a silently kept float would reach layer sizes and loop bounds
            raise UserError(f"--set {name}: expected a whole number, got {value!r}")
        return int(value)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            return type(current)(value) if not (isinstance(current, int) and isinstance(value, float)) else value
        except (TypeError, ValueError):
            raise UserError(f"--set {name}: expected a number, got {value!r}") from None
    if isinstance(current, str):
        return str(value)
    return value


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    """Apply ``key=value`` strings; ``key`` may be ``dictfield.subkey`` (e.g. ``weights.label=50``).

    A key that is not a field of Config goes to ``extra`` (model-specific options, e.g. MEME's).
    """
    names = {f.name: f for f in fields(Config)}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        key = key.strip()
        value = _parse_value(text.strip())
        head, _, sub = key.partition(".")
        if head in names and sub:
            current = getattr(cfg, head)
            if current is None:
                current = {}
            if not isinstance(current, dict):
                raise UserError(f"--set {key}: '{head}' is not a per-key option; use --set {head}=VALUE")
            current = dict(current)
            current[sub] = value
            setattr(cfg, head, current)
        elif head in names:
            setattr(cfg, head, _coerce(key, value, getattr(cfg, head)))
        else:
            cfg.extra = {**cfg.extra, key: value}
    return cfg
