"""The conditional VAE's ELBO (Sohn, Lee & Yan 2015, "Learning Structured Output Representation using
Deep Conditional Generative Models", eq. 4; MultiVae ``CVAE.forward``), per row (maximised):

    L = E_{q(z|x_t, x_C)}[λ log p(x_t | z, x_C)] − β KL(q(z | x_t, x_C) ‖ p(z | x_C))

a lower bound on log p(x_t | x_C) with the conditional prior network p(z | x_C) (or N(0, I) without it).
Noise name: ``"z"`` (K, B, D).
"""
from __future__ import annotations

import torch

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..errors import UserError


class CVAEObjective:
    name = "cvae"

    def __init__(self, k: int = 1):
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        if batch.incomplete(model.modalities):
            raise UserError(f"model 'cvae' needs its target '{model.target}' and its conditioning modalities "
                            f"({', '.join(model.conditions)}) in every row: train on complete rows "
                            f"(paired_fraction=1, no missing values)")
        model.remember_inputs(batch.data)                     # the bank of x_C for generate
        q = model.posterior_given(batch.data)
        z = noise.rsample(q, (self.k,), "z")                                        # (K, B, D)
        rec = model.log_likelihood_given(z, batch.data).mean(0)                     # (B,)
        kl = kl_to_prior(q, model.conditional_prior(batch.data))
        objective = rec - beta * kl
        loss = -objective.mean()
        with torch.no_grad():
            logs = {"rec": rec.mean(), "kl": kl.mean(), "bound": (rec - kl).mean()}
        return loss, logs
