"""MoPoE (Sutter, Daunhawer & Vogt 2021): the posterior is the uniform mixture, over every non-empty
subset S of the observed modalities, of the product of S's Gaussian experts. Objective (eq. 6, sampled
stratified, one z per subset): mean over usable S of [Σ_m log p(x_m | z_S) - KL(q_S || N(0, I))]."""
from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from .common import kl_to_standard, modalities, sample


def subsets(names):
    return [s for r in range(1, len(names) + 1) for s in combinations(range(len(names)), r)]


def product(mu, logvar, members):
    """The product of the member experts (no prior expert): precision-weighted mean, 1 / Σ precisions."""
    precision = (-logvar[list(members)]).exp()
    total = precision.sum(0)
    return (mu[list(members)] * precision).sum(0) / total, -total.log()


class MoPoE(nn.Module):
    fusion = "mopoe"

    def __init__(self, specs):
        super().__init__()
        self.mods = modalities(specs)

    def loss(self, x, observed):
        names = list(self.mods)
        obs = torch.stack([observed[m] for m in names])
        mu, logvar = (torch.stack(t) for t in zip(*(self.mods[m].encode(x[m]) for m in names)))
        total, count = 0.0, 0.0
        for s in subsets(names):
            usable = obs[list(s)].prod(0)                                 # the row observes all of S
            smu, slogvar = product(mu, logvar, s)
            z = sample(smu, slogvar)
            rec = sum(obs[n] * self.mods[m].log_lik(self.mods[m].logits(z), x[m]) for n, m in enumerate(names))
            total = total + usable * (rec - kl_to_standard(smu, slogvar))
            count = count + usable
        return -(total / count).mean()
