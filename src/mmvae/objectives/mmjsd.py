"""mmJSD (Sutter, Daunhawer & Vogt, NeurIPS 2020; official code thomassutter/mmjsd, method ``jsd``).

The experts q_m = q(z | x_m) and the prior q_0 = p(z) are compared with their dynamic prior f, the
π-weighted geometric mean of all of them (``fusion/dynamic_prior.py``). Per row (maximised):

    L = E_{z ~ q(z|X)}[Σ_m λ_m log p(x_m | z)] − β Σ_{j=0}^{M} π_j KL(q_j ‖ f)

with q(z | X) = (1/|S|) Σ_{m∈S} q(z | x_m) the mixture of the observed experts: every reconstruction is
decoded from a sample of *one unimodal posterior* (the official ``mixture_component_selection`` gives each
expert a block of the batch's rows; here the expert is drawn per row and sample, the same expectation).
π is uniform over the prior and the observed experts (the official default 1/(M+1) each).
"""
from __future__ import annotations

import torch

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import kl_to_prior
from ..fusion.dynamic_prior import weighted_geometric_mean
from ..fusion.poe import require_normal


def js_divergence(experts: dict, masks: dict, prior):
    """Σ_j π_j KL(q_j ‖ f) per row (B,) over the prior (j = 0) and the observed experts, π uniform, and f."""
    names = list(experts)
    b, d = experts[names[0]].loc.shape
    locs = torch.stack([prior.loc.expand(b, d)] + [experts[m].loc for m in names])
    scales = torch.stack([prior.scale.expand(b, d)] + [experts[m].scale for m in names])
    seen = torch.stack([torch.ones_like(masks[names[0]])] + [masks[m] for m in names]).to(locs.dtype)
    pi = seen / seen.sum(0)                                                        # (M + 1, B)
    loc, scale = weighted_geometric_mean(locs, scales, pi)
    f = type(experts[names[0]])(loc, scale, validate_args=False)
    kls = kl_to_prior(type(f)(locs, scales, validate_args=False), f)              # (M + 1, B) KL(q_j ‖ f)
    return (pi * kls).sum(0), f


class MMJSDObjective:
    """The loss (negative L above, averaged over rows) of a MultimodalVAE with the ``moe`` fusion."""

    name = "mmjsd"

    def __init__(self, k: int = 1):
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        experts = model.encode_experts(batch)
        require_normal(experts, "mmJSD's dynamic prior (a product of Gaussian experts)")
        post = model.fusion(experts, batch.mask)
        z = post.rsample(self.k, noise)                                             # (K, B, D), one expert each
        rec = model.reconstruction(z[None], batch)[0].mean(0)                      # (B,)
        js, _ = js_divergence(experts, batch.mask, model.prior)
        objective = rec - beta * js
        loss = -objective.mean()
        with torch.no_grad():
            logs = {"rec": rec.mean(), "kl": js.mean(), "bound": objective.mean()}
        return loss, logs
