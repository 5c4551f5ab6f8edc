"""Nexus (Vasco, Yin, Melo & Paiva 2022, "Leveraging hierarchy in multimodal generative models for
effective cross-modality inference", Neural Networks 146; official code miguelsvasco/nexus_pytorch;
MultiVae's ``Nexus``). Per row (maximised; docs/models/nexus.md):

    bottom = Σ_m o_m [λ_m log p(x_m | z_m) − a β_m KL(q(z_m | x_m) ‖ N(0, I))],    z_m ~ q(z_m | x_m)
    top    = Σ_m o_m γ_m log N(z̄_m; g_m(z_σ), I) − β_t KL(q(z_σ | h) ‖ N(0, I)),   z_σ ~ q(z_σ | h)
    h      = mean of f_m(z̄_m) over the modalities kept by forced perceptual dropout,  z̄_m = sg(z_m)

o_m: row observes m. The top level reads the bottom samples with their gradient stopped (sg), so each
level trains its own networks. β_t is the step's KL weight (the warm-up) and a = β_t / β its warm-up
fraction, which the bottom KLs share (one warm-up for both levels, as MultiVae).
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Normal

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..fusion.messages import forced_dropout


def unit_normal_log_density(x, mean):
    """log N(x; mean, I) summed over the last axis."""
    return -0.5 * ((x - mean) ** 2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


class NexusObjective:
    """The loss of a :class:`~mmvae.models.nexus.Nexus` (see the module docstring)."""

    name = "nexus"

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        ramp = beta / model.beta if model.beta > 0 else 1.0
        experts = model.encode_experts(batch)                                     # q(z_m | x_m), (B, d)
        rec = kl = 0
        z_bar = {}
        for m in batch.data:
            obs = batch.mask[m].to(experts[m].loc.dtype)
            z = noise.rsample(experts[m], (), f"z/{m}")
            rec = rec + model.reconstruction(z[None, None], batch.select([m]))[0, 0]   # λ_m log p, observed rows
            unit = Normal(torch.zeros_like(z), torch.ones_like(z))                 # p(z_m) = N(0, I)
            kl = kl + model.bottom_betas[m] * obs * kl_to_prior(experts[m], unit)
            z_bar[m] = z.detach()
        keep = forced_dropout(batch.mask, model.dropout, noise) if model.training else batch.mask
        q_top = model.nexus_posterior(z_bar, keep)
        z_top = noise.rsample(q_top, (), "nexus")
        top_rec = sum(model.gammas[m] * batch.mask[m].to(z_top.dtype) *
                      unit_normal_log_density(z_bar[m], model.top_decoders[m](z_top)) for m in batch.data)
        top_kl = kl_to_prior(q_top, model.prior)
        bottom_bound = rec - ramp * kl
        top_bound = top_rec - beta * top_kl
        loss = -(bottom_bound + top_bound).mean()
        with torch.no_grad():
            logs = {"rec": rec.mean(), "kl": kl.mean(), "top_rec": top_rec.mean(), "top_kl": top_kl.mean()}
        return loss, logs
