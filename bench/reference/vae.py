"""VAE (Kingma & Welling 2014) on one modality: ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))."""
from __future__ import annotations

from torch import nn

from .common import kl_to_standard, modalities, sample


class VAE(nn.Module):
    fusion = "single"

    def __init__(self, specs):
        super().__init__()
        self.mods = modalities(specs)

    def loss(self, x, observed):
        (m, net), = self.mods.items()
        mu, logvar = net.encode(x[m])
        z = sample(mu, logvar)
        return -(net.log_lik(net.logits(z), x[m]) - kl_to_standard(mu, logvar)).mean()
