"""mmJSD by hand (Sutter, Daunhawer & Vogt, NeurIPS 2020; official code thomassutter/mmjsd, ``alpha_poe``,
``calc_alphaJSD_modalities``, ``modality_jsd`` branch of ``run_epoch``): per row (maximised)

    Σ_m λ_m log p(x_m | z) − β Σ_{j=0}^{M} π_j KL(q_j ‖ f),   z ~ (1/M) Σ_m q(z | x_m)

q_0 = N(0, I), q_m = q(z | x_m), π_j = 1/(M + 1), f the dynamic prior: the π-weighted product of the q_j
(precisions π_j/(σ_j² + 1e-8)). The reconstruction decodes one sample of one unimodal expert per row (the
expert drawn per row; the official code assigns consecutive blocks of rows, the same expectation).
λ_m = max_n D_n / D_m (the library's ``weights=rescale``, mmJSD's default and the official rec weights),
β = 1: the model bench/speed_models.py builds (Config(model="mmjsd")). Noise: ``z`` (B, D), ``pick`` (B,).
"""
from __future__ import annotations

import torch

from .common import draw, head, kl_normal, log_lik

BETA = 1.0


def loss(model, x, noise=None):
    names = list(x)
    mu_e, s_e = (torch.stack(t) for t in zip(*(head(model.encoders[m](x[m])) for m in names)))   # (M, B, D)
    n, b = mu_e.shape[:2]
    pick = torch.randint(n, (b,), device=mu_e.device) if noise is None else noise["pick"]
    rows = torch.arange(b, device=mu_e.device)
    z = mu_e[pick, rows] + s_e[pick, rows] * draw(noise, "z", mu_e[0])
    top = max(x[m].shape[-1] for m in names)
    rec = sum(top / x[m].shape[-1] * log_lik(m, model.decoders[m](z), x[m]) for m in names)
    locs = torch.cat([torch.zeros_like(mu_e[:1]), mu_e])                                       # (M + 1, B, D)
    scales = torch.cat([torch.ones_like(s_e[:1]), s_e])
    w = 1 / (scales.pow(2) + 1e-8)                      # π_j = 1/(M + 1) cancels out of f's mean and variance
    var = (n + 1) / w.sum(0)
    mu_f = var * (w * locs).sum(0) / (n + 1)
    js = kl_normal(locs, scales, mu_f, var.sqrt()).mean(0)
    return (BETA * js - rec).mean()
