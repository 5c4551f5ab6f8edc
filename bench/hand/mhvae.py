"""MHVAE by hand (Dorent et al., MICCAI 2023, Fig. 1; MultiVae 1.0.3 ``MHVAE.forward``), β = 1: for every
non-empty subset S of the modalities, the ELBO of the hierarchical posterior, averaged over the subsets:

    Σ_m λ_m log p(x_m | z_1) − KL(q(z_L | x_S) ‖ N(0, I)) − Σ_{l<L} KL(q(z_l | x_S, z_{>l}) ‖ p(z_l | z_{>l})),

z drawn top-down (one sample per level), each level's posterior the product of the subset's Gaussian experts
and the level's prior (σ = softplus(raw) + 1e-6; precisions 1 / (σ² + 1e-8), the library's guard).
Networks (encoders, ladder blocks, decoders) are black boxes; the encoder's (loc, raw) concatenated are d_1.

Noise: ``noise["z<l>"]`` standard normal ε (|𝒮|, B, D) per level l, subsets in itertools.combinations
order by size; None draws them.
"""
from itertools import combinations

import torch
import torch.nn.functional as F

from .common import log_lik_kind as log_lik


def gauss(out):
    return out[0], F.softplus(out[1]) + 1e-6


def product(member, locs, scales, p_loc, p_scale):
    """PoE of the experts (M, G·B, D) selected by ``member`` (G, M) and the prior (G·B, D)."""
    g = member.shape[0]
    prec = (1 / (scales.square() + 1e-8)).unflatten(1, (g, -1)) * member.t()[:, :, None, None]
    p_prec = 1 / (p_scale.square() + 1e-8)
    total = prec.sum(0).flatten(0, 1) + p_prec
    mean = ((prec * locs.unflatten(1, (g, -1))).sum(0).flatten(0, 1) + p_prec * p_loc) / total
    return mean, total.rsqrt()


def kl(ql, qs, pl, ps):
    return (torch.log(ps / qs) + (qs.square() + (ql - pl).square()) / (2 * ps.square()) - 0.5).sum(-1)


def loss(model, x, noise=None):
    names, lad, L, d = list(model.specs), model.ladder, model.levels, model.latent_dim
    subsets = [c for r in range(1, len(names) + 1) for c in combinations(range(len(names)), r)]
    member = torch.tensor([[float(i in c) for i in range(len(names))] for c in subsets]).to(x[names[0]])
    g, b = len(subsets), x[names[0]].shape[0]
    skips, tops = [], []
    for m in names:
        h = [torch.cat(model.encoders[m](x[m]), -1)]
        for block in lad["bottom_up"][m][:-1]:
            h.append(block(h[-1]))
        skips.append(h)
        tops.append(gauss(lad["bottom_up"][m][-1](h[-1])))
    rep = lambda t: t.repeat(g, 1)                                          # (B, ·) -> (G·B, ·)
    eps = noise if noise is not None else {f"z{l}": torch.randn(g, b, d).to(member) for l in range(1, L + 1)}
    zero = member.new_zeros(g * b, d)
    ql, qs = product(member, torch.stack([rep(t[0]) for t in tops]), torch.stack([rep(t[1]) for t in tops]),
                     zero, zero + 1)
    z = ql + qs * eps[f"z{L}"].flatten(0, 1)
    total_kl = kl(ql, qs, zero, zero + 1)
    for level in range(L - 1, 0, -1):
        h = lad["top_down"][level - 1](z)
        pl, ps = gauss(lad["prior"][level - 1](h))
        experts = [gauss(lad["posterior"][m][level - 1](torch.cat([h, rep(skips[i][level - 1])], -1)))
                   for i, m in enumerate(names)]
        ql, qs = product(member, torch.stack([e[0] for e in experts]), torch.stack([e[1] for e in experts]), pl, ps)
        z = ql + qs * eps[f"z{level}"].flatten(0, 1)
        total_kl = total_kl + kl(ql, qs, pl, ps)
    rec = sum(model.weights[m] * log_lik(model.specs[m].likelihood, model.decoders[m](z), rep(x[m]))
              for m in names)
    return -(rec - total_kl).mean()
