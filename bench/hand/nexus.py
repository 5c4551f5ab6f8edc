"""Nexus by hand (Vasco, Yin, Melo & Paiva, Neural Networks 146, 2022, §3; official code
miguelsvasco/nexus_pytorch ``Trainer.nexus_loss_function``, ``mean_drop``; MultiVae 1.0.3 ``Nexus``), after
the warm-up (both levels' KLs at full weight, the nexus KL weight β = ``model.beta``):

    bottom = Σ_m λ_m log p(x_m | z_m) − β_m KL(q(z_m | x_m) ‖ N(0, I)),               z_m ~ q(z_m | x_m)
    top    = Σ_m γ_m log N(z̄_m; g_m(z_σ), I) − β KL(q(z_σ | h) ‖ N(0, I)),             z_σ ~ q(z_σ | h)
    h      = mean of the messages f_m(z̄_m) kept by forced perceptual dropout,           z̄_m = sg(z_m)

Gaussian heads σ = softplus(raw) + 1e-6. Dropout (rate ``model.dropout``, training only): a row keeps all
modalities with probability 1 − rate, else a proper non-empty subset, its size uniform on 1..M−1 and the
subset uniform among those of that size (``mean_drop``). The networks are black boxes.

Noise: ``noise["z/<m>"]`` (B, d) and ``noise["nexus"]`` (B, D) standard normal, ``noise["dropout"]`` (1, B)
the subset index per row (subsets in itertools.combinations order by size); None draws them.
"""
import math
from itertools import combinations

import torch
import torch.nn.functional as F

from .common import log_lik_kind as log_lik, kl_std as kl_std_normal


def kept(model, b, noise, like):
    """(M, B) which messages each row's nexus reads (forced perceptual dropout on complete rows)."""
    m = len(model.specs)
    subsets = [c for r in range(1, m + 1) for c in combinations(range(m), r)]
    member = torch.tensor([[float(i in c) for i in range(m)] for c in subsets]).to(like)
    if not (model.training and model.dropout > 0):
        return member[-1:].t().expand(m, b)
    if noise is not None:
        pick = noise["dropout"][0]
    else:
        p = torch.tensor([model.dropout / ((m - 1) * math.comb(m, len(c))) for c in subsets])
        p[-1] = 1 - model.dropout
        pick = torch.multinomial(p, b, replacement=True)
    return member[pick].t()


def loss(model, x, noise=None):
    names = list(model.specs)
    bound, z_bar = 0.0, []
    for m in names:
        loc, raw = model.encoders[m](x[m])
        scale = F.softplus(raw) + 1e-6
        z = loc + scale * (noise[f"z/{m}"] if noise is not None else torch.randn_like(loc))
        bound = bound + model.weights[m] * log_lik(model.specs[m].likelihood, model.decoders[m](z), x[m])
        bound = bound - model.bottom_betas[m] * kl_std_normal(loc, scale)
        z_bar.append(z.detach())
    keep = kept(model, z_bar[0].shape[0], noise, z_bar[0])
    msgs = torch.stack([model.messages[m](z) for m, z in zip(names, z_bar)])       # (M, B, F)
    h = (keep.unsqueeze(-1) * msgs).sum(0) / keep.sum(0).unsqueeze(-1)
    loc, raw = model.nexus_encoder(h)
    scale = F.softplus(raw) + 1e-6
    z_top = loc + scale * (noise["nexus"] if noise is not None else torch.randn_like(loc))
    for m, z in zip(names, z_bar):
        bound = bound - 0.5 * model.gammas[m] * ((z - model.top_decoders[m](z_top)).square().sum(-1)
                                                 + z.shape[-1] * math.log(2 * math.pi))
    return -(bound - model.beta * kl_std_normal(loc, scale)).mean()
