"""Conditional VAE of one target modality given the others (Sohn et al. 2015; MultiVae's ``cvae``):
encoder q(z | x_t, x_C) (a joint encoder), conditional prior p(z | x_C) (a joint encoder over the
conditioning modalities), conditional decoder p(x_t | z, x_C). Equations and API: docs/models/cvae.md."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.batch import Batch
from ..distributions.empirical import InputBank
from ..distributions.likelihoods import make_likelihood
from ..distributions.posteriors import posterior_from, standard_prior
from ..distributions.prior import conditional_normal
from ..errors import UserError
from ..fusion.mixture import DiagonalMixture
from ..nets.conditional import default_conditional_decoder
from ..nets.joint import default_joint_encoder
from ..objectives.cvae import CVAEObjective
from .mvtcae import closed_form_only
from .registry import model_option, register_model


class ConditionalVAE(InputBank, nn.Module):
    """p(x_t | x_C) = ∫ p(x_t | z, x_C) p(z | x_C) dz with x_t = ``target``, x_C = the other modalities; a
    bank of real conditioning inputs (``distributions/empirical.py``) for joint samples."""

    has_fused_posterior = False

    def __init__(self, specs: Mapping, target: str, latent_dim: int, objective, *, hidden: int = 512,
                 conditional_prior: bool = True, bank: int = 128, likelihood: str | None = None, scale=0.75,
                 weights=None, beta: float = 1.0, activation: str | None = None):
        super().__init__()
        self.specs, self.target, self.latent_dim = dict(specs), target, int(latent_dim)
        self.conditions = [m for m in self.specs if m != target]
        cond = {m: self.specs[m] for m in self.conditions}
        self.objective, self.beta, self.activation = objective, float(beta), activation
        nets = dict(hidden=hidden, activation=activation)       # nets/activations.py (None: the networks' own)
        self.encoder = default_joint_encoder({target: self.specs[target], **cond}, self.latent_dim, **nets)
        self.prior_net = default_joint_encoder(cond, self.latent_dim, **nets) if conditional_prior else None
        self.decoder = default_conditional_decoder(self.specs[target], cond, self.latent_dim, **nets)
        spec = self.specs[target]
        self.likelihood = make_likelihood(likelihood or spec.likelihood, spec.shape, spec.kind, scale)
        self.weight = float(weights.get(target, 1.0)) if isinstance(weights, Mapping) else 1.0   # one λ: the target's
        self.init_bank({m: self.specs[m].shape for m in self.conditions}, bank)

    @property
    def modalities(self) -> list[str]:
        return list(self.specs)

    @property
    def prior(self):
        return standard_prior("normal", self.latent_dim, self.bank_filled.device)

    # ------------------------------------------------------------------------------ pieces
    def posterior_given(self, data: Mapping[str, Tensor]):
        """q(z | x_t, x_C)."""
        return posterior_from("normal", self.encoder({m: data[m] for m in self.specs}), self.latent_dim)

    def conditional_prior(self, data: Mapping[str, Tensor]):
        """p(z | x_C) (N(0, I) without the prior network)."""
        return conditional_normal(self.prior_net, {m: data[m] for m in self.conditions}, self.latent_dim)

    def log_likelihood_given(self, z: Tensor, data: Mapping[str, Tensor]) -> Tensor:
        """λ log p(x_t | z, x_C) for z (..., B, D) -> (..., B)."""
        out = self.decoder(z, {m: data[m] for m in self.conditions})
        return self.weight * self.likelihood.log_prob(out, data[self.target])

    def loss(self, batch: Batch, beta: float | None = None, noise=None):
        beta = self.beta if beta is None else float(beta)
        return self.objective(self, batch, beta) if noise is None else self.objective(self, batch, beta, noise=noise)

    # ------------------------------------------------------------------------------ user API
    @torch.no_grad()
    def encode(self, data: Mapping[str, Tensor], mask=None) -> DiagonalMixture:
        """Given the target and its conditions: q(z | x_t, x_C); given the conditions alone: p(z | x_C)."""
        if not set(self.conditions) <= set(data):
            raise ValueError(f"cvae infers z from its conditioning modalities {self.conditions} (with or "
                             f"without its target '{self.target}'); given {sorted(data)}")
        return DiagonalMixture.single(self.posterior_given(data) if self.target in data else self.conditional_prior(data))

    def embed(self, data: Mapping[str, Tensor]) -> Tensor:
        return self.encode(data).mean

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None, sample: bool = False):
        """The target generated from the conditioning modalities (z from p(z | x_C)), or reconstructed
        when the target is given too; the conditioning modalities are not generated (ValueError)."""
        targets = list(targets or self.modalities)
        if any(t != self.target for t in targets):
            raise ValueError(f"cvae generates only its target '{self.target}', not {[t for t in targets if t != self.target]}")
        post = self.encode(data)
        z = post.rsample(1)[0] if sample else post.mean
        return {self.target: self.likelihood.mean(self.decoder(z, {m: data[m] for m in self.conditions}))}

    def reconstruct(self, data: Mapping[str, Tensor]):
        return self.translate(data, [self.target])

    @torch.no_grad()
    def generate(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Joint samples: x_C drawn from the bank of training conditioning inputs, z ~ p(z | x_C), x_t the
        decoder's mean."""
        cond = self.draw_inputs(n)
        z = self.conditional_prior(cond).sample()
        out = {**cond, self.target: self.likelihood.mean(self.decoder(z, cond))}
        return {m: out[m] for m in (modalities or self.modalities)}

    @torch.no_grad()
    def latent_representations(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Means of q(z | x_t, x_C) ("posterior") and of p(z | x_C) ("prior")."""
        return {"posterior": self.embed(data), "prior": self.embed({m: data[m] for m in self.conditions})}

    @torch.no_grad()
    def conditional_log_likelihood(self, data: Mapping[str, Tensor], k: int = 1000) -> Tensor:
        """log p(x_t | x_C) per row ≈ log 1/K Σ_k p(x_t | z_k, x_C) p(z_k | x_C) / q(z_k | x_t, x_C)."""
        q, p = self.posterior_given(data), self.conditional_prior(data)
        z = q.sample((k,))
        lw = self.log_likelihood_given(z, data) / self.weight + (p.log_prob(z) - q.log_prob(z)).sum(-1)
        return torch.logsumexp(lw, 0) - torch.log(torch.tensor(float(k)))

    def log_likelihood(self, batch: Batch, modalities: list[str], k: int = 1000) -> Tensor:
        """Marginal and joint likelihoods are not defined (the model has no p(x_C)): NaN per row. The
        quantity it models is :meth:`conditional_log_likelihood`."""
        return torch.full((batch.size,), float("nan"))


@register_model("cvae", "Sohn, Lee & Yan 2015, Learning Structured Output Representation using Deep Conditional Generative Models",
                "conditional VAE of one target modality given the others: q(z|x_t,x_C), prior network p(z|x_C), "
                "decoder p(x_t|z,x_C) (options target=<modality> (default: the last), conditional_prior, bank)",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform"),
                min_modalities=2, options=("target", "conditional_prior", "bank"), complete_rows=True)
def build_cvae(specs, cfg: Config, encoders=None, decoders=None) -> ConditionalVAE:
    closed_form_only(cfg, "cvae")
    if encoders or decoders:
        raise UserError("model 'cvae' has a joint encoder, a prior network and a conditional decoder: the "
                        "per-modality encoders/decoders arguments do not apply")
    if cfg.posterior != "normal":
        raise UserError(f"model 'cvae' has Gaussian posteriors: use --set posterior=normal, not '{cfg.posterior}'")
    target = model_option(cfg, "target", list(specs)[-1], str, lambda v: v in specs,
                          f"one of the modalities {', '.join(specs)}")
    conditional = model_option(cfg, "conditional_prior", True, lambda v: v, lambda v: isinstance(v, bool), "true or false")
    bank = model_option(cfg, "bank", 128, int, lambda v: v >= 1, "an integer >= 1")
    return ConditionalVAE(specs, target, cfg.latent_dim, CVAEObjective(cfg.k), hidden=cfg.hidden,
                          conditional_prior=conditional, bank=bank, likelihood=cfg.likelihood.get(target),
                          scale=cfg.scale.get(target, cfg.default_scale), weights=cfg.weights, beta=cfg.beta,
                          activation=cfg.activation)

