"""TELBO, the triple ELBO (Vedantam, Fischer, Huang & Murphy, ICLR 2018, "Generative Models of Visually
Grounded Imagination"; official code google/joint_vae, ``MultimodalElboLoss`` with the paper runs'
``stop_elbox_gradient = stop_elboy_gradient = 1``).

With the joint encoder q(z | X) and unimodal encoders q(z | x_m), per row (maximised):

    L = [E_{q(z|X)} Σ_m λ_m log p(x_m | z) − β KL(q(z|X) ‖ p)]                 (rows observing every modality)
        + Σ_{m observed} [E_{q(z|x_m)} λ_m log p̄(x_m | z) − β KL(q(z|x_m) ‖ p)]

p̄ is the decoder (and likelihood) with its parameters held fixed: the unimodal ELBOs train the unimodal
encoders only, the decoders learn from the joint ELBO (the official code's stop-gradient flags, set in the
paper's runs: ``trainable=False`` decoders for those terms). The paper sums the three ELBOs; the official
code averages the available ones per row (a per-row constant factor). Noise names: ``"z"`` (K, B_complete, D) for the joint posterior on the complete
rows, ``"z/<m>"`` (K, B, D) for expert m on every row (unobserved rows are not scored).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..distributions.noise import GLOBAL_NOISE
from ..distributions.posteriors import accumulation_dtype, kl_to_prior


class _Score(nn.Module):
    """log p(x | z) through a decoder and its likelihood: one module, so both can be called with fixed parameters."""

    def __init__(self, decoder: nn.Module, likelihood: nn.Module):
        super().__init__()
        self.decoder, self.likelihood = decoder, likelihood

    def forward(self, z, x):
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood.log_prob(out.reshape(*z.shape[:-1], *out.shape[1:]), x)


def frozen_log_likelihood(model, m: str, z, x):
    """log p(x_m | z) for z (K, B, D) with the decoder's and likelihood's parameters detached (gradient to z only)."""
    score = _Score(model.decoders[m], model.likelihoods[m])
    fixed = {n: p.detach() for n, p in score.named_parameters()}
    return functional_call(score, fixed, (z, x))


class TELBOObjective:
    """The loss (negative L above, averaged over rows) of a :class:`JointEncoderVAE`."""

    name = "telbo"

    def __init__(self, k: int = 1):
        self.k = int(k)

    def __call__(self, model, batch, beta: float, noise=GLOBAL_NOISE):
        experts = model.encode_experts(batch)
        loc = next(iter(experts.values())).loc
        total = loc.new_zeros(batch.size, dtype=accumulation_dtype(loc.dtype))            # (B,) L per row
        joint_bound = total.new_zeros(())
        complete = model.complete_rows(batch)
        if complete is not None and bool(complete.any()):
            rows = batch if bool(complete.all()) else batch.rows(complete)
            q = model.joint_posterior(rows)
            z = noise.rsample(q, (self.k,), "z")                                  # (K, B_c, D)
            joint = model.reconstruction(z[None], rows)[0].mean(0) - beta * kl_to_prior(q, model.prior)
            total = total.index_add(0, torch.nonzero(complete).squeeze(1), joint)
            joint_bound = joint.detach().sum() / batch.size
        for m, q_m in experts.items():
            z_m = noise.rsample(q_m, (self.k,), f"z/{m}")                          # (K, B, D)
            x, observed = batch.data[m], batch.mask[m]
            if not bool(observed.all()):
                x = torch.where(observed.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))
            rec = model.weights[m] * frozen_log_likelihood(model, m, z_m, x).mean(0)
            total = total + torch.where(observed, rec - beta * kl_to_prior(q_m, model.prior), torch.zeros_like(rec))
        loss = -total.mean()
        with torch.no_grad():
            logs = {"bound": total.mean(), "joint_bound": joint_bound, "unimodal_bound": total.mean() - joint_bound}
        return loss, logs
