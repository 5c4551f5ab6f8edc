"""MVAE (Wu & Goodman 2018): q(z | X) ∝ p(z) Π_m q(z | x_m), a product of Gaussian experts with the
N(0, I) prior as one more expert (precision-weighted mean, variance 1 / Σ precisions). The loss is the
ELBO of the joint subset plus the ELBO of every single modality (eq. 5 with no random extra subsets);
a row that observes one modality contributes only that modality's ELBO."""
from __future__ import annotations

import torch
from torch import nn

from .common import kl_to_standard, modalities, sample


def product_of_experts(mu, logvar, use):
    """mu, logvar (M, B, D); use (M, B) in {0, 1}: which experts join the prior expert N(0, I)."""
    precision = (-logvar).exp() * use.unsqueeze(-1)
    total = 1.0 + precision.sum(0)
    return (mu * precision).sum(0) / total, -total.log()


class MVAE(nn.Module):
    fusion = "poe"

    def __init__(self, specs):
        super().__init__()
        self.mods = modalities(specs)

    def subset_elbo(self, x, mu, logvar, use):
        """ELBO of the subset ``use`` (M, B): its product posterior, its members reconstructed."""
        pmu, plogvar = product_of_experts(mu, logvar, use)
        z = sample(pmu, plogvar)
        rec = sum(use[i] * net.log_lik(net.logits(z), x[m]) for i, (m, net) in enumerate(self.mods.items()))
        return rec - kl_to_standard(pmu, plogvar)

    def loss(self, x, observed):
        names = list(self.mods)
        obs = torch.stack([observed[m] for m in names])
        mu, logvar = (torch.stack(t) for t in zip(*(self.mods[m].encode(x[m]) for m in names)))
        total = obs.prod(0) * self.subset_elbo(x, mu, logvar, obs)        # rows observing everything
        for i in range(len(names)):
            alone = torch.zeros_like(obs)
            alone[i] = obs[i]
            total = total + obs[i] * self.subset_elbo(x, mu, logvar, alone)
        return -total.mean()
