"""TELBO by hand (Vedantam, Fischer, Huang & Murphy, ICLR 2018, the triple ELBO; official code google/joint_vae,
``MultimodalElboLoss`` with the paper runs' ``stop_elbox_gradient = stop_elboy_gradient = 1``): per row
(maximised), one sample of the joint encoder's q(z | X) and one of each q(z | x_m),

    Σ_m log p(x_m | z) − β KL(q(z|X) ‖ N(0, I)) + Σ_m [log p̄(x_m | z_m) − β KL(q(z|x_m) ‖ N(0, I))]

p̄: the decoder with its weights held fixed (detached: the unimodal ELBOs train the unimodal encoders only).
Both stages in one step, as the library trains it (the step bench/speed_models.py races); β = 1.
Noise: ``z`` (B, D) and ``z/<m>`` (B, D).
"""
from __future__ import annotations

from torch.func import functional_call

from .common import draw, head, kl_std, log_lik

BETA = 1.0


def loss(model, x, noise=None):
    mu, s = head(model.joint_encoder(x))
    z = mu + s * draw(noise, "z", mu)
    total = -BETA * kl_std(mu, s)
    for m in x:
        decoder = model.decoders[m]
        mu_m, s_m = head(model.encoders[m](x[m]))
        z_m = mu_m + s_m * draw(noise, f"z/{m}", mu_m)
        fixed = {n: p.detach() for n, p in decoder.named_parameters()}
        total = total + log_lik(m, decoder(z), x[m]) + log_lik(m, functional_call(decoder, fixed, (z_m,)), x[m]) \
            - BETA * kl_std(mu_m, s_m)
    return -total.mean()
