"""The continuous Bernoulli likelihood (Loaiza-Ganem & Cunningham 2019) against its written-out density."""
from __future__ import annotations

import math

import torch

from mmvae.distributions import make_likelihood


def written_out(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log C(λ) + x log λ + (1 − x) log(1 − λ), C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ) (C(½) = 2), per pixel."""
    lam = torch.sigmoid(logits)
    c = torch.where((lam - 0.5).abs() < 1e-9, torch.full_like(lam, 2.0),
                    2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    return c.log() + x * lam.log() + (1 - x) * (1 - lam).log()


def test_log_prob_matches_the_written_out_density_in_float64():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64) * 2
    logits[0, 0, 0, 0] = 0.001         # near λ = ½, where torch switches to a Taylor expansion
    x = torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64)
    lik = make_likelihood("continuous_bernoulli", (1, 4, 4), "image")
    expected = written_out(logits, x).flatten(1).sum(1)
    assert torch.allclose(lik.log_prob(logits, x), expected, atol=1e-6, rtol=0)


def test_density_integrates_to_one_and_mean_is_its_first_moment():
    lik = make_likelihood("continuous_bernoulli", (1,), "image")
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)[:, None]
    for logit in (-3.0, -0.4, 0.0, 1.5):
        out = torch.full_like(x, logit)
        density = lik.log_prob(out, x).exp()
        assert abs(float(torch.trapezoid(density, x[:, 0])) - 1) < 1e-6
        first_moment = float(torch.trapezoid(density * x[:, 0], x[:, 0]))
        assert math.isclose(float(lik.mean(out[:1])[0, 0]), first_moment, abs_tol=1e-6)


def test_grey_levels_score_higher_than_under_the_plain_bernoulli():
    """The point of the normaliser: the Bernoulli cross-entropy is not a density on [0, 1] (it scores
    every grey level below 0 nats); the continuous Bernoulli at a confident logit is a proper density."""
    x = torch.full((1, 1), 0.98)
    out = torch.full((1, 1), 4.0)
    cb = make_likelihood("continuous_bernoulli", (1,), "image").log_prob(out, x)
    b = make_likelihood("bernoulli", (1,), "image").log_prob(out, x)
    assert float(b) < 0 < float(cb)
