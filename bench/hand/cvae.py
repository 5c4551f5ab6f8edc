"""The conditional VAE by hand (Sohn, Lee & Yan 2015, eq. 4; MultiVae's ``CVAE.forward``): target x_t = ``a``
given x_C = (``b``, ``c``), encoder q(z | x_t, x_C), prior network p(z | x_C), conditional decoder
p(x_t | z, x_C), one reparameterised sample, per row (maximised)

    log p(x_t | z, x_C) − β KL(q(z | x_t, x_C) ‖ p(z | x_C))

β = 1 (bench/speed_models.py's CVAE: target a, conditioned on b and c, prior network). Noise: ``z`` (B, D).
"""
from __future__ import annotations

from .common import draw, head, kl_normal, log_lik

TARGET, BETA = "a", 1.0


def loss(model, x, noise=None):
    cond = {m: v for m, v in x.items() if m != TARGET}
    mu, s = head(model.encoder(x))
    mu_p, s_p = head(model.prior_net(cond))
    z = mu + s * draw(noise, "z", mu)
    rec = log_lik(TARGET, model.decoder(z, cond), x[TARGET])
    return -(rec - BETA * kl_normal(mu, s, mu_p, s_p)).mean()
