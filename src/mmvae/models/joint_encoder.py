"""A multimodal VAE with a joint encoder q(z | X) next to the unimodal experts q(z | x_m): JMVAE (Suzuki
et al. 2016) and TELBO (Vedantam et al. 2018). Everything else is :class:`MultimodalVAE`.

Inference given a subset S of the modalities (``posterior``/``encode``, so translation, embeddings and
likelihoods): all modalities → the joint encoder; otherwise the product of the experts in S without a
prior expert (one expert: the expert itself), MultiVae's ``_sample_from_poe_subset_exact``. The choice is
made per row, so a batch with partially observed rows mixes both.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..distributions.posteriors import make_posterior
from ..fusion.fusions import product_of_experts
from ..fusion.mixture import DiagonalMixture
from ..nets.joint import default_joint_encoder
from .multimodal import MultimodalVAE, _split


class JointEncoderVAE(MultimodalVAE):
    """``joint_encoder``: a network {m: x_m} -> (loc, raw_scale) over every modality (default:
    ``nets/joint.default_joint_encoder``); the other arguments are MultimodalVAE's (Gaussian experts)."""

    def __init__(self, specs: Mapping, latent_dim: int, objective, *, joint_encoder: nn.Module | None = None,
                 hidden: int = 512, **kwargs):
        super().__init__(specs, latent_dim, partial(product_of_experts, prior_expert=False), objective,
                         hidden=hidden, **kwargs)
        self.joint_encoder = joint_encoder if joint_encoder is not None else \
            default_joint_encoder(self.specs, self.latent_dim, hidden)

    def complete_rows(self, batch: Batch) -> Tensor | None:
        """(B,) rows observing every modality of the model, None when the batch lacks a modality."""
        if set(batch.data) != set(self.specs):
            return None
        rows = None
        for m in self.specs:
            rows = batch.mask[m] if rows is None else rows & batch.mask[m]
        return rows

    def joint_posterior(self, batch: Batch):
        """q(z | X) from the joint encoder on every row (rows must observe every modality)."""
        loc, raw = _split(self.joint_encoder({m: batch.data[m] for m in self.specs}), self.latent_dim)
        return make_posterior(self.posterior_family, loc, raw)

    def posterior(self, batch: Batch) -> DiagonalMixture:
        complete = self.complete_rows(batch)
        experts = None
        if complete is None or not bool(complete.all()):
            experts = self.fusion(self.encode_experts(batch), batch.mask)
            if complete is None or not bool(complete.any()):
                return experts
        q = self.joint_posterior(batch if bool(complete.all()) else batch.rows(complete))
        if experts is None:
            return DiagonalMixture(type(q), q.loc[None], q.scale[None], torch.ones_like(q.loc[None, :, 0]))
        idx = torch.nonzero(complete).squeeze(1)
        return DiagonalMixture(experts.family, experts.loc.index_copy(1, idx, q.loc[None]),
                               experts.scale.index_copy(1, idx, q.scale[None]), experts.weight)



def build_joint_model(specs, cfg, objective, name: str, encoders=None, decoders=None,
                      joint_encoder: nn.Module | None = None) -> JointEncoderVAE:
    """A JointEncoderVAE from a resolved Config (Gaussian posteriors; the prior option as for every model)."""
    from ..distributions.prior import prior_kind
    from ..errors import UserError

    if cfg.posterior != "normal":
        raise UserError(f"model '{name}' uses Gaussian encoders: posterior '{cfg.posterior}' does not fit; "
                        f"use --set posterior=normal")
    try:
        cfg.prior = prior_kind(cfg.prior)
        return JointEncoderVAE(specs, cfg.latent_dim, objective, joint_encoder=joint_encoder, posterior="normal",
                               prior=cfg.prior, likelihoods=cfg.likelihood, scales=cfg.scale,
                               default_scale=cfg.default_scale, weights=cfg.weights, hidden=cfg.hidden,
                               beta=cfg.beta, encoders=encoders, decoders=decoders)
    except ValueError as e:
        raise UserError(str(e)) from None
