"""CMVAE by hand (Palumbo, Manduchi, Laguna, Chopard & Vogt, ICLR 2024, Sec. 3; MultiVae 1.0.3 ``CMVAE``):
MMVAE+'s stratified IWAE with the authors' DReG (``hand/mmvaeplus.py``, K = 3, β = 1) whose shared prior is
the learned cluster mixture p(z) = Σ_c π_c Laplace(z; μ_c, 1), π = softmax(logits), and p(w_m) = Laplace(0, 1).
The paper's expectation over q(c | z, X) = p(c | z) of [log π_c + log p(z | c) − log q(c | z, X)] is
log Σ_c π_c p(z | c) exactly, written so here. Noise: as hand/mmvaeplus.py.
"""
import math

import torch
import torch.nn.functional as F

from . import mmvaeplus


def cluster_prior(model, z, w):
    prior = model.shared_prior                                       # logits (C,), centres (C, S)
    log_pz = torch.logsumexp(F.log_softmax(prior.logits, -1)
                             - ((z.unsqueeze(-2) - prior.centres).abs() + math.log(2)).sum(-1), -1)
    return log_pz - (w.abs() + math.log(2)).sum(-1)


def loss(model, x, noise=None):
    return mmvaeplus.loss(model, x, noise, cluster_prior)
