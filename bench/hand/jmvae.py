"""JMVAE-kl by hand (Suzuki, Nakayama & Matsuo 2016, JMVAE-kl objective; official code masa-su/jmvae,
Tars ``MVAE.lowerbound``): the joint encoder q(z | X), one reparameterised sample, per row (maximised)

    Σ_m log p(x_m | z) − β KL(q(z|X) ‖ N(0, I)) − α Σ_m KL(q(z|X) ‖ q(z|x_m))

with α = 0.1 and β = 1: the stage bench/speed_models.py races, after the warm-up (which scales the prior KL
only, ``annealing_beta * kl`` in the official code). Noise: ``z`` (B, D).
"""
from __future__ import annotations

from .common import draw, head, kl_normal, kl_std, log_lik

ALPHA, BETA = 0.1, 1.0


def loss(model, x, noise=None):
    mu, s = head(model.joint_encoder(x))
    z = mu + s * draw(noise, "z", mu)
    rec = sum(log_lik(m, model.decoders[m](z), x[m]) for m in x)
    kl_jm = sum(kl_normal(mu, s, *head(model.encoders[m](x[m]))) for m in x)
    return (BETA * kl_std(mu, s) - rec + ALPHA * kl_jm).mean()
