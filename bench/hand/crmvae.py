"""CRMVAE by hand (Suzuki & Matsuo 2023, coordination-based objective as MultiVae 1.0.3's ``CRMVAE.forward``
computes it; no official code is public): q(z | X) the product of the unimodal Gaussian experts without a
prior expert (precision 1/(σ² + 1e-8)), one sample of q(z | X) and one of each q(z | x_m), per row (maximised)

    1/(2(M+1)) Σ_m [log p(x_m | z) + log p(x_m | z_m)]
        − β/(M+1) [KL(q(z|X) ‖ N(0, I)) + Σ_m KL(q(z|X) ‖ q(z|x_m))]

β = 1 (bench/speed_models.py). Each decoder runs once on the joint and its own unimodal sample stacked.
Noise: ``z`` (B, D) and ``z/<m>`` (B, D).
"""
from __future__ import annotations

import torch

from .common import draw, head, kl_normal, kl_std, log_lik, product_of_experts

BETA = 1.0


def loss(model, x, noise=None):
    names = list(x)
    mu_e, s_e = (torch.stack(t) for t in zip(*(head(model.encoders[m](x[m])) for m in names)))   # (M, B, D)
    mu, s = product_of_experts(mu_e, s_e)
    z = mu + s * draw(noise, "z", mu)
    rec = 0.0
    for i, m in enumerate(names):
        z_m = mu_e[i] + s_e[i] * draw(noise, f"z/{m}", mu)
        out = model.decoders[m](torch.cat([z, z_m]))                                          # (2B, ...)
        rec = rec + log_lik(m, out.view(2, *z.shape[:-1], -1), x[m]).sum(0)
    kl = kl_std(mu, s) + kl_normal(mu, s, mu_e, s_e).sum(0)
    n = len(names)
    return -(rec / (2 * (n + 1)) - BETA * kl / (n + 1)).mean()
