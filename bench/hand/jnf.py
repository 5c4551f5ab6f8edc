"""JNF by hand, stage 0 (Senellart & Allassonnière 2025, arXiv:2502.03952, the joint VAE trained before the
flows; MultiVae 1.0.3 ``JNF.forward`` for epoch ≤ warmup), β = ``model.beta``:

    E_{q(z | X)} [Σ_m λ_m log p(x_m | z)] − β KL(q(z | X) ‖ N(0, I)),

q(z | X) the joint encoder's Gaussian (σ = softplus(raw) + 1e-6), K samples (``model.objective.k``),
closed-form KL. The unimodal flows are trained in stage 1 only: this stage does not touch them. The
networks (joint encoder, decoders) are black boxes.

Noise: ``noise["z"]`` standard normal ε (K, B, D); None draws it.
"""

import torch
import torch.nn.functional as F

from .common import log_lik_kind as log_lik


def loss(model, x, noise=None):
    loc, raw = model.joint_encoder(x)
    scale = F.softplus(raw) + 1e-6
    k = model.objective.k
    z = loc + scale * (noise["z"] if noise is not None else torch.randn(k, *loc.shape).to(loc))   # (K, B, D)
    rec = sum(model.weights[m] * log_lik(model.specs[m].likelihood, model.decoders[m](z.flatten(0, 1)), x[m].repeat(k, 1))
              for m in model.specs)
    kl = 0.5 * (loc.square() + scale.square() - 1 - 2 * scale.log()).sum(-1)
    return -(rec.view(k, -1).mean(0) - model.beta * kl).mean()
