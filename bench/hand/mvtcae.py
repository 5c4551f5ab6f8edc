"""MVTCAE by hand (Hwang et al., NeurIPS 2021, total-correlation objective; official code gr8joo/MVTCAE,
``run_epochs.py``, method ``tc``): q(z | X) the product of the unimodal Gaussian experts without a prior expert
(the official ``poe``: precision 1/(σ² + 1e-8)), one reparameterised sample, per row (maximised)

    (M − α)/M Σ_m log p(x_m | z) − β [α/M Σ_m KL(q(z|X) ‖ q(z|x_m)) + (1 − α) KL(q(z|X) ‖ N(0, I))]

with α = 5/6, β = 1 (bench/speed_models.py's MVTCAE). Noise: ``z`` (B, D).
"""
from __future__ import annotations

import torch

from .common import draw, head, kl_normal, kl_std, log_lik, product_of_experts

ALPHA, BETA = 5 / 6, 1.0


def loss(model, x, noise=None):
    names = list(x)
    mu_e, s_e = (torch.stack(t) for t in zip(*(head(model.encoders[m](x[m])) for m in names)))   # (M, B, D)
    mu, s = product_of_experts(mu_e, s_e)
    z = mu + s * draw(noise, "z", mu)
    rec = sum(log_lik(m, model.decoders[m](z), x[m]) for m in names)
    kl_views = kl_normal(mu, s, mu_e, s_e).sum(0)
    n = len(names)
    return -((n - ALPHA) / n * rec - BETA * (ALPHA / n * kl_views + (1 - ALPHA) * kl_std(mu, s))).mean()
