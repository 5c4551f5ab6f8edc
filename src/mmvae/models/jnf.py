"""JNF, joint normalising flows (Senellart & Allassonnière 2025, arXiv:2502.03952; MultiVae's ``JNF``): a
joint VAE q(z | X), p(x_m | z) trained first, then one flow posterior per modality,
q_m(z | x_m) = T_m⁻¹ of N(μ_m(x_m), σ_m(x_m)), trained to cover the frozen joint posterior.
Equations and deviations: docs/models/jnf.md.

Core pieces: the joint encoder (``nets/joint.py``, ``JointEncoderVAE``), MAF flows and flow posteriors
(``distributions/flows.py``), HMC (``distributions/hmc.py``) and the trainer's stages
(``train/schedule.training_stage``: ``stage_epochs = (joint_epochs,)``).

Inference given modalities S: all → q(z | X) (the joint encoder); one → its flow posterior; two or more
but not all → the product Π_{m∈S} q_m(z | x_m) / p(z) sampled by HMC (translation, embeddings), while
``posterior`` / ``encode`` return the uniform mixture of the members' flow posteriors, a proper density
that the importance-sampled likelihoods use as proposal.
"""
from __future__ import annotations

import sys
from typing import Mapping

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.batch import Batch
from ..distributions.flows import MAF, FlowMixture, FlowPosterior
from ..distributions.hmc import hmc
from ..distributions.posteriors import log_density, make_posterior
from ..distributions.prior import prior_kind
from ..errors import UserError
from ..fusion.mixture import DiagonalMixture
from ..objectives.jmvae import NEEDS_COMPLETE_ROWS
from ..objectives.jnf import JNFObjective
from .joint_encoder import JointEncoderVAE
from .multimodal import _split
from .registry import model_option, register_model


class JNF(JointEncoderVAE):
    """A JointEncoderVAE with a MAF per modality and two training stages (see the module docstring)."""

    def __init__(self, specs: Mapping, latent_dim: int, objective, *, joint_epochs: int = 10, flow_blocks: int = 2,
                 flow_hidden: int = 128, hmc_steps: int = 100, **kwargs):
        super().__init__(specs, latent_dim, objective, **kwargs)
        self.flows = nn.ModuleDict({m: MAF(self.latent_dim, flow_blocks, flow_hidden) for m in self.specs})
        self.stage_epochs = (int(joint_epochs),)     # the trainer sets ``stage`` from the epoch
        self.stage = 0
        self.hmc_steps = int(hmc_steps)

    def flow_posterior(self, m: str, x: Tensor) -> FlowPosterior:
        """q_m(z | x_m): the encoder's Gaussian pushed through T_m⁻¹."""
        loc, raw = _split(self.encoders[m](x), self.latent_dim)
        return FlowPosterior(make_posterior("normal", loc, raw), self.flows[m])

    def _given(self, batch: Batch) -> list[str]:
        names = [m for m in self.specs if m in batch.data]
        if not all(bool(batch.mask[m].all()) for m in names):
            raise ValueError("JNF infers from the modalities every row of the batch observes: pass the rows that "
                             "observe them all (or the modalities they share)")
        return names

    def posterior(self, batch: Batch):
        names = self._given(batch)
        if len(names) == len(self.specs):
            q = self.joint_posterior(batch)
            return DiagonalMixture(type(q), q.loc[None], q.scale[None], torch.ones_like(q.loc[None, :, 0]))
        posts = [self.flow_posterior(m, batch.data[m]) for m in names]
        return posts[0] if len(posts) == 1 else FlowMixture(posts)

    @torch.no_grad()
    def product_sample(self, data: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """HMC on Π_{m∈S} q_m(z | x_m) / p(z) (MultiVae's ``divide_prior``), started from a sample of the
        members' mixture: (one sample per row, the chain's mean over its second half)."""
        posts = [self.flow_posterior(m, x) for m, x in data.items()]
        prior = self.prior

        def target(z):
            return sum(q.log_prob(z) for q in posts) - log_density(prior, z)

        start = FlowMixture(posts).from_uniforms(torch.rand(1, *posts[0].base.loc.shape[:-1],
                                                            1 + self.latent_dim, dtype=posts[0].base.loc.dtype,
                                                            device=posts[0].base.loc.device))[0]
        return hmc(target, start, steps=self.hmc_steps)

    def _latent(self, data: Mapping[str, Tensor], sample: bool) -> Tensor:
        names = [m for m in self.specs if m in data]
        if 1 < len(names) < len(self.specs):
            last, mean = self.product_sample({m: data[m] for m in names})
            return last if sample else mean
        post = self.encode(data)
        return post.rsample(1)[0] if sample else post.mean

    @torch.no_grad()
    def embed(self, data: Mapping[str, Tensor]) -> Tensor:
        return self._latent(data, sample=False)

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        """As MultimodalVAE.translate; given a proper subset of two or more modalities, z comes from HMC on
        the product of their flow posteriors (``sample=False``: the chain's mean)."""
        return self.decode(self._latent(data, sample), targets)


@register_model("jnf", "Senellart & Allassonnière 2025, Bridging the inference gap in multimodal variational "
                       "autoencoders (JNF; MultiVae's JNF)",
                "joint VAE trained for joint_epochs (default 10), then a masked autoregressive flow posterior per "
                "modality trained to cover the frozen joint posterior; subsets by HMC on the product of experts; "
                "complete rows only",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform", warmup=0.0),
                min_modalities=2, options=("joint_epochs", "flow_blocks", "flow_hidden", "hmc_steps"))
def build_jnf(specs, cfg: Config, encoders=None, decoders=None, joint_encoder=None, flows=None):
    if cfg.objective != "elbo" or cfg.kl != "analytic":
        raise UserError("model 'jnf' has its own two-stage loss: leave objective and kl unset "
                        f"(got objective={cfg.objective}, kl={cfg.kl})")
    if cfg.posterior != "normal":
        raise UserError(f"model 'jnf' uses Gaussian encoders (the flows' base): posterior '{cfg.posterior}' does not "
                        f"fit; use --set posterior=normal")
    if cfg.paired_fraction < 1:
        raise UserError(NEEDS_COMPLETE_ROWS.format(model="jnf") + f" (got paired_fraction={cfg.paired_fraction})")
    if cfg.warmup:
        raise UserError("model 'jnf' has no KL warm-up: its first joint_epochs epochs train the joint VAE "
                        "(MultiVae's warmup is --set joint_epochs=N); leave warmup unset")
    joint_epochs = model_option(cfg, "joint_epochs", 10, int, lambda v: v >= 0, "a whole number of epochs >= 0")
    blocks = model_option(cfg, "flow_blocks", 2, int, lambda v: v >= 1, "a whole number >= 1")
    hidden = model_option(cfg, "flow_hidden", 128, int, lambda v: v >= 1, "a whole number >= 1")
    steps = model_option(cfg, "hmc_steps", 100, int, lambda v: v >= 1, "a whole number >= 1")
    if cfg.epochs <= joint_epochs:
        print(f"note: model 'jnf' trains the joint VAE for its first {joint_epochs} epochs and the unimodal flow "
              f"posteriors after; with --epochs {cfg.epochs} they are not trained (raise --epochs, or lower "
              f"--set joint_epochs)", file=sys.stderr)
    try:
        cfg.prior = prior_kind(cfg.prior)
        model = JNF(specs, cfg.latent_dim, JNFObjective(cfg.k), joint_encoder=joint_encoder, joint_epochs=joint_epochs,
                    flow_blocks=blocks, flow_hidden=hidden, hmc_steps=steps, posterior="normal", prior=cfg.prior,
                    likelihoods=cfg.likelihood, scales=cfg.scale, default_scale=cfg.default_scale,
                    weights=cfg.weights, hidden=cfg.hidden, beta=cfg.beta, encoders=encoders, decoders=decoders)
    except ValueError as e:
        raise UserError(str(e)) from None
    if flows is not None:
        model.flows = nn.ModuleDict(flows)
    return model
