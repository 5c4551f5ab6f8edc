"""MHVAE (Dorent et al. 2023; MultiVae's ``MHVAE.forward``): the ELBO of the hierarchical posterior given
each non-empty subset S of the modalities, averaged over the subsets. Per row (maximised):

    1/|𝒮| Σ_S [ Σ_m o_m λ_m log p(x_m | z_1^S) − β ( KL(q(z_L | x_S) ‖ p(z_L))
                                                   + Σ_{l<L} KL(q(z_l | x_S, z_{>l}^S) ‖ p(z_l | z_{>l}^S)) ) ]

z^S drawn top-down from the subset's posterior (one sample per level), every modality the row observes
reconstructed from every subset (cross reconstruction), missing modalities left out of the products of
experts and of the reconstruction (o_m). All subsets run as one batch of groups (``MHVAE.hierarchy``).
"""
from __future__ import annotations

import torch
from torch.distributions import Normal

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..fusion.fusions import nonempty_subsets, subset_masks


class MHVAEObjective:
    name = "mhvae"

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        names = [m for m in model.specs if m in batch.data]
        member = subset_masks(names, nonempty_subsets(names), next(iter(batch.data.values())).device)   # (S, M)
        levels = model.hierarchy(batch, member, noise)
        rec = model.reconstruction(levels[-1][4][:, None], batch)[:, 0]                              # (S, B)
        kl = sum(kl_to_prior(Normal(ql, qs), Normal(pl, ps)) for ql, qs, pl, ps, _ in levels)       # (S, B)
        loss = -(rec - beta * kl).mean()
        with torch.no_grad():
            logs = {"rec": rec.mean(), "kl": kl.mean(), "bound": (rec - kl).mean()}
        return loss, logs
