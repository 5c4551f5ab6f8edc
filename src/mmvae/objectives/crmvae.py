"""CRMVAE (Suzuki & Matsuo 2023, "Mitigating the Limitations of Multimodal VAEs with Coordination-based
Approach"): a coordination-based model — the product-of-experts posterior q(z | X) (no prior expert)
is pulled toward each unimodal posterior as in MVTCAE — plus *unimodal reconstruction* terms, so that
every decoder also learns to decode samples of the unimodal posteriors (cross-modal generation).

Objective as MultiVae 1.0.3 computes it (``CRMVAE.forward``; no official code is public), per row
(maximised), M modalities, S the observed ones:

    L = 1/(2(M+1)) Σ_{m∈S} λ_m [E_{q(z|X)} log p(x_m | z) + E_{q(z|x_m)} log p(x_m | z)]
        − β/(M+1) [KL(q(z|X) ‖ p(z)) + Σ_{m∈S} KL(q(z|X) ‖ q(z|x_m))]

Noise names: ``"z"`` (K, 1, B, D) for q(z | X), ``"z/<m>"`` (K, B, D) for q(z | x_m) on every row.
"""
from __future__ import annotations

import torch

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..fusion.poe import require_normal
from .mvtcae import expert_kls, single_component


class CRMVAEObjective:
    """The loss (negative L above, averaged over rows) of a MultimodalVAE with a ``poe`` fusion."""

    name = "crmvae"

    def __init__(self, k: int = 1):
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        experts = model.encode_experts(batch)
        require_normal(experts, "CRMVAE's product of experts")
        post = model.fusion(experts, batch.mask)
        names = list(experts)
        z_joint = post.rsample_stratified(self.k, noise)[0]                                           # (K, B, D)
        z_uni = [noise.rsample(experts[m], (self.k,), f"z/{m}") for m in names]                       # M x (K, B, D)
        # One decoder call per modality on the joint and its own unimodal samples together (strata 0 and 1 + m)
        rec = model.reconstruction(torch.stack([z_joint, *z_uni]), batch,
                                   [tuple(names)] + [(m,) for m in names])                            # (1 + M, K, B)
        rec_joint, rec_uni = rec[0].mean(0), rec[1:].mean(1).sum(0)                                   # (B,) each
        q = single_component(post)
        kl = kl_to_prior(q, model.prior) + expert_kls(q, experts, batch.mask)
        m = len(model.specs)
        objective = (rec_joint + rec_uni) / (2 * (m + 1)) - beta * kl / (m + 1)
        loss = -objective.mean()
        with torch.no_grad():
            logs = {"rec": rec_joint.mean(), "rec_unimodal": rec_uni.mean(), "kl": kl.mean(),
                    "bound": objective.mean()}
        return loss, logs
