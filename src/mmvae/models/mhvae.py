"""MHVAE, the multimodal hierarchical VAE (Dorent et al. 2023, "Unified Brain MR-Ultrasound Synthesis using
Multi-Modal Hierarchical Representations", MICCAI; MultiVae's ``MHVAE``): L levels of latents z_1 … z_L, the
prior p(z_L) Π_l p(z_l | z_{>l}) and, given the modalities S, the posterior Π_l q(z_l | x_S, z_{>l}) with
each level a product of experts: q(z_L | x_S) ∝ p(z_L) Π_{m∈S} q(z_L | x_m) and
q(z_l | x_S, z_{>l}) ∝ p(z_l | z_{>l}) Π_{m∈S} q(z_l | x_m, z_{>l}). The decoders read z_1.
Loss: ``objectives/mhvae.py``; blocks: ``nets/hierarchical.py``; docs/models/mhvae.md.

The user API works with z_1: ``encode`` gives q(z_1 | x_S, z_{>1}) along the path of posterior means,
``embed`` its mean, ``translate`` decodes z_1 from that path (``sample=True``: sampled at every level),
``generate`` samples the hierarchical prior, and ``log_likelihood`` estimates log p(x_S) by importance
sampling with the whole hierarchical posterior as proposal.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from ..config import Config
from ..data.batch import Batch
from ..distributions.noise import GLOBAL_NOISE, Noise
from ..errors import UserError
from ..fusion.mixture import DiagonalMixture
from ..fusion.poe import poe_params
from ..nets.hierarchical import ladder_blocks
from ..nets.joint import features
from ..objectives.mhvae import MHVAEObjective
from .multimodal import MultimodalVAE, _split
from .registry import model_option, register_model


def gaussian(out, dim: int) -> tuple[Tensor, Tensor]:
    loc, raw = _split(out, dim)
    return loc, F.softplus(raw) + 1e-6


class MHVAE(MultimodalVAE):
    """See the module docstring. ``blocks``: a ``nets/hierarchical.ladder_blocks``-shaped ModuleDict."""

    def __init__(self, specs: Mapping, latent_dim: int, *, levels: int = 3, blocks: nn.ModuleDict | None = None,
                 hidden: int = 512, activation: str | None = "silu", **kwargs):
        # Swish (SiLU) networks by default, the ones MHVAE was written and validated with: with the library's
        # ReLU default (issue 10) it stays at chance on the toy pairing of its learning test.
        super().__init__(specs, latent_dim, None, MHVAEObjective(), posterior="normal", hidden=hidden,
                         activation=activation, **kwargs)
        self.levels = int(levels)
        self.ladder = blocks if blocks is not None else \
            ladder_blocks(list(self.specs), self.levels, self.latent_dim, 2 * self.latent_dim, hidden, activation)

    def _bottom_up(self, batch: Batch, names: list[str]):
        """Features d_1 … d_{L−1} and the deepest expert (loc, scale) of each given modality; rows that miss a
        modality are encoded from zeros (their experts get no weight)."""
        skips, top = {}, {}
        for m in names:
            x, obs = batch.data[m], batch.mask[m]
            x = x if bool(obs.all()) else torch.where(obs.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))
            d = [features(self.encoders[m](x))]
            for block in self.ladder["bottom_up"][m][:-1]:
                d.append(block(d[-1]))
            skips[m], top[m] = d, gaussian(self.ladder["bottom_up"][m][-1](d[-1]), self.latent_dim)
        return skips, top

    def hierarchy(self, batch: Batch, member: Tensor, noise: Noise = GLOBAL_NOISE, sample: bool = True):
        """Top-down pass for G groups at once: ``member`` (G, M) says which given modalities (model order)
        enter group g's products of experts. Returns, deepest level first, (q_loc, q_scale, p_loc, p_scale, z)
        of shape (G, B, D); z_l is drawn with noise name ``"z<l>"`` (or is the mean, ``sample=False``)."""
        names = [m for m in self.specs if m in batch.data]
        skips, top = self._bottom_up(batch, names)
        g, b, d = member.shape[0], batch.size, self.latent_dim
        use = member.unsqueeze(-1) & torch.stack([batch.mask[m] for m in names]).unsqueeze(0)      # (G, M, B)
        use = torch.cat([use, torch.ones_like(use[:, :1])], 1)                                    # + prior expert

        def product(locs, scales, p_loc, p_scale):                       # experts (G, M, B, D) and the prior
            return poe_params(torch.cat([locs, p_loc[:, None]], 1), torch.cat([scales, p_scale[:, None]], 1),
                              use, prior_expert=False)

        p_loc = top[names[0]][0].new_zeros(g, b, d)
        p_scale = torch.ones_like(p_loc)
        loc, scale = product(torch.stack([top[m][0] for m in names]).expand(g, -1, -1, -1),
                             torch.stack([top[m][1] for m in names]).expand(g, -1, -1, -1), p_loc, p_scale)
        out = []
        for level in range(self.levels, 0, -1):
            if level < self.levels:
                z = out[-1][4]
                h = self.ladder["top_down"][level - 1](z.reshape(g * b, d))
                p_loc, p_scale = (t.reshape(g, b, d) for t in gaussian(self.ladder["prior"][level - 1](h), d))
                h = h.reshape(g, b, -1)
                experts = [gaussian(self.ladder["posterior"][m][level - 1](
                    torch.cat([h, skips[m][level - 1].expand(g, -1, -1)], -1).reshape(g * b, -1)), d) for m in names]
                loc, scale = product(torch.stack([e[0].reshape(g, b, d) for e in experts], 1),
                                     torch.stack([e[1].reshape(g, b, d) for e in experts], 1), p_loc, p_scale)
            z = noise.rsample(Normal(loc, scale), (), f"z{level}") if sample else loc
            out.append((loc, scale, p_loc, p_scale, z))
        return out

    def _given(self, data: Mapping[str, Tensor], mask=None) -> tuple[Batch, Tensor]:
        batch = Batch(dict(data), dict(mask or {}))
        n = sum(m in batch.data for m in self.specs)
        return batch, torch.ones(1, n, dtype=torch.bool, device=next(iter(batch.data.values())).device)

    # ------------------------------------------------------------------------------------ user API
    def posterior(self, batch: Batch) -> DiagonalMixture:
        """q(z_1 | x_S, z_{>1}) with z_{>1} at their posterior means."""
        loc, scale = self.hierarchy(*self._given(batch.data, batch.mask), sample=False)[-1][:2]
        return DiagonalMixture(Normal, loc, scale, torch.ones_like(loc[..., 0]))

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        return self.decode(self.hierarchy(*self._given(data), sample=sample)[-1][4][0], targets)

    @torch.no_grad()
    def generate(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Ancestral samples of the prior: z_L ~ N(0, I), z_l ~ p(z_l | z_{l+1}), decoded from z_1."""
        z = self.prior.sample((n,))
        for level in range(self.levels - 1, 0, -1):
            h = self.ladder["top_down"][level - 1](z)
            z = Normal(*gaussian(self.ladder["prior"][level - 1](h), self.latent_dim)).sample()
        return self.decode(z, modalities)

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, modalities: list[str] | None = None, k: int = 1000,
                       chunk: int = 100, noise: Noise = GLOBAL_NOISE) -> Tensor:
        """log p(x_S) ≈ log 1/K Σ_k p(x_S | z_1) p(z) / q(z | x_S), z ~ the hierarchical posterior (all levels),
        unweighted (λ = 1); (B,). The K samples run ``chunk`` at a time (noise names ``"z<l>"``, (chunk, B, D))."""
        batch = batch.select(modalities or list(batch.data))
        acc = None
        for start in range(0, k, chunk):
            g = min(chunk, k - start)
            member = torch.ones(g, len(batch.data), dtype=torch.bool, device=next(iter(batch.data.values())).device)
            levels = self.hierarchy(batch, member, noise)
            lw = sum(Normal(pl, ps).log_prob(z).sum(-1) - Normal(ql, qs).log_prob(z).sum(-1)
                     for ql, qs, pl, ps, z in levels)
            z1 = levels[-1][4]
            for m in batch.data:
                lw = lw + self.reconstruction(z1[:, None], batch.select([m]))[:, 0] / self.weights[m]
            part = torch.logsumexp(lw, 0)
            acc = part if acc is None else torch.logaddexp(acc, part)
        return acc - math.log(k)


@register_model("mhvae", "Dorent et al. 2023, Unified Brain MR-Ultrasound Synthesis using Multi-Modal Hierarchical "
                         "Representations (MICCAI; MultiVae's MHVAE)",
                "hierarchical latents z_1..z_L (option levels, default 3) with a product of experts and the "
                "level's prior at every level; ELBO averaged over all subsets of modalities; partially observed rows",
                dict(objective="elbo", kl="analytic", posterior="normal", weights="uniform", activation="silu"),
                min_modalities=2, options=("levels",))
def build_mhvae(specs, cfg: Config, encoders=None, decoders=None, blocks=None) -> MHVAE:
    if cfg.objective != "elbo" or cfg.kl != "analytic" or cfg.k != 1 or cfg.posterior != "normal":
        raise UserError("model 'mhvae' has its own loss with one sample per level and Gaussian posteriors: leave "
                        f"objective, kl, k and posterior unset (got objective={cfg.objective}, kl={cfg.kl}, "
                        f"k={cfg.k}, posterior={cfg.posterior})")
    levels = model_option(cfg, "levels", 3, int, lambda v: v >= 2, "a whole number of latent levels >= 2")
    try:
        return MHVAE(specs, cfg.latent_dim, levels=levels, blocks=blocks, hidden=cfg.hidden,
                     activation=cfg.activation, beta=cfg.beta,
                     likelihoods=cfg.likelihood, scales=cfg.scale, default_scale=cfg.default_scale,
                     weights=cfg.weights, encoders=encoders, decoders=decoders)
    except ValueError as e:
        raise UserError(str(e)) from None
