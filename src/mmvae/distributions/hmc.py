"""Hamiltonian Monte Carlo for densities known up to a constant (Neal 2011, "MCMC using Hamiltonian
dynamics", §5.2: leapfrog steps and a Metropolis correction), one independent chain per row.

Used to sample a product of flow posteriors, which has no closed form (JNF given a subset of the
modalities; Senellart et al. 2025, MultiVae's ``_sample_from_poe_subset``: 100 steps of 10 leapfrog
steps of size 0.01 with unit mass).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _value_and_grad(log_density: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_density(z)
        grad, = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


@torch.no_grad()
def hmc(log_density: Callable[[Tensor], Tensor], start: Tensor, steps: int = 100, leapfrog: int = 10,
        step_size: float = 0.01, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Run one chain per row of ``start`` (N, D) on the unnormalised ``log_density`` (N, D) -> (N,).

    Returns the last state (a sample) and the mean of the states of the second half of the chain (an
    estimate of the posterior mean)."""
    z = start.detach()
    lp, grad = _value_and_grad(log_density, z)
    total = torch.zeros_like(z)
    kept = 0
    for step in range(steps):
        momentum = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        h0 = -lp + 0.5 * momentum.pow(2).sum(-1)
        z_new, g_new, p = z, grad, momentum
        for _ in range(leapfrog):
            p = p + 0.5 * step_size * g_new
            z_new = z_new + step_size * p
            lp_new, g_new = _value_and_grad(log_density, z_new)
            p = p + 0.5 * step_size * g_new
        h = -lp_new + 0.5 * p.pow(2).sum(-1)
        u = torch.rand(h.shape, generator=generator, dtype=z.dtype, device=z.device)
        accept = (u < torch.exp(h0 - h)).unsqueeze(-1)                         # NaN proposals are refused
        z = torch.where(accept, z_new, z)
        lp = torch.where(accept[:, 0], lp_new, lp)
        grad = torch.where(accept, g_new, grad)
        if step >= steps // 2:
            total += z
            kept += 1
    return z, total / max(kept, 1)
