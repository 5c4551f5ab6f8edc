"""MEME (Joy, Shi, Torr & Siddharth 2022): two modalities supervise each other; no joint posterior.

Paired row, direction s -> t (eq. 1 with the estimator of App. B/D): z ~ q(z|s), K fresh z_k ~ q(z|s),
  log q(t|s) ≈ log 1/(K+1) [q(t|z) + Σ_k q(t|z_k)],   w = q(t|z) / q(t|s) (no gradient),
  L(s->t) = w [log p(s|z) - log q(t|z) - KL(q(z|s) || q(z|t))] + c log q(t|s),
with t's encoder as the conditional prior, t's decoder as q(t|z), and c = 10 as in the authors' code
(the bound itself has c = 1); L_Bi = (L(s->t) + L(t->s)) / 2. A row observing only s: an ELBO whose
prior is 1/N Σ_i q(z | u_i) over N learnable pseudo-inputs u_i of t (eq. 4), initialised from data."""
from __future__ import annotations

import math

import torch
from torch import nn

from .common import log_normal, modalities, sample

K, C, PSEUDO = 10, 10.0, 100


def kl_gauss(mu1, lv1, mu2, lv2):
    return 0.5 * (lv2 - lv1 + (lv1.exp() + (mu1 - mu2) ** 2) / lv2.exp() - 1).sum(-1)


class MEME(nn.Module):
    fusion = "meme"

    def __init__(self, specs, init_rows):
        super().__init__()
        self.mods = modalities(specs)
        self.pseudo = nn.ParameterDict({m: nn.Parameter(init_rows[m][:PSEUDO].clone()) for m in specs})

    def pseudo_log_prior(self, m, z):
        """log 1/N Σ_i q(z | u_i) with u_i the pseudo-inputs of modality m; z (B, D) -> (B,)."""
        mu, logvar = self.mods[m].encode(self.pseudo[m])
        return torch.logsumexp(log_normal(z.unsqueeze(1), mu, logvar), 1) - math.log(mu.shape[0])

    def direction(self, s, t, x, enc):
        (mu_s, lv_s), (mu_t, lv_t) = enc[s], enc[t]
        z = sample(mu_s, lv_s)
        zs = torch.cat([z[None], sample(mu_s.expand(K, *mu_s.shape), lv_s.expand(K, *lv_s.shape))])
        log_q_t = self.mods[t].log_lik(self.mods[t].logits(zs), x[t])        # (K+1, B)
        log_q_t_s = torch.logsumexp(log_q_t, 0) - math.log(K + 1)
        w = (log_q_t[0] - log_q_t_s).exp().detach()
        rec = self.mods[s].log_lik(self.mods[s].logits(z), x[s])
        return w * (rec - log_q_t[0] - kl_gauss(mu_s, lv_s, mu_t, lv_t)) + C * log_q_t_s

    def loss(self, x, observed):
        s, t = self.mods
        enc = {m: self.mods[m].encode(x[m]) for m in (s, t)}
        paired = observed[s] * observed[t]
        total = paired * 0.5 * (self.direction(s, t, x, enc) + self.direction(t, s, x, enc))
        for m, other in ((s, t), (t, s)):
            alone = observed[m] * (1 - observed[other])
            if not bool(alone.any()):
                continue
            mu, logvar = enc[m]
            z = sample(mu, logvar)
            elbo = self.mods[m].log_lik(self.mods[m].logits(z), x[m]) - log_normal(z, mu, logvar) \
                + self.pseudo_log_prior(other, z)
            total = total + alone * elbo
        return -total.mean()
