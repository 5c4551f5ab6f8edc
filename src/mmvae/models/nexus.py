"""Nexus (Vasco, Yin, Melo & Paiva 2022, Neural Networks 146; official code miguelsvasco/nexus_pytorch;
MultiVae's ``Nexus``): a two-level hierarchy. Bottom: one VAE per modality, q(z_m | x_m), p(x_m | z_m)
with z_m of ``modality_dim``. Top: each z_m sends a message f_m(z_m); the nexus posterior q(z_σ | h) reads
their mean h (forced perceptual dropout in training, ``fusion/messages.py``), and top decoders g_m(z_σ)
predict z_m. Loss: ``objectives/nexus.py``; equations and deviations: docs/models/nexus.md.

The bottom level is a :class:`MultimodalVAE` whose latent is z_m (encoders, decoders, likelihoods, λ,
masks); the user API works in the nexus space: ``encode`` / ``embed`` give q(z_σ | x_S) (from the bottom
means), ``translate`` decodes a target outside S through z_σ → g_t → decoder_t and a given modality from
its own z_m (MultiVae's ``use_bottom_z_for_recon``), ``generate`` decodes z_σ ~ N(0, I) the same way.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.batch import Batch
from ..distributions.noise import GLOBAL_NOISE, Noise
from ..distributions.posteriors import make_posterior
from ..distributions.prior import Prior
from ..errors import UserError
from ..fusion.messages import mean_messages
from ..fusion.mixture import DiagonalMixture
from ..nets.mlp import MLPEncoder, mlp
from ..objectives.nexus import NexusObjective
from .multimodal import MultimodalVAE, _split
from .registry import model_option, register_model

NO_LIKELIHOOD = ("Nexus trains its levels as separate bounds (modality VAEs with N(0, I) priors, a nexus VAE on "
                 "their detached samples), so no single p(x) is defined to estimate; MultiVae's Nexus has none either")


class Nexus(MultimodalVAE):
    """See the module docstring. ``bottom_betas``, ``gammas``: β_m and γ_m (a float for every modality or a
    mapping); ``dropout``: the forced-perceptual-dropout rate; ``beta``: the nexus KL weight."""

    likelihood_note = NO_LIKELIHOOD

    def __init__(self, specs: Mapping, latent_dim: int, *, modality_dim: int | None = None, message_dim: int = 512,
                 dropout: float = 0.2, bottom_betas=1.0, gammas=10.0, hidden: int = 512, beta: float = 1.0,
                 messages: Mapping[str, nn.Module] | None = None, nexus_encoder: nn.Module | None = None,
                 top_decoders: Mapping[str, nn.Module] | None = None, **kwargs):
        d = int(modality_dim or latent_dim)
        super().__init__(specs, d, None, NexusObjective(), posterior="normal", hidden=hidden, beta=beta, **kwargs)
        self.nexus_dim = int(latent_dim)
        self.dropout = float(dropout)
        self.bottom_betas = _per_modality(bottom_betas, self.specs, "bottom_betas")
        self.gammas = _per_modality(gammas, self.specs, "gammas")
        self.messages = nn.ModuleDict(messages or {m: nn.Linear(d, message_dim) for m in self.specs})
        self.nexus_encoder = nexus_encoder or MLPEncoder((message_dim,), self.nexus_dim, (hidden, hidden))
        self.top_decoders = nn.ModuleDict(top_decoders or {m: mlp([self.nexus_dim, hidden, hidden, d])
                                                           for m in self.specs})
        self.latent_prior = Prior("normal", self.nexus_dim)          # p(z_σ); the bottom priors are N(0, I)

    # ------------------------------------------------------------------------------------ the two levels
    def nexus_posterior(self, z: Mapping[str, Tensor], keep: Mapping[str, Tensor]):
        """q(z_σ | h), h the mean message of the kept modalities (z: {m: (B, d)}, keep: {m: (B,)})."""
        h = mean_messages({m: self.messages[m](z[m]) for m in z}, keep)
        loc, raw = _split(self.nexus_encoder(h), self.nexus_dim)
        return make_posterior("normal", loc, raw)

    def _encode(self, batch: Batch, sample: bool, noise: Noise = GLOBAL_NOISE):
        experts = self.encode_experts(batch)
        z = {m: noise.rsample(q, (), f"z/{m}") if sample else q.loc for m, q in experts.items()}
        return z, self.nexus_posterior(z, batch.mask)

    def posterior(self, batch: Batch) -> DiagonalMixture:
        """q(z_σ | x_S) at the bottom posterior means of the given (observed) modalities."""
        q = self._encode(batch, sample=False)[1]
        return DiagonalMixture(type(q), q.loc[None], q.scale[None], torch.ones_like(q.loc[None, :, 0]))

    # ------------------------------------------------------------------------------------ user API
    @torch.no_grad()
    def decode(self, z: Tensor, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Likelihood means for nexus latents z (N, nexus_dim): z_σ → g_m → decoder_m."""
        return {m: self.likelihoods[m].mean(self.decode_params(m, self.top_decoders[m](z)))
                for m in (modalities or self.modalities)}

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        z, q = self._encode(Batch(dict(data)), sample)
        z_top = q.rsample() if sample else q.loc
        out = {}
        for t in targets or self.modalities:
            z_t = z[t] if t in z else self.top_decoders[t](z_top)
            out[t] = self.likelihoods[t].mean(self.decode_params(t, z_t))
        return out

    @torch.no_grad()
    def generate(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        return self.decode(self.prior.sample((n,)), modalities)


def _per_modality(value, specs, name: str) -> dict[str, float]:
    if isinstance(value, Mapping):
        if set(value) != set(specs):
            raise ValueError(f"{name} must give every modality ({', '.join(specs)}), got {sorted(value)}")
        return {m: float(value[m]) for m in specs}
    return {m: float(value) for m in specs}


@register_model("nexus", "Vasco, Yin, Melo & Paiva 2022, Leveraging hierarchy in multimodal generative models for "
                         "effective cross-modality inference (Neural Networks 146)",
                "two levels: a VAE per modality, and a nexus VAE over the mean of messages from their (detached) "
                "latents with forced perceptual dropout; options modality_dim, message_dim, dropout (0.2), "
                "bottom_beta, gamma (10); partially observed rows",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform", warmup=20.0),
                min_modalities=2, options=("modality_dim", "message_dim", "dropout", "bottom_beta", "gamma"))
def build_nexus(specs, cfg: Config, encoders=None, decoders=None) -> Nexus:
    if cfg.objective != "elbo" or cfg.kl != "analytic" or cfg.k != 1 or cfg.posterior != "normal":
        raise UserError("model 'nexus' has its own loss with one sample per level and Gaussian posteriors: leave "
                        f"objective, kl, k and posterior unset (got objective={cfg.objective}, kl={cfg.kl}, "
                        f"k={cfg.k}, posterior={cfg.posterior})")
    whole = (int, lambda v: v >= 1, "a whole number >= 1")
    modality_dim = model_option(cfg, "modality_dim", cfg.latent_dim, *whole)
    message_dim = model_option(cfg, "message_dim", cfg.hidden, *whole)
    dropout = model_option(cfg, "dropout", 0.2, float, lambda v: 0 <= v <= 1, "a rate in [0, 1]")
    weight = (float, lambda v: v >= 0, "a weight >= 0")
    bottom_beta = model_option(cfg, "bottom_beta", 1.0, *weight)
    gamma = model_option(cfg, "gamma", 10.0, *weight)
    try:
        return Nexus(specs, cfg.latent_dim, modality_dim=modality_dim, message_dim=message_dim, dropout=dropout,
                     bottom_betas=bottom_beta, gammas=gamma, hidden=cfg.hidden, beta=cfg.beta,
                     likelihoods=cfg.likelihood, scales=cfg.scale, default_scale=cfg.default_scale,
                     weights=cfg.weights, encoders=encoders, decoders=decoders)
    except ValueError as e:
        raise UserError(str(e)) from None
