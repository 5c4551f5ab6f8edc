"""Pieces every hand-written reference loop shares: one MLP encoder/decoder pair per modality, the two
likelihoods, diagonal-Gaussian helpers and a wall-clock-limited Adam loop.

The references are the plainest correct versions of each model (Gaussian posteriors, N(0, I) prior,
Bernoulli likelihood for anything in [0, 1], Categorical for one-hot labels and words, MLPs of 400
units, naive single-sample objectives, Adam 1e-3, batch 128): the bar the library's defaults must
clear at equal wall time (docs/results/quality.md). Only data loading comes from the library: the loop
receives the rows (``data.batch(index)`` gives tensors and observed masks) and nothing else.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

LATENT, HIDDEN = 20, 400


class Modality(nn.Module):
    """q(z | x) = N(mu, exp(logvar)) from an MLP; p(x | z) parameterised by logits from another MLP.
    ``kind``: ``categorical`` (softmax over the last axis: labels, words) or ``bernoulli`` (the rest)."""

    def __init__(self, shape, kind: str, latent: int = LATENT, hidden: int = HIDDEN):
        super().__init__()
        self.shape, self.kind, d = tuple(shape), kind, math.prod(shape)
        self.enc = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def encode(self, x):
        mu, logvar = self.enc(x.flatten(1)).chunk(2, -1)
        return mu, logvar

    def logits(self, z):
        return self.dec(z).view(*z.shape[:-1], *self.shape)

    def log_lik(self, logits, x):
        """log p(x | z) summed over the event, for logits (..., B, *shape) and x (B, *shape)."""
        if self.kind == "categorical":  # one-hot rows; all-zero rows (text padding) score 0
            lp = (x * F.log_softmax(logits, -1)).sum(-1)
            return lp.flatten(lp.dim() - len(self.shape) + 1).sum(-1) if len(self.shape) > 1 else lp
        lp = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        return lp.flatten(lp.dim() - len(self.shape)).sum(-1)

    def mean(self, logits):
        return F.softmax(logits, -1) if self.kind == "categorical" else torch.sigmoid(logits)


def modalities(specs) -> nn.ModuleDict:
    return nn.ModuleDict({m: Modality(s.shape, "categorical" if s.kind in ("categorical", "text") else "bernoulli")
                          for m, s in specs.items()})


def sample(mu, logvar):
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


def log_normal(z, mu, logvar):
    """log N(z; mu, exp(logvar)) summed over the latent axis."""
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())).sum(-1)


def kl_to_standard(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent axis."""
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)


def train_for(model: nn.Module, data, budget: float, seed: int, batch_size: int = 128, lr: float = 1e-3) -> int:
    """Adam on ``model.loss(x, observed)`` over shuffled minibatches until ``budget`` seconds have passed;
    returns the number of steps taken."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    steps, start = 0, time.time()
    while True:
        for index in torch.randperm(len(data), generator=g).split(batch_size):
            batch = data.batch(index)
            loss = model.loss(batch.data, {m: o.float() for m, o in batch.mask.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.time() - start >= budget:
                return steps
