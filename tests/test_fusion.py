"""Fusion against direct computations: PoE closed form, MoE density, MoPoE subsets, per-row sampling."""
from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
from torch.distributions import Laplace, Normal

from mmvae.fusion import DiagonalMixture, mixture_of_experts, mixture_of_products, poe_params, product_of_experts


def _experts(m: int, b: int, d: int, gen: torch.Generator, family=Normal):
    locs = torch.randn(m, b, d, generator=gen, dtype=torch.float64) * 2
    scales = torch.rand(m, b, d, generator=gen, dtype=torch.float64) * 1.5 + 0.2
    return {f"m{i}": family(locs[i], scales[i]) for i in range(m)}, locs, scales


def _product_closed_form(mus, sigmas, prior: bool):
    """Product of 1-D Gaussians N(mu_i, sigma_i^2) (and N(0, 1)): precision T = sum 1/sigma^2, mean sum(mu/sigma^2)/T."""
    t = sum(1.0 / s ** 2 for s in sigmas) + (1.0 if prior else 0.0)
    mu = sum(m / s ** 2 for m, s in zip(mus, sigmas)) / t
    return mu, math.sqrt(1.0 / t)


@pytest.mark.parametrize("prior", [True, False])
def test_poe_matches_closed_form_with_masks(gen, prior):
    m, b, d = 3, 6, 2
    _, locs, scales = _experts(m, b, d, gen)
    masks = torch.rand(m, b, generator=gen) < 0.6
    masks[0] |= ~masks.any(0)                             # every row has an expert ...
    masks[:, 0] = True
    masks[1:, 1] = False                                  # a row with a single expert
    masks[:, 2] = False                                   # ... but this one: prior only, or N(0, I) fallback
    loc, scale = poe_params(locs, scales, masks, prior_expert=prior)
    for row in range(b):
        used = [i for i in range(m) if masks[i, row]]
        if not used:
            continue
        for j in range(d):
            mu, sd = _product_closed_form([float(locs[i, row, j]) for i in used],
                                          [float(scales[i, row, j]) for i in used], prior)
            assert float(loc[row, j]) == pytest.approx(mu, rel=1e-6, abs=1e-6)
            assert float(scale[row, j]) == pytest.approx(sd, rel=1e-6)
    # no expert: the prior N(0, I) itself (with the prior expert) or the N(0, I) fallback (without)
    assert torch.allclose(loc[2], torch.zeros(d, dtype=loc.dtype))
    assert torch.allclose(scale[2], torch.ones(d, dtype=loc.dtype))


def test_poe_is_the_normalised_product_of_densities(gen):
    """log N(z; loc, scale) - [log p(z) + sum_m log q_m(z)] is the same constant for every z."""
    experts, locs, scales = _experts(3, 1, 1, gen)
    loc, scale = poe_params(locs, scales, torch.ones(3, 1, dtype=torch.bool), prior_expert=True)
    z = torch.linspace(-4, 4, 41, dtype=torch.float64)
    prod = Normal(0.0, 1.0).log_prob(z) + sum(q.log_prob(z[:, None, None]).squeeze() for q in experts.values())
    diff = Normal(loc.squeeze(), scale.squeeze()).log_prob(z) - prod
    assert float(diff.std()) < 1e-5                    # (the 1e-8 stabiliser in the precision)
    # and it is normalised: the Gaussian integrates to 1 on a fine grid
    fine = torch.linspace(float(loc) - 10 * float(scale), float(loc) + 10 * float(scale), 20001, dtype=torch.float64)
    dens = torch.exp(Normal(loc.squeeze(), scale.squeeze()).log_prob(fine))
    assert float(torch.trapezoid(dens, fine)) == pytest.approx(1.0, abs=1e-6)


def test_masked_experts_have_no_effect(gen):
    experts, locs, scales = _experts(3, 8, 4, gen)
    masks = {m: torch.rand(8, generator=gen) < 0.5 for m in experts}
    masks["m0"][:] = True
    ref = product_of_experts(experts, masks)
    # scramble the parameters of every masked row: the product must not move
    scrambled = {}
    for m, q in experts.items():
        hidden = ~masks[m][:, None]
        scrambled[m] = Normal(torch.where(hidden, q.loc * 100 + 7, q.loc), torch.where(hidden, q.scale * 1e-3, q.scale))
    out = product_of_experts(scrambled, masks)
    assert torch.allclose(out.loc, ref.loc) and torch.allclose(out.scale, ref.scale)
    # and the product over the observed experts equals the product of the observed subset only
    row = int(torch.nonzero(~masks["m1"])[0]) if (~masks["m1"]).any() else None
    if row is not None:
        sub = {m: experts[m] for m in experts if masks[m][row]}
        sub_out = product_of_experts(sub, {m: torch.ones(8, dtype=torch.bool) for m in sub})
        assert torch.allclose(out.loc[0, row], sub_out.loc[0, row]) and torch.allclose(out.scale[0, row], sub_out.scale[0, row])


@pytest.mark.parametrize("family", [Normal, Laplace])
def test_moe_log_density_matches_direct_sum(gen, family):
    experts, locs, scales = _experts(3, 5, 2, gen, family)
    masks = {"m0": torch.tensor([1, 1, 0, 1, 0], dtype=torch.bool),
             "m1": torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool),
             "m2": torch.tensor([1, 0, 0, 0, 1], dtype=torch.bool)}
    mix = mixture_of_experts(experts, masks)
    z = torch.randn(7, 5, 2, generator=gen, dtype=torch.float64) * 2     # (K, B, D)
    got = mix.log_prob(z)
    assert got.shape == (7, 5)
    for k in range(7):
        for row in range(5):
            used = [m for m in experts if masks[m][row]]
            terms = torch.stack([family(experts[m].loc[row], experts[m].scale[row]).log_prob(z[k, row]).sum()
                                 for m in used])
            direct = torch.logsumexp(terms, 0) - math.log(len(used))
            assert float(got[k, row]) == pytest.approx(float(direct), rel=1e-9, abs=1e-9)


def test_mixture_log_prob_with_explicit_weights(gen):
    loc = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64)
    scale = torch.rand(3, 4, 2, generator=gen, dtype=torch.float64) + 0.3
    weight = torch.tensor([[0.2, 0.0, 1.0, 0.5], [0.3, 0.4, 0.0, 0.5], [0.5, 0.6, 0.0, 0.0]], dtype=torch.float64)
    mix = DiagonalMixture(Normal, loc, scale, weight)
    z = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    for row in range(4):
        dens = sum(float(weight[g, row]) * math.exp(float(Normal(loc[g, row], scale[g, row]).log_prob(z[row]).sum()))
                   for g in range(3))
        assert float(mix.log_prob(z)[row]) == pytest.approx(math.log(dens), rel=1e-9)


def test_mopoe_components_are_subset_products(gen):
    experts, locs, scales = _experts(3, 6, 2, gen)
    masks = {"m0": torch.tensor([1, 1, 1, 0, 1, 0], dtype=torch.bool),
             "m1": torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool),
             "m2": torch.tensor([1, 0, 0, 1, 1, 1], dtype=torch.bool)}
    mix = mixture_of_products(experts, masks)
    names = list(experts)
    subsets = [s for r in range(1, 4) for s in combinations(range(3), r)]
    assert mix.num_components == len(subsets) == 7
    for g, s in enumerate(subsets):
        for row in range(6):
            for j in range(2):
                mu, sd = _product_closed_form([float(locs[i, row, j]) for i in s], [float(scales[i, row, j]) for i in s],
                                              prior=False)
                assert float(mix.loc[g, row, j]) == pytest.approx(mu, rel=1e-6, abs=1e-6)
                assert float(mix.scale[g, row, j]) == pytest.approx(sd, rel=1e-6)
    for row in range(6):
        usable = [g for g, s in enumerate(subsets) if all(masks[names[i]][row] for i in s)]
        expected = torch.zeros(7, dtype=mix.weight.dtype)
        expected[usable] = 1.0 / len(usable)
        assert torch.allclose(mix.weight[:, row], expected), (row, mix.weight[:, row])


def test_mixture_sampling_picks_the_component_per_row():
    """MultiVae pitfall: one randomly chosen expert for the whole batch. Here each row draws its own."""
    b = 4000
    loc = torch.stack([torch.full((b, 1), -50.0), torch.full((b, 1), 50.0)])
    scale = torch.ones(2, b, 1)
    weight = torch.full((2, b), 0.5)
    weight[:, :100] = torch.tensor([1.0, 0.0])[:, None]                     # rows that can use only component 0
    mix = DiagonalMixture(Normal, loc, scale, weight)
    for _ in range(3):
        z = mix.rsample(2)                                                  # (K, B, D)
        assert z.shape == (2, b, 1)
        positive = (z[:, 100:] > 0).float().mean()
        assert 0.45 < float(positive) < 0.55
        assert bool((z[:, :100] < 0).all())
        # and the two samples of one row are drawn independently too
        assert 0.4 < float((z[0, 100:] > 0).ne(z[1, 100:] > 0).float().mean()) < 0.6


def test_mixture_stratified_samples_come_from_each_component(gen):
    loc = torch.tensor([-20.0, 0.0, 20.0])[:, None, None].expand(3, 5, 2).contiguous()
    mix = DiagonalMixture(Normal, loc, torch.ones(3, 5, 2), torch.full((3, 5), 1 / 3))
    z = mix.rsample_stratified(4)
    assert z.shape == (3, 4, 5, 2)
    assert torch.allclose(z.mean((1, 2, 3)), torch.tensor([-20.0, 0.0, 20.0]), atol=1.5)


def test_moe_translation_mean_uses_only_observed_experts(gen):
    experts, _, _ = _experts(2, 3, 2, gen)
    masks = {"m0": torch.tensor([1, 0, 1], dtype=torch.bool), "m1": torch.tensor([1, 1, 0], dtype=torch.bool)}
    mix = mixture_of_experts(experts, masks)
    assert torch.allclose(mix.mean[1], experts["m1"].loc[1])
    assert torch.allclose(mix.mean[2], experts["m0"].loc[2])
    assert torch.allclose(mix.mean[0], (experts["m0"].loc[0] + experts["m1"].loc[0]) / 2)
