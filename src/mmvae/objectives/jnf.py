"""JNF (Senellart & Allassonnière 2025, "Bridging the inference gap in multimodal variational
autoencoders"; MultiVae's ``JNF``): two stages, one loss each (docs/models/jnf.md).

Stage 0, the joint VAE (``joint_epochs`` epochs), per row (maximised):

    E_{q(z|X)}[Σ_m λ_m log p(x_m | z)] − β KL(q(z|X) ‖ p(z))

Stage 1, the unimodal posteriors, with the joint encoder and the decoders frozen (per row, maximised):

    Σ_m E_{q(z|X)}[log q_m(z | x_m)],   log q_m(z | x_m) = log N(T_m(z); μ_m(x_m), σ_m(x_m)) + log |det ∂T_m/∂z|

which is −Σ_m KL(q(z|X) ‖ q_m(z|x_m)) up to the entropy of the frozen q(z|X): each flow posterior
learns to cover the joint posterior of the rows its modality belongs to.
"""
from __future__ import annotations

import torch

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from .jmvae import require_complete


class JNFObjective:
    """The loss of the model's current ``stage`` (set by the trainer from the epoch, train/schedule.py)."""

    name = "jnf"

    def __init__(self, k: int = 1):
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        require_complete(model, batch, "jnf")
        if model.stage == 0:
            q = model.joint_posterior(batch)
            z = noise.rsample(q, (self.k,), "z")                                    # (K, B, D)
            rec = model.reconstruction(z[None], batch)[0].mean(0)                 # (B,)
            kl = kl_to_prior(q, model.prior)
            loss = -(rec - beta * kl).mean()
            with torch.no_grad():
                logs = {"rec": rec.mean(), "kl": kl.mean(), "bound": (rec - kl).mean()}
            return loss, logs
        with torch.no_grad():                                                       # frozen joint posterior
            z = noise.rsample(model.joint_posterior(batch), (self.k,), "z")
        lq = sum(model.flow_posterior(m, batch.data[m]).log_prob(z) for m in model.specs)   # (K, B)
        loss = -lq.mean()
        with torch.no_grad():
            logs = {"unimodal_nll": loss.detach()}
        return loss, logs
