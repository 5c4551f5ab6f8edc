"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016, "Joint Multimodal Learning with Deep Generative Models",
JMVAE-kl objective; official code masa-su/jmvae with Tars ``MVAE.lowerbound``).

With the joint encoder q(z | X) and unimodal encoders q(z | x_m), per row (maximised):

    L = E_{q(z|X)}[Σ_m λ_m log p(x_m | z)] − β_t KL(q(z|X) ‖ p(z)) − α Σ_m KL(q(z|X) ‖ q(z|x_m))

The KL terms toward the unimodal encoders train those encoders to stand in for the joint one when a
modality is missing at test time (α = 0 is JMVAE-zero). β_t is the step's KL weight: the warm-up of the
official code multiplies KL(q(z|X) ‖ p(z)) only (``annealing_beta * kl``), so it does not scale the α
terms. Every row must observe every modality (the joint encoder reads them all).
"""
from __future__ import annotations

import torch

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..errors import UserError
from .mvtcae import expert_kls

NEEDS_COMPLETE_ROWS = ("model '{model}' encodes every row with a joint encoder over all modalities and cannot "
                       "train on rows with missing modalities: train on complete rows (paired_fraction=1, no "
                       "missing values) or use a model that handles them (mvae, mmvae, mopoe, mvtcae, telbo)")


def require_complete(model, batch, name: str) -> None:
    complete = model.complete_rows(batch)
    if complete is None or not bool(complete.all()):
        raise UserError(NEEDS_COMPLETE_ROWS.format(model=name))


class JMVAEObjective:
    """The loss (negative L above, averaged over rows) of a :class:`JointEncoderVAE`."""

    name = "jmvae"

    def __init__(self, alpha: float, k: int = 1):
        self.alpha = float(alpha)
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        require_complete(model, batch, "jmvae")
        q = model.joint_posterior(batch)
        z = noise.rsample(q, (self.k,), "z")                                       # (K, B, D)
        rec = model.reconstruction(z[None], batch)[0].mean(0)                    # (B,)
        kl = kl_to_prior(q, model.prior)
        kl_jm = expert_kls(q, model.encode_experts(batch), batch.mask)
        objective = rec - beta * kl - self.alpha * kl_jm
        loss = -objective.mean()
        with torch.no_grad():
            logs = {"rec": rec.mean(), "kl": kl.mean(), "kl_jm": kl_jm.mean(),
                    "bound": (rec - kl).mean()}
        return loss, logs
