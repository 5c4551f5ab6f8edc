"""The MAF of distributions/flows.py against autograd in float64: log-determinants equal
log |det J| of ``torch.autograd.functional.jacobian``, the inverse inverts, MADE is autoregressive."""
from __future__ import annotations

import torch
from torch.autograd.functional import jacobian
from torch.distributions import Normal

from mmvae.distributions.flows import MADE, MAF, FlowPosterior


def random_flow(dim: int, blocks: int = 2) -> MAF:
    torch.manual_seed(0)
    flow = MAF(dim, blocks=blocks, hidden=16, layers=2).double()
    with torch.no_grad():                       # away from the near-identity start: large shifts and scales
        for p in flow.parameters():
            p.mul_(1.5)
    return flow


def test_forward_log_determinant_equals_autograd_jacobian():
    flow = random_flow(5)
    z = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, logdet = flow(z)
    for i in range(len(z)):
        jac = jacobian(lambda v: flow(v[None])[0][0], z[i])
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-10, rtol=0)
        assert abs(float(logdet[i].detach())) > 0.1       # a non-trivial Jacobian: the check can fail


def test_inverse_inverts_and_its_log_determinant_is_the_negative():
    flow = random_flow(6, blocks=3)
    z = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    u, fwd = flow(z)
    back, inv = flow.inverse(u)
    assert torch.allclose(back, z, atol=1e-9)
    assert torch.allclose(inv, -fwd, atol=1e-9)
    jac = jacobian(lambda v: flow.inverse(v[None])[0][0], u[0])
    assert torch.allclose(inv[0], torch.linalg.slogdet(jac)[1], atol=1e-9)


def test_made_is_autoregressive_and_one_dimension_works():
    torch.manual_seed(0)
    made = MADE(4, (8, 8)).double()
    x = torch.randn(1, 4, dtype=torch.float64)
    jac = jacobian(lambda v: torch.cat(made(v[None]), -1)[0], x[0])        # (8, 4): (μ, s) against x
    for d in range(4):
        assert torch.all(jac[d, d:] == 0) and torch.all(jac[4 + d, d:] == 0)
    flow = random_flow(1)                                                    # D = 1: constant μ, s
    z = torch.randn(3, 1, dtype=torch.float64)
    assert torch.allclose(flow.inverse(flow(z)[0])[0], z)


def test_flow_posterior_density_is_the_change_of_variables():
    flow = random_flow(3)
    g = torch.Generator().manual_seed(3)
    loc = torch.randn(5, 3, dtype=torch.float64, generator=g)
    scale = torch.rand(5, 3, dtype=torch.float64, generator=g) + 0.5
    q = FlowPosterior(Normal(loc, scale), flow)
    z = q.rsample((2,))                                                      # (2, 5, 3)
    u, logdet = flow(z.reshape(-1, 3))
    want = Normal(loc, scale).log_prob(u.reshape(2, 5, 3)).sum(-1) + logdet.reshape(2, 5)
    assert torch.allclose(q.log_prob(z), want)
    # a density: ∫ q(z) dz = 1 (1-D, trapezoid rule on a wide grid)
    q1 = FlowPosterior(Normal(torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)),
                       random_flow(1))
    grid = torch.linspace(-60, 60, 200001, dtype=torch.float64)[:, None, None]
    with torch.no_grad():
        assert abs(float(torch.trapezoid(q1.log_prob(grid).exp()[:, 0], grid[:, 0, 0])) - 1) < 1e-4
    assert torch.allclose(q.mean, flow.inverse(loc)[0])


def test_hmc_samples_a_known_gaussian():
    """distributions/hmc.py on N(μ, diag σ²) from a far start: the chains' last states and the chain means
    have the target's moments (a wrong Metropolis sign or leapfrog step would bias them)."""
    from mmvae.distributions.hmc import hmc

    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    sd = torch.tensor([0.5, 2.0], dtype=torch.float64)
    target = lambda z: Normal(mu, sd).log_prob(z).sum(-1)                       # noqa: E731
    g = torch.Generator().manual_seed(0)
    start = torch.full((1000, 2), 5.0, dtype=torch.float64)
    last, mean = hmc(target, start, steps=100, leapfrog=10, step_size=0.2, generator=g)
    torch.testing.assert_close(last.mean(0), mu, atol=0.12, rtol=0)
    torch.testing.assert_close(last.std(0), sd, atol=0.1, rtol=0)
    torch.testing.assert_close(mean.mean(0), mu, atol=0.1, rtol=0)
