"""MMVAE (Shi, Siddharth, Paige & Torr 2019): q(z | X) = 1/M Σ_m q(z | x_m), a uniform mixture of the
Gaussian experts of the observed modalities, trained by the naive per-expert ELBO (eq. 3, one sample):
1/M Σ_m [log p(z_m) + Σ_n log p(x_n | z_m) - log q(z_m | X)],  z_m ~ q(z | x_m), so each expert's sample
reconstructs its own modality and every other one."""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import log_normal, modalities, sample


class MMVAE(nn.Module):
    fusion = "moe"

    def __init__(self, specs):
        super().__init__()
        self.mods = modalities(specs)

    def loss(self, x, observed):
        names = list(self.mods)
        obs = torch.stack([observed[m] for m in names])                   # (M, B)
        enc = [self.mods[m].encode(x[m]) for m in names]
        log_obs = torch.where(obs > 0, 0.0, -math.inf)
        total = 0.0
        for i, (mu, logvar) in enumerate(enc):
            z = sample(mu, logvar)
            log_q = torch.logsumexp(torch.stack([log_normal(z, mu_n, lv_n) for mu_n, lv_n in enc]) + log_obs, 0) \
                - obs.sum(0).log()
            rec = sum(obs[n] * self.mods[m].log_lik(self.mods[m].logits(z), x[m]) for n, m in enumerate(names))
            log_p = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
            total = total + obs[i] * (rec + log_p - torch.where(obs[i] > 0, log_q, 0.0))
        return -(total / obs.sum(0)).mean()
