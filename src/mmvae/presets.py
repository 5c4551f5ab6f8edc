"""Paper presets: each paper's published training setting as a named bundle of config values.

``mmvae train --preset NAME`` starts from the preset instead of the library's defaults (which are chosen
for learning well on a CPU budget, not for reproducing papers); explicit flags and ``--set`` override it,
and the run's config.json records ``preset``. Values come from the papers and their official code
(repository named per preset); what the library cannot express exactly is listed in docs/presets.md.
A preset asks for the real data (full MNIST, SVHN, CUB): without it training stops with exit 2 and the
download hint; ``--dataset`` trains on other data with a printed note (the preset's data options are
then dropped, its model settings kept).
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from .config import Config
from .errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    paper: str
    code: str                                   # official repository the values were read from
    summary: str
    settings: dict[str, Any] = field(default_factory=dict)   # Config keys (model, dataset, data, ...)


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


register_preset(Preset(
    "mmvae-mnist-svhn", "Shi, Siddharth, Paige & Torr 2019 (MMVAE), MNIST-SVHN", "iffsid/mmvae",
    "Laplace prior/posterior/likelihood, learned prior scale, decoder scale 0.75, MNIST likelihood x 3072/784, "
    "the authors' DReG K=30 (looser; dreg-authors), Adam 1e-3 amsgrad, latent 20, batch 128, 30 epochs, dm=30 pairs",
    dict(model="mmvae", dataset="mnist-svhn", data=dict(dm=30, max_d=10_000),
         epochs=30, batch_size=128, lr=1e-3, amsgrad=True, latent_dim=20, val_fraction=0.0,
         objective="dreg-authors", k=30, kl="mc", beta=1.0, warmup=0.0, posterior="laplace", prior="learned",
         likelihood=dict(mnist="laplace", svhn="laplace"), scale={}, default_scale=0.75, weights="rescale",
         hidden=512, network=dict(mnist="mnist-mlp", svhn="conv")),
))
register_preset(Preset(
    "mvae-mnist-label", "Wu & Goodman 2018 (MVAE), MNIST image + label", "mhw32/multimodal-vae-public",
    "PoE with prior expert, joint + image + label ELBOs, lambda_label 50, KL annealed over 200 epochs, "
    "latent 64, batch 100, Adam 1e-3, 500 epochs, Swish MLPs of 512, Bernoulli image, full MNIST",
    dict(model="mvae", dataset="mnist-label", data=dict(source="full"),
         epochs=500, batch_size=100, lr=1e-3, amsgrad=False, latent_dim=64, hidden=512, val_fraction=0.0,
         objective="elbo", k=1, kl="analytic", beta=1.0, warmup=200.0, posterior="normal", subsample_k=0,
         likelihood=dict(image="bernoulli", label="categorical"), weights=dict(image=1.0, label=50.0),
         network=dict(image="mvae-mlp", label="mvae-mlp")),
))
register_preset(Preset(
    "mopoe-polymnist", "Sutter, Daunhawer & Vogt 2021 (MoPoE), PolyMNIST", "thomassutter/MoPoE",
    "5 modalities from full MNIST, Gaussian posteriors, Laplace likelihood scale 0.75, beta 2.5, latent 512, "
    "Adam 5e-4, batch 256, 300 epochs",
    dict(model="mopoe", dataset="polymnist", data=dict(source="full", modalities=5),
         epochs=300, batch_size=256, lr=5e-4, amsgrad=False, latent_dim=512, val_fraction=0.0,
         objective="elbo", k=1, kl="analytic", beta=2.5, warmup=0.0, posterior="normal",
         likelihood={f"m{i}": "laplace" for i in range(5)}, scale={}, default_scale=0.75, weights="uniform",
         hidden=512, network={f"m{i}": "conv" for i in range(5)}),
))
register_preset(Preset(
    "meme-mnist-svhn", "Joy, Shi, Torr, Rainforth, Schmon & Siddharth 2022 (MEME), MNIST-SVHN", "thwjoy/meme",
    "one-to-one pairs (dm=1), Gaussian posteriors, Laplace likelihood scale 1.0, classifier weight 10, "
    "K=10, 128 pseudo-samples, directions summed, latent 64, Adam 5e-4, batch 128, 500 epochs; vary "
    "paired_fraction for Tables 3/4",
    dict(model="meme", dataset="mnist-svhn", data=dict(dm=1, max_d=10_000),
         epochs=500, batch_size=128, lr=5e-4, amsgrad=False, latent_dim=64, val_fraction=0.0,
         objective="meme", k=10, kl="analytic", beta=1.0, warmup=0.0, posterior="normal",
         likelihood=dict(mnist="laplace", svhn="laplace"), scale={}, default_scale=1.0, weights="uniform",
         hidden=512, network=dict(mnist="mnist-mlp", svhn="conv"), classifier_weight=10.0, pseudo_samples=128, direction_weight="sum"),
))
register_preset(Preset(
    "meme-cub", "Joy, Shi, Torr, Rainforth, Schmon & Siddharth 2022 (MEME), CUB image features + captions",
    "thwjoy/meme (MNIST-SVHN code only; see docs/presets.md)",
    "MMVAE's CUB release (ResNet-101 features, 32-word captions), Gaussian posteriors, Laplace feature "
    "likelihood scale 1.0, Categorical words, classifier weight 10, K=10, latent 64, Adam 5e-4, batch 128",
    dict(model="meme", dataset="cub", data=dict(max_len=32, min_count=4),
         epochs=500, batch_size=128, lr=5e-4, amsgrad=False, latent_dim=64, val_fraction=0.0,
         objective="meme", k=10, kl="analytic", beta=1.0, warmup=0.0, posterior="normal",
         likelihood=dict(image="laplace", text="categorical"), scale={}, default_scale=1.0, weights="uniform",
         hidden=512, classifier_weight=10.0, pseudo_samples=128, direction_weight="sum"),
))


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': use one of {', '.join(PRESETS)} (`mmvae presets` lists them)")
    return PRESETS[name]


def apply_preset(cfg: Config, name: str, dataset: str | None = None) -> Config:
    """Write preset ``name`` into ``cfg`` (before explicit flags and ``--set``, which override it).

    Keys that are not Config fields go to ``cfg.extra`` like ``--set`` does (model options such as MEME's
    ``classifier_weight``; ``prior`` while the config has no such field, so that the model's build names it).
    ``dataset``: the user's ``--dataset``; another dataset than the preset's drops the preset's data options."""
    preset = get_preset(name)
    names = {f.name for f in fields(Config)}
    extra = dict(cfg.extra)
    for key, value in copy.deepcopy(preset.settings).items():
        if key in names:
            setattr(cfg, key, value)
        else:
            extra[key] = value
    cfg.extra = extra
    cfg.preset = name
    if "amp" not in preset.settings:   # the papers trained in float32: a preset does too (--set amp= overrides)
        cfg.amp = "off"
    if dataset is not None and dataset != preset.settings["dataset"]:
        dropped = ", ".join(f"{k}={v}" for k, v in preset.settings.get("data", {}).items()) or "none"
        keyed = sorted({m for k, v in preset.settings.items() if k not in ("data", "network") and isinstance(v, dict)
                        for m in v})
        print(f"note: preset '{name}' is the published setting for dataset '{preset.settings['dataset']}'; training "
              f"on '{dataset}' instead: the preset's data options are dropped ({dropped}) and the data's own "
              f"networks are used"
              + (f"; its per-modality settings name {', '.join(keyed)} (replace them with --set if the new data's "
                 f"modalities differ)" if keyed else ""), file=sys.stderr)
        cfg.data = {}
        cfg.network = {}   # the paper's networks name its modalities; other data keeps its own
    return cfg


def describe(name: str | None = None) -> str:
    """`mmvae presets`: one line per preset, or one preset's settings as --set lines."""
    if name is None:
        width = max(map(len, PRESETS))
        return "\n".join(f"{p.name:{width}s}  {p.settings['dataset']:11s}  {p.paper}\n{'':{width}s}  {p.summary}"
                         for p in PRESETS.values())
    p = get_preset(name)
    lines = [f"{p.name}: {p.paper} (values from the paper and {p.code}; deviations: docs/presets.md)"]
    for key, value in p.settings.items():
        if isinstance(value, dict) and value:
            lines += [f"  {key}.{k}={v}" for k, v in value.items()]
        elif not isinstance(value, dict):
            lines.append(f"  {key}={value}")
    return "\n".join(lines)
