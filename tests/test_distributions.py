"""Posteriors, prior, KL and likelihoods against Monte Carlo and textbook formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Laplace, Normal

from mmvae.distributions import kl_to_prior, log_density, make_likelihood, make_posterior, standard_prior


@pytest.mark.parametrize("family", ["normal", "laplace"])
def test_analytic_kl_matches_monte_carlo(family, gen):
    d = 3
    loc = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.4]], dtype=torch.float64)
    raw = torch.tensor([[0.2, -1.0, 0.5], [1.0, 0.0, -0.3]], dtype=torch.float64)
    q = make_posterior(family, loc, raw)
    p = standard_prior(family, d)
    p = type(p)(p.loc.double(), p.scale.double())
    analytic = kl_to_prior(q, p)                                   # (2,)
    z = q.sample((200_000,))
    terms = log_density(q, z) - log_density(p, z)                  # (S, 2)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    assert torch.all((analytic - mc).abs() < 4 * se + 1e-6), (analytic, mc, se)
    assert torch.all(analytic > 0)


def test_laplace_posterior_scale_is_softmax_normalised():
    raw = torch.randn(4, 6)
    q = make_posterior("laplace", torch.zeros(4, 6), raw)
    assert torch.allclose(q.scale.sum(-1), torch.full((4,), 6.0), atol=1e-4)
    assert isinstance(q, Laplace)
    prior = standard_prior("laplace", 6)
    assert torch.allclose(prior.scale, torch.ones(6))


def test_normal_posterior_scale_is_positive_even_for_very_negative_raw():
    q = make_posterior("normal", torch.zeros(1, 2), torch.tensor([[-80.0, 30.0]]))
    assert bool((q.scale > 0).all()) and torch.isfinite(q.scale).all()
    assert float(q.scale[0, 1]) == pytest.approx(30.0, rel=1e-4)


def test_bernoulli_accepts_grey_levels():
    """MultiVae pitfall: Bernoulli likelihoods rejecting non-binary targets. MNIST is grey: accept [0, 1]."""
    lik = make_likelihood("bernoulli", (1, 2, 2), "image")
    logits = torch.tensor([[[[0.3, -1.2], [2.0, 0.0]]]])
    x = torch.tensor([[[[0.25, 0.5], [0.9, 0.0]]]])
    got = lik.log_prob(logits, x)
    p = torch.sigmoid(logits)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).sum()
    assert got.shape == (1,)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # the grey level is the maximiser: d/dlogit = x - sigmoid(logit) = 0 at logit = logit(x)
    opt = torch.logit(torch.tensor(0.3)).requires_grad_()
    lik1 = make_likelihood("bernoulli", (1,), "vector")
    lik1.log_prob(opt.view(1, 1), torch.tensor([[0.3]])).sum().backward()
    assert abs(float(opt.grad)) < 1e-6


@pytest.mark.parametrize("family,dist", [("normal", Normal), ("laplace", Laplace)])
def test_fixed_scale_likelihoods(family, dist):
    lik = make_likelihood(family, (1, 2, 2), "image", scale=0.75)
    out = torch.randn(3, 1, 2, 2)
    x = torch.rand(3, 1, 2, 2)
    expected = dist(torch.sigmoid(out), 0.75).log_prob(x).flatten(1).sum(1)   # images: loc = sigmoid(output)
    assert torch.allclose(lik.log_prob(out, x), expected)
    assert torch.allclose(lik.mean(out), torch.sigmoid(out))
    vec = make_likelihood(family, (4,), "vector", scale=0.5)                # other data: loc = output
    out, x = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(vec.log_prob(out, x), dist(out, 0.5).log_prob(x).sum(1))


def test_learned_scale_is_a_parameter_that_gets_gradient():
    lik = make_likelihood("laplace", (4,), "vector", scale="learned")
    params = list(lik.parameters())
    assert len(params) == 1
    out, x = torch.zeros(5, 4), torch.randn(5, 4) * 3
    lik.log_prob(out, x).sum().backward()
    # data far wider than scale 1: the likelihood wants a larger scale (negative gradient of -log p)
    assert float(params[0].grad) > 0


def test_categorical_likelihood_and_padding():
    lik = make_likelihood("categorical", (4,), "categorical")
    logits = torch.randn(2, 4)
    x = F.one_hot(torch.tensor([2, 0]), 4).float()
    assert torch.allclose(lik.log_prob(logits, x), F.log_softmax(logits, -1)[[0, 1], [2, 0]])
    text = make_likelihood("categorical", (3, 4), "text")
    tokens = torch.zeros(1, 3, 4)
    tokens[0, 0, 1] = 1.0                                                   # one token, two padding rows
    logits = torch.randn(1, 3, 4)
    assert torch.allclose(text.log_prob(logits, tokens), F.log_softmax(logits[0, 0], -1)[1].view(1))


def test_likelihoods_broadcast_over_leading_sample_axes():
    """The estimators score z of shape (G, K, B, D): decoder outputs carry those axes."""
    lik = make_likelihood("bernoulli", (1, 3, 3), "image")
    out = torch.randn(2, 5, 4, 1, 3, 3)
    x = torch.rand(4, 1, 3, 3)
    got = lik.log_prob(out, x)
    assert got.shape == (2, 5, 4)
    assert torch.allclose(got[1, 2], lik.log_prob(out[1, 2], x))


def test_unknown_likelihood_and_bad_scale_are_rejected():
    with pytest.raises(ValueError):
        make_likelihood("poisson", (2,), "vector")
    with pytest.raises(ValueError):
        make_likelihood("normal", (2,), "vector", scale=0.0)
    with pytest.raises(ValueError):
        make_posterior("gamma", torch.zeros(1, 2), torch.zeros(1, 2))
