"""DMVAE by hand (Lee & Pavlovic, CVPR-W 2021; MultiVae 1.0.3 ``DMVAE._compute_elbo``), β = 1: the joint
ELBO (z from the product of experts with a N(0, I) prior expert) plus one ELBO per modality's shared expert
alone; each ELBO reconstructs every modality n from [z, w_n], w_n ~ q(w_n | x_n) (fresh per ELBO):

    ELBO(q_s) = Σ_n λ_n log p(x_n | z, w_n) − KL(q_s(z) ‖ N(0, I)) − Σ_n KL(q(w_n | x_n) ‖ N(0, I)),

one sample per ELBO, closed-form Gaussian KLs; scales softplus(raw) + 1e-6, the product inverting
σ² + 1e-8 (the library's guard). The library's networks are black boxes.

Noise: ``noise["z"]`` standard normal ε (1, M + 1, B, S + M·P) in the library's layout (stratum 0 the
product, then the experts in modality order; z from ε[..., :S], w_n from n's slot); None draws it.
"""

import torch
import torch.nn.functional as F

from .common import log_lik_kind as log_lik, kl_std as kl_std_normal


def loss(model, x, noise=None):
    names = list(model.specs)
    s, p, m = model.latent_dim, model.private_dim, len(names)
    enc = [model.encoders[n](x[n]) for n in names]
    penc = [model.private_encoders[n](x[n]) for n in names]
    loc = torch.stack([e[0] for e in enc])                                       # (M, B, S)
    scale = torch.stack([F.softplus(e[1]) + 1e-6 for e in enc])
    prec = 1 / (scale.square() + 1e-8)
    var = 1 / (1 + prec.sum(0))                                                  # product with N(0, I)
    loc = torch.cat([(var * (prec * loc).sum(0))[None], loc])                   # (M + 1, B, S): joint, experts
    scale = torch.cat([var.sqrt()[None], scale])
    eps = noise["z"][0] if noise is not None else torch.randn(m + 1, loc.shape[1], s + m * p).to(loc)
    z = loc + scale * eps[..., :s]
    elbo = -kl_std_normal(loc, scale)                                            # (M + 1, B)
    for i, n in enumerate(names):
        ploc, pscale = penc[i][0], F.softplus(penc[i][1]) + 1e-6
        w = ploc + pscale * eps[..., s + i * p: s + (i + 1) * p]                 # (M + 1, B, P)
        out = model.decoders[n](torch.cat([z, w], -1).flatten(0, 1)).view(m + 1, -1, *x[n].shape[1:])
        elbo = elbo + model.weights[n] * log_lik(model.specs[n].likelihood, out, x[n])
        elbo = elbo - kl_std_normal(ploc, pscale)
    return -elbo.sum(0).mean()
