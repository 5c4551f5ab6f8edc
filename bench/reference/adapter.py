"""The library's evaluation API around a reference model, so mmvae.evaluation scores both the same way.

Glue only (it imports the library's DiagonalMixture and Batch types): the reference loops themselves
stay free of library code. The fused posterior follows each model's paper: the encoder itself (vae),
the product with a prior expert (mvae), the uniform mixture of experts (mmvae; meme for API uniformity,
as the library's MEME), the uniform mixture of subset products (mopoe).
"""
from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import nn
from torch.distributions import Normal

from mmvae.data.batch import Batch
from mmvae.fusion.mixture import DiagonalMixture

from .common import LATENT, log_normal


class Adapter(nn.Module):
    has_fused_posterior = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.fusion, self.latent_dim, self.weights = model, model.fusion, LATENT, {}
        self.register_buffer("_zero", torch.zeros(LATENT), persistent=False)

    @property
    def modalities(self):
        return list(self.model.mods)

    @property
    def prior(self):
        return Normal(self._zero, torch.ones_like(self._zero))

    def posterior(self, batch: Batch) -> DiagonalMixture:
        names = list(batch.data)
        obs = torch.stack([batch.mask[m] for m in names]).to(self._zero.dtype)          # (M, B)
        mu, logvar = (torch.stack(t) for t in zip(*(self.model.mods[m].encode(batch.data[m]) for m in names)))
        if self.fusion in ("moe", "meme") or (self.fusion == "single" and len(names) == 1):
            return DiagonalMixture(Normal, mu, (0.5 * logvar).exp(), obs / obs.sum(0).clamp_min(1))
        groups = [s for r in range(1, len(names) + 1) for s in combinations(range(len(names)), r)] \
            if self.fusion == "mopoe" else [tuple(range(len(names)))]
        locs, scales, usable = [], [], []
        for s in groups:
            precision = (-logvar[list(s)]).exp() * obs[list(s)].unsqueeze(-1)
            total = precision.sum(0) + (1.0 if self.fusion == "poe" else 0.0)       # MVAE's prior expert
            locs.append((mu[list(s)] * precision).sum(0) / total)
            scales.append(total.rsqrt())
            usable.append(obs[list(s)].prod(0))
        w = torch.stack(usable)
        return DiagonalMixture(Normal, torch.stack(locs), torch.stack(scales), w / w.sum(0).clamp_min(1))

    def reconstruction(self, z, batch: Batch, members=None):
        """Σ_m log p(x_m | z) over the observed rows (unweighted): z (G, K, B, D) -> (G, K, B)."""
        total = 0.0
        for m, x in batch.data.items():
            net = self.model.mods[m]
            total = total + batch.mask[m] * net.log_lik(net.logits(z), x)
        return total

    @torch.no_grad()
    def encode(self, data, mask=None):
        return self.posterior(Batch(dict(data), dict(mask or {})))

    @torch.no_grad()
    def embed(self, data):
        return self.encode(data).mean

    @torch.no_grad()
    def decode(self, z, modalities=None):
        return {m: self.model.mods[m].mean(self.model.mods[m].logits(z)) for m in (modalities or self.modalities)}

    @torch.no_grad()
    def translate(self, data, targets=None, sample=False):
        post = self.encode(data)
        return self.decode(post.rsample(1)[0] if sample else post.mean, targets)

    @torch.no_grad()
    def generate(self, n, modalities=None):
        return self.decode(self.prior.sample((n,)), modalities)


class FactorisedAdapter(Adapter):
    """The factorised MMVAE is its MMVAE for generation; latent accuracy probes both latents per modality."""

    @torch.no_grad()
    def latent_representations(self, data):
        out = {}
        for m, x in data.items():
            out[f"{m}/shared"] = self.model.mods[m].encode(x)[0]
            out[f"{m}/private"] = self.model.private[m].encode(x)[0]
        return out


class MemeAdapter(Adapter):
    """MEME has no joint posterior; its prior is the pseudo-sample mixture (eq. 4) of both modalities."""

    has_fused_posterior = False

    @torch.no_grad()
    def generate(self, n, modalities=None):
        comps = [self.model.mods[m].encode(self.model.pseudo[m]) for m in self.modalities]
        mu, logvar = torch.cat([c[0] for c in comps]), torch.cat([c[1] for c in comps])
        pick = torch.randint(0, mu.shape[0], (n,))
        return self.decode(mu[pick] + (0.5 * logvar[pick]).exp() * torch.randn(n, mu.shape[1]), modalities)

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, modalities=None, k: int = 1000, chunk: int = 100):
        """log p(x_m) by importance sampling with q(z|x_m) under the prior of a row observing only m (the
        other modality's pseudo-sample prior), as the library's MEME; NaN for the (undefined) joint."""
        modalities = list(modalities or batch.modalities)
        x = batch.data[modalities[0]]
        if len(modalities) != 1:
            return torch.full((x.shape[0],), float("nan"))
        m = modalities[0]
        other = next(o for o in self.modalities if o != m)
        net = self.model.mods[m]
        mu, logvar = net.encode(x)
        total = None
        for start in range(0, k, chunk):
            z = mu + (0.5 * logvar).exp() * torch.randn(min(chunk, k - start), *mu.shape)
            lw = net.log_lik(net.logits(z), x) + self.model.pseudo_log_prior(other, z.reshape(-1, mu.shape[1])) \
                .view(z.shape[:2]) - log_normal(z, mu, logvar)
            part = torch.logsumexp(lw, 0)
            total = part if total is None else torch.logaddexp(total, part)
        return total - math.log(k)


def adapt(model: nn.Module) -> Adapter:
    if model.fusion == "meme":
        return MemeAdapter(model)
    return (FactorisedAdapter if hasattr(model, "private") else Adapter)(model)
