"""Models by name. A fusion-based model is one table entry: fusion + default objective + defaults.

New models register a builder ``build(specs, cfg) -> nn.Module`` (the module offers ``loss(batch, beta)``
and the user API of :class:`MultimodalVAE`); MEME, which has no fused posterior, registers its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from ..config import Config
from ..distributions.prior import prior_kind
from ..errors import UserError
from ..fusion.fusions import FUSIONS
from ..nets.activations import activation_class
from ..nets.registry import resolve_networks, with_networks
from ..objectives.estimators import make_estimator
from ..objectives.subsampled import SubsampledObjective
from .multimodal import MultimodalVAE


@dataclass
class ModelEntry:
    name: str
    paper: str
    description: str
    build: Callable[[dict, Config], Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    min_modalities: int = 1
    max_modalities: int | None = None
    options: tuple[str, ...] = ()   # model-specific --set keys accepted into Config.extra
    complete_rows: bool = False     # the model cannot use masks: paired_fraction < 1 is refused at build time


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, paper: str, description: str, defaults: dict | None = None,
                   min_modalities: int = 1, max_modalities: int | None = None, options: tuple[str, ...] = (),
                   complete_rows: bool = False):
    def deco(build):
        MODELS[name] = ModelEntry(name, paper, description, build, dict(defaults or {}), min_modalities,
                                  max_modalities, options, complete_rows)
        return build

    return deco


def resolve(cfg: Config, entry: ModelEntry) -> Config:
    """Fill the options left as None with the model's defaults (the resolved config is what is saved)."""
    for key, value in entry.defaults.items():
        if getattr(cfg, key, None) is None:
            setattr(cfg, key, value)
    if cfg.k is None:
        cfg.k = 1 if cfg.objective == "elbo" else 10
    if cfg.warmup is None:
        cfg.warmup = 0.0
    return cfg


def model_option(cfg: Config, key: str, default, kind, check, rule: str):
    """A model-specific ``--set key=value`` (``cfg.extra``) converted by ``kind`` and checked; UserError
    naming the option and the rule otherwise."""
    value = cfg.extra.get(key, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"--set {key}: expected {rule}, got {value!r}") from None
    if not check(value):
        raise UserError(f"--set {key}: expected {rule}, got {value!r}")
    return value


def fusion_model(fusion: str, stratified: bool, subsample: bool = False, objective: Callable | None = None,
                 **fusion_kwargs):
    """A builder for MultimodalVAE with the named fusion. ``objective(cfg)``, when given, makes the model's
    own loss (MVTCAE, mmJSD, ...) in place of the estimator named by ``cfg.objective``."""

    def build(specs, cfg: Config, encoders=None, decoders=None) -> MultimodalVAE:
        if fusion in ("poe", "mopoe") and cfg.posterior != "normal":
            # checked here, not at the first loss: products of experts have a closed form for Gaussians only
            raise UserError(f"model '{cfg.model}' multiplies Gaussian experts: posterior '{cfg.posterior}' "
                            f"does not fit; use --set posterior=normal")
        try:
            estimator = make_estimator(cfg.objective, cfg.k, cfg.kl)
            cfg.prior = prior_kind(cfg.prior)           # the resolved name is what config.json keeps
        except ValueError as e:
            raise UserError(str(e)) from None
        if objective is not None:
            loss = objective(cfg)
        else:
            loss = SubsampledObjective(estimator, cfg.subsample_k) if subsample else estimator
        fuse = partial(FUSIONS[fusion], **fusion_kwargs) if fusion_kwargs else FUSIONS[fusion]
        try:
            return MultimodalVAE(specs, cfg.latent_dim, fuse, loss, posterior=cfg.posterior, prior=cfg.prior,
                                 likelihoods=cfg.likelihood, scales=cfg.scale, default_scale=cfg.default_scale,
                                 weights=cfg.weights, hidden=cfg.hidden, stratified=stratified, beta=cfg.beta,
                                 encoders=encoders, decoders=decoders, vectorise=cfg.vectorise,
                                 activation=cfg.activation)
        except ValueError as e:
            raise UserError(str(e)) from None

    return build


# Defaults per model, chosen by bench/quality.py against hand-written references at equal wall time
# (docs/defaults.md): Gaussian posteriors and uniform λ for every model; the papers' settings (MMVAE's
# Laplace posteriors and likelihood rescaling, MVAE's λ_label) are the presets (docs/presets.md).
register_model("vae", "Kingma & Welling 2014; IWAE: Burda et al. 2016; DReG: Tucker et al. 2019",
               "plain VAE on one modality (objective elbo | iwae | dreg)",
               dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
               max_modalities=1)(fusion_model("poe", stratified=False, prior_expert=False))
register_model("mvae", "Wu & Goodman 2018, Multimodal Generative Models for Scalable Weakly-Supervised Learning",
               "product of experts with a prior expert; subsampled ELBO (joint + unimodal + k random subsets)",
               dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform", warmup=2.0),
               min_modalities=2)(fusion_model("poe", stratified=False, subsample=True))
register_model("mmvae", "Shi, Siddharth, Paige & Torr 2019, Variational Mixture-of-Experts Autoencoders",
               "mixture of experts; stratified objective elbo | iwae | dreg | dreg-authors",
               dict(objective="elbo", kl="mc", posterior="normal", weights="uniform"),
               min_modalities=2)(fusion_model("moe", stratified=True))
register_model("mopoe", "Sutter, Daunhawer & Vogt 2021, Generalized Multimodal ELBO",
               "mixture of products of experts over all non-empty subsets",
               dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
               min_modalities=2)(fusion_model("mopoe", stratified=False))


def modalities_for(cfg: Config, specs: dict) -> list[str] | None:
    """The modalities a run uses: ``cfg.modalities``, or, for a model that takes fewer modalities than
    the data has (``vae``: 1, ``meme``: 2), the first ones. The choice is written into the config, so it
    is saved with the run and the run is reproducible."""
    from . import builtin  # noqa: F401  (models registered in their own modules)

    if cfg.modalities:
        if isinstance(cfg.modalities, str):
            cfg.modalities = [m.strip() for m in cfg.modalities.split(",") if m.strip()]
        return cfg.modalities
    entry = MODELS.get(cfg.model)
    if entry is not None and entry.max_modalities is not None and len(specs) > entry.max_modalities:
        cfg.modalities = list(specs)[: entry.max_modalities]
        import sys

        print(f"note: model '{cfg.model}' takes {entry.max_modalities} modalit"
              f"{'y' if entry.max_modalities == 1 else 'ies'}; using {', '.join(cfg.modalities)} "
              f"(choose with --set modalities=[...])", file=sys.stderr)
        return cfg.modalities
    return None


def build_model(specs: dict, cfg: Config, encoders: dict | None = None, decoders: dict | None = None):
    """Build the configured model for a dataset's modalities, checking the fit first.

    ``encoders`` / ``decoders``: optional {modality: nn.Module} replacing the default networks (same
    contract as ``nets/registry.py``: encoder x -> (loc, raw_scale), decoder z (N, D) -> parameters)."""
    from . import builtin  # noqa: F401  (registers models defined in their own modules)

    if cfg.model not in MODELS:
        raise UserError(f"unknown model '{cfg.model}': use one of {', '.join(sorted(MODELS))}")
    entry = MODELS[cfg.model]
    n = len(specs)
    if n < entry.min_modalities:
        raise UserError(f"model '{cfg.model}' needs at least {entry.min_modalities} modalities, the data has {n} "
                        f"({', '.join(specs)}): use model 'vae' for one modality or add modalities")
    if entry.max_modalities is not None and n > entry.max_modalities:
        raise UserError(f"model '{cfg.model}' takes at most {entry.max_modalities} modalities, the data has {n} "
                        f"({', '.join(specs)}): pick a multimodal model (mvae, mmvae, mopoe) or keep one modality "
                        f"with --set modalities={next(iter(specs))}")
    unknown = set(cfg.extra) - set(entry.options)
    if unknown:
        allowed = ", ".join(entry.options) or "none"
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))} for model '{cfg.model}' "
                        f"(its own options: {allowed}; see `mmvae train --help` for the common ones)")
    if entry.complete_rows and cfg.paired_fraction < 1:
        raise UserError(f"model '{cfg.model}' needs every modality in every row: paired_fraction="
                        f"{cfg.paired_fraction} leaves rows incomplete; use paired_fraction=1")
    resolve(cfg, entry)
    if cfg.posterior not in ("normal", "laplace"):
        raise UserError(f"posterior '{cfg.posterior}' is unknown: use normal or laplace")
    specs = with_networks(specs, cfg.network)   # the user's choices, names checked
    networks = {k: v for k, v in (("encoders", encoders), ("decoders", decoders)) if v}
    own = {m for nets in networks.values() for m in nets}   # modalities with the caller's own networks
    resolved = resolve_networks({m: s for m, s in specs.items() if m not in own})
    cfg.network = {**{m: v for m, v in (cfg.network or {}).items() if m in own}, **resolved}   # saved in config.json
    specs = with_networks(specs, resolved)
    for kind, nets in networks.items():
        if set(nets) - set(specs):
            raise UserError(f"{kind} given for unknown modalities {sorted(set(nets) - set(specs))}; "
                            f"the data has {', '.join(specs)}")
    try:
        wanted = prior_kind(cfg.prior)
    except ValueError as e:
        raise UserError(str(e)) from None
    activation_class(cfg.activation)                   # an unknown name: one line naming the valid ones
    model = entry.build(specs, cfg, **networks)
    if cfg.activation is not None and getattr(model, "activation", None) != cfg.activation:
        raise UserError(f"model '{cfg.model}' builds its networks with their own activations and does not take "
                        f"--set activation={cfg.activation}: leave activation unset")
    if wanted != "standard" and getattr(model, "prior_kind", None) != wanted:
        # a builder that does not pass the option on must not ignore it silently
        raise UserError(f"model '{cfg.model}' does not support --set prior={cfg.prior}: its prior is fixed "
                        f"(leave prior unset)")
    return model
