"""MVTCAE's total-correlation objective (Hwang et al., NeurIPS 2021, "Multi-View Representation Learning
via Total Correlation Objective"; official code gr8joo/MVTCAE, ``run_epochs.py``, method ``tc``).

With q(z | X) the product of the observed experts (no prior expert) and M modalities, per row (maximised):

    L = (M − α)/M · E_{q(z|X)}[Σ_m λ_m log p(x_m | z)]
        − β [ α/M · Σ_m KL(q(z|X) ‖ q(z|x_m)) + (1 − α) · KL(q(z|X) ‖ p(z)) ]

α trades the conditional (cross-view) information bottleneck against the joint one; the official
PolyMNIST run uses α = 5/6, β = 2.5. Only observed modalities are reconstructed and only observed experts
enter the product and the KL sum (MultiVae's treatment of incomplete rows; the paper trains on complete
rows only). The expectation uses K reparameterised samples (K = 1 in the paper).
"""
from __future__ import annotations

import torch

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..fusion.poe import require_normal


def single_component(post):
    """The one component of a product-of-experts posterior as a (B, D) distribution."""
    return post.family(post.loc[0], post.scale[0], validate_args=False)


def expert_kls(q, experts: dict, masks: dict):
    """Σ_m mask_m · KL(q ‖ q(z | x_m)) per row (B,), over the observed experts only."""
    total = 0.0
    for m, expert in experts.items():
        total = total + torch.where(masks[m], kl_to_prior(q, expert), torch.zeros_like(expert.loc[..., 0]))
    return total


class MVTCAEObjective:
    """The loss (negative L above, averaged over rows) of a MultimodalVAE with a ``poe`` fusion."""

    name = "mvtcae"

    def __init__(self, alpha: float, k: int = 1):
        self.alpha = float(alpha)
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        experts = model.encode_experts(batch)
        require_normal(experts, "MVTCAE's product of experts")
        post = model.fusion(experts, batch.mask)
        z = post.rsample_stratified(self.k, noise)                                   # (1, K, B, D)
        rec = model.reconstruction(z, batch)[0].mean(0)                             # (B,)
        q = single_component(post)
        kl_joint = kl_to_prior(q, model.prior)
        kl_views = expert_kls(q, experts, batch.mask)
        m, a = len(model.specs), self.alpha
        objective = (m - a) / m * rec - beta * (a / m * kl_views + (1 - a) * kl_joint)
        loss = -objective.mean()
        with torch.no_grad():
            logs = {"rec": rec.mean(), "kl": kl_joint.mean(), "kl_views": kl_views.mean(), "bound": objective.mean()}
        return loss, logs
