"""Factorised MMVAE (the factorizing-mmvae study, its FUMMVAE model and m_infoNCE_naive objective): an
MMVAE over a shared latent s trained together with one unimodal VAE per modality over a private latent
w_m; the three share no network, and per modality a "fission" contrast pushes the MMVAE's encoder of m
and the VAE's encoder of m apart.

Objective (maximised, per batch of B rows): Σ_rows [L_MMVAE + Σ_m L_m] − α Σ_m CE_m, α = 1, with
  L_MMVAE = 1/|S| Σ_{r∈S} (Σ_{d∈S} log p(x_d | s_r) − KL(q(s | x_r) || N(0, I))),  s_r ~ q(s | x_r),
  L_m = log p(x_m | w_m) − KL(q(w_m | x_m) || N(0, I)),  w_m ~ q(w_m | x_m),
  CE_m = mean over rows and dimensions of the soft-target cross-entropy of the four densities
         [q_φ(s̃_d|x), q_ψ(w̃_d|x), q_ψ(s̃_d|x), q_φ(w̃_d|x)] against targets [1, 1, 0, 0]
(s̃, w̃ the samples of the bounds). The loss is −objective / B. Gaussian posteriors, as every reference."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import kl_to_standard, modalities, sample


def log_normal_dims(z, mu, logvar):
    """Per-dimension log N(z_d; mu_d, exp(logvar_d)), (B, D)."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())


class FMMVAE(nn.Module):
    fusion = "moe"

    def __init__(self, specs):
        super().__init__()
        self.mods = modalities(specs)       # the MMVAE: shared experts and decoders
        self.private = modalities(specs)    # one unimodal VAE per modality

    def loss(self, x, observed):
        names = list(self.mods)
        obs = torch.stack([observed[m] for m in names])                   # (M, B)
        enc = {m: self.mods[m].encode(x[m]) for m in names}
        mmvae, unimodal, contrast = 0.0, 0.0, 0.0
        for r, m in enumerate(names):
            mu, logvar = enc[m]
            s = sample(mu, logvar)
            rec = sum(obs[d] * self.mods[n].log_lik(self.mods[n].logits(s), x[n]) for d, n in enumerate(names))
            mmvae = mmvae + obs[r] * (rec - kl_to_standard(mu, logvar))
            pmu, plogvar = self.private[m].encode(x[m])
            w = sample(pmu, plogvar)
            unimodal = unimodal + obs[r] * (self.private[m].log_lik(self.private[m].logits(w), x[m])
                                            - kl_to_standard(pmu, plogvar))
            dens = torch.stack([log_normal_dims(s, mu, logvar), log_normal_dims(w, pmu, plogvar),
                                log_normal_dims(s, pmu, plogvar), log_normal_dims(w, mu, logvar)], -1).exp()
            ce = -(F.log_softmax(dens, -1)[..., :2].sum(-1)).mean(-1)     # (B,) mean over dimensions
            contrast = contrast + (obs[r] * ce).sum() / obs[r].sum().clamp_min(1)
        objective = (mmvae / obs.sum(0) + unimodal).sum() - contrast
        return -objective / obs.shape[1]
