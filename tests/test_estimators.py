"""Estimators at fixed parameters, averaged over many draws: IWAE >= ELBO and non-decreasing in K, DReG
unbiased for the IWAE gradient at any β and for every fusion (and the authors' mixture DReG not), and
the KL weight β doing what it says (MultiVae pitfalls, issue 2 item 9)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import MIXED_SPECS, build_tiny, random_batch, tiny_config
from mmvae.data.toy import toy_bimodal
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model
from mmvae.objectives.estimators import IWAE, AuthorsDReG, DReG, make_estimator


@pytest.fixture(scope="module")
def toy():
    return toy_bimodal(n=500, dim=4)


def _bound_stats(model, batch, objective: str, k: int, draws: int = 30) -> tuple[float, float]:
    """Mean and standard error of the batch-mean bound over ``draws`` independent draws."""
    model.objective = make_estimator(objective, k, "mc")
    with torch.no_grad():
        vals = torch.stack([model.loss(batch)[1]["bound"] for _ in range(draws)])
    return float(vals.mean()), float(vals.std() / math.sqrt(draws))


@pytest.mark.parametrize("name", ["vae", "mmvae"])
def test_iwae_bounds_the_elbo_and_tightens_with_k(toy, name):
    """E[IWAE_K] >= ELBO and E[IWAE_K] non-decreasing in K (Burda et al. 2016, Thm. 1); for mmvae the
    stratified bound, K samples per expert (Shi et al. 2019, eq. 4)."""
    specs = {"a": toy.specs["a"]} if name == "vae" else toy.specs
    model = build_tiny(name, specs)                      # untrained: a poor posterior, so large gaps
    batch = toy.train.batch(slice(0, 400)).select(list(specs))
    elbo = _bound_stats(model, batch, "elbo", 1)
    iwae = {k: _bound_stats(model, batch, "iwae", k) for k in (1, 2, 5, 20)}

    def se(a, b):
        return math.sqrt(a[1] ** 2 + b[1] ** 2)

    assert abs(iwae[1][0] - elbo[0]) < 4 * se(iwae[1], elbo)          # IWAE(1) is the ELBO
    ks = sorted(iwae)
    for k1, k2 in zip(ks, ks[1:]):
        assert iwae[k2][0] - iwae[k1][0] > -3 * se(iwae[k1], iwae[k2]), (k1, k2, iwae)
    assert iwae[20][0] - elbo[0] > 10 * se(iwae[20], elbo), (elbo, iwae)  # strictly tighter


def test_analytic_and_monte_carlo_kl_give_the_same_elbo(toy):
    model = build_tiny("vae", {"a": toy.specs["a"]})
    batch = toy.train.batch(slice(0, 400)).select(["a"])
    mc = _bound_stats(model, batch, "elbo", 1, draws=40)
    model.objective = make_estimator("elbo", 1, "analytic")
    with torch.no_grad():
        vals = torch.stack([model.loss(batch)[1]["bound"] for _ in range(40)])
    analytic = float(vals.mean()), float(vals.std() / math.sqrt(40))
    assert abs(mc[0] - analytic[0]) < 4 * math.hypot(mc[1], analytic[1])


# --------------------------------------------------------------------------------------------- DReG
# The gradient tests run each estimator and the plain IWAE gradient on the *same* draws (FixedNoise with
# one seed per draw) and test the mean of the differences against 0, coordinate by coordinate in units
# of its standard error. The encoders are free parameters (one (loc, raw scale) per modality, shared by
# the rows), so the gradients are those of the experts' parameters themselves: the network in front of
# them is a chain rule that cannot create or remove a bias.
class _Table(nn.Module):
    """An encoder whose output is a parameter: (loc, raw scale), the same for every row."""

    def __init__(self, loc, raw):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(loc + raw))

    def forward(self, x):
        return self.p.expand(x.shape[0], -1)


_TABLES = {"a": ([0.6, -0.4, 0.3, 0.0], [0.2, -0.3, 0.0, 0.4]), "b": ([-0.2, 0.5, -0.6, 0.3], [-0.2, 0.1, 0.3, -0.4])}


@pytest.fixture(scope="module")
def toy3():
    """Three classes: a batch on which the MMVAE authors' DReG bias shows within 64 draws (with five
    classes it takes several hundred: the bias is the same size, the IWAE gradient's noise is not)."""
    return toy_bimodal(n=500, dim=4, classes=3)


def _table_model(toy, name: str, rows: int = 256):
    names = ["a"] if name == "vae" else ["a", "b"]
    torch.manual_seed(0)
    model = build_model({m: toy.specs[m] for m in names}, tiny_config(name, objective="iwae", k=5),
                        encoders={m: _Table(*_TABLES[m]) for m in names})
    return model, toy.train.batch(slice(0, rows)).select(names)


def _use(model, estimator):
    if hasattr(model.objective, "inner"):              # mvae: the subsampled sum around the estimator
        model.objective.inner = estimator
    else:
        model.objective = estimator


def _grad(model, batch, beta, noise, parts="encoders") -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    model.loss(batch, beta, noise=noise)[0].backward()
    return torch.cat([p.grad.flatten() for p in getattr(model, parts).parameters()])


def _differences(toy, name, estimator, beta, draws, parts="encoders") -> torch.Tensor:
    """(draws, P): gradient of ``estimator`` minus the IWAE gradient, each pair on the same draws."""
    model, batch = _table_model(toy, name)
    out = []
    for d in range(draws):
        noise = FixedNoise(seed=d)
        _use(model, IWAE(k=5))
        plain = _grad(model, batch, beta, noise, parts)
        _use(model, estimator)
        out.append(_grad(model, batch, beta, noise, parts) - plain)
    return torch.stack(out)


def _z2(diff: torch.Tensor) -> tuple[float, float]:
    """Mean square and largest |z| of the per-coordinate mean difference in units of its standard error."""
    z = diff.mean(0) / (diff.std(0) / math.sqrt(diff.shape[0]))
    return float((z ** 2).mean()), float(z.abs().max())


class _Squared(DReG):
    """Known wrong for β ≠ 1: w̃² whatever β (the library's DReG before issue 11)."""

    exact_mixture = False

    @staticmethod
    def encoder_factor(w, beta):
        return w


class _StickingTheLanding(DReG):
    """Known wrong (Tucker et al. 2019, Sec. 3: STL is biased for IWAE): encoders weighted by w̃."""

    exact_mixture = False

    @staticmethod
    def encoder_factor(w, beta):
        return torch.ones_like(w)


class _UndetachedDReG(DReG):
    """Known wrong: log q keeps its parameters in the graph, so the score term comes back (the bug of a
    benchmark toolkit's MMVAE port noted in DESIGN.md)."""

    detach_q = False


FUSION_MODELS = ["vae", "mvae", "mopoe", "mmvae"]


@pytest.mark.parametrize("name", FUSION_MODELS)
def test_dreg_is_the_iwae_gradient_at_beta_zero(toy3, name):
    """β = 0: lw has no log q, so DReG's encoder weight (1 − β) w̃ + β w̃² = w̃ is IWAE's, draw by draw."""
    diff = _differences(toy3, name, DReG(k=5), 0.0, draws=2)
    assert float(diff.abs().max()) < 1e-6
    wrong = _differences(toy3, name, _Squared(k=5), 0.0, draws=1)
    assert float(wrong.abs().max()) > 1e-3                  # the test can see a wrong weight


@pytest.mark.parametrize("name", FUSION_MODELS)
@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_dreg_encoder_gradient_is_unbiased_for_iwae(toy3, name, beta):
    """E[∇φ DReG] = E[∇φ IWAE] at any β, stratified mixtures included (docs/models/dreg.md)."""
    z2, zmax = _z2(_differences(toy3, name, DReG(k=5), beta, draws=32))
    assert z2 < 3.0 and zmax < 5.0, (z2, zmax)


@pytest.mark.parametrize("name", ["vae", "mmvae"])
def test_the_unbiasedness_test_rejects_known_wrong_weights(toy3, name):
    """The same comparison rejects w̃² at β = 0.3 (the weight that ignores β), STL and an undetached q."""
    z2, _ = _z2(_differences(toy3, name, _Squared(k=5), 0.3, draws=32))
    assert z2 > 100, z2
    if name == "vae":
        for wrong in (_StickingTheLanding(k=5), _UndetachedDReG(k=5)):
            z2, _ = _z2(_differences(toy3, name, wrong, 1.0, draws=32))
            assert z2 > 30, (type(wrong).__name__, z2)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_authors_dreg_is_biased_for_the_stratified_mixture(toy3, beta):
    """MMVAE authors' estimator (w̃² on each expert's samples, mixture density detached): the same test
    rejects it, and its deviation grows with the number of draws (a bias, not a noisy estimate)."""
    diff = _differences(toy3, "mmvae", AuthorsDReG(k=5), beta, draws=96)
    few, many = _z2(diff[:24])[0], _z2(diff)[0]
    assert many > 8.0 and many > 2 * few, (few, many)


@pytest.mark.parametrize("name", ["vae", "mvae", "mopoe"])
def test_authors_dreg_is_dreg_without_stratification(toy3, name):
    """One component or draws from the whole mixture (MoPoE): the two estimators are the same function."""
    model, batch = _table_model(toy3, name)
    noise = FixedNoise(seed=1)
    _use(model, DReG(k=5))
    ours = _grad(model, batch, 0.3, noise)
    _use(model, AuthorsDReG(k=5))
    torch.testing.assert_close(_grad(model, batch, 0.3, noise), ours, rtol=0, atol=0)


def test_dreg_has_lower_variance_than_iwae_for_a_vae(toy3):
    """DReG's point (Tucker et al. 2019, Fig. 1): the encoder gradient's variance drops."""
    model, batch = _table_model(toy3, "vae")
    var = {}
    for est in (IWAE(k=5), DReG(k=5)):
        _use(model, est)
        var[est.name] = float(torch.stack([_grad(model, batch, 1.0, FixedNoise(seed=d)) for d in range(16)]).var(0).sum())
    assert var["dreg"] < var["iwae"], var


@pytest.mark.parametrize("name", FUSION_MODELS)
def test_dreg_decoder_gradient_and_value_equal_iwae(toy3, name):
    """Decoders get Σ_k w̃_k ∇θ lw_k under both estimators: equal draw by draw for the same z; and the loss
    value is the IWAE bound."""
    model, batch = _table_model(toy3, name)
    noise = FixedNoise(seed=3)
    _use(model, IWAE(k=5))
    g_iwae = _grad(model, batch, 0.7, noise, "decoders")
    v_iwae = model.loss(batch, 0.7, noise=noise)[0].detach()
    _use(model, DReG(k=5))
    g_dreg = _grad(model, batch, 0.7, noise, "decoders")
    loss, logs = model.loss(batch, 0.7, noise=noise)
    loss = loss.detach()
    torch.testing.assert_close(g_dreg, g_iwae, rtol=1e-5, atol=1e-7)
    assert float(loss) == pytest.approx(float(v_iwae), rel=1e-6)
    assert float(loss) == pytest.approx(-float(logs["bound"]), rel=1e-6)


# ----------------------------------------------------------------------------------------------- β
MODELS_AND_OBJECTIVES = [("vae", "elbo"), ("vae", "iwae"), ("mvae", "elbo"), ("mvae", "dreg"), ("mmvae", "elbo"),
                         ("mmvae", "iwae"), ("mmvae", "dreg"), ("mopoe", "elbo"), ("mopoe", "iwae")]


def _seeded_loss(model, batch, *beta):
    torch.manual_seed(11)
    return float(model.loss(batch, *beta)[0].detach())


@pytest.mark.parametrize("name,objective", MODELS_AND_OBJECTIVES)
def test_beta_changes_the_loss_and_defaults_to_the_configured_value(gen, name, objective):
    """MultiVae pitfalls: a β option with no effect, and a forgotten warm-up argument that sets β to 0."""
    specs = {"a": MIXED_SPECS["a"]} if name == "vae" else {m: MIXED_SPECS[m] for m in ("a", "b")}
    batch = random_batch(specs, 16, gen)
    model = build_tiny(name, specs, objective=objective, beta=2.5)
    at = {b: _seeded_loss(model, batch, b) for b in (0.0, 1.0, 2.5)}
    assert len({round(v, 4) for v in at.values()}) == 3, at
    assert _seeded_loss(model, batch) == pytest.approx(at[2.5], rel=1e-6)      # β omitted: the configured β
    unit = build_tiny(name, specs, objective=objective)
    unit.load_state_dict(model.state_dict())
    assert _seeded_loss(unit, batch) == pytest.approx(at[1.0], rel=1e-6)


@pytest.mark.parametrize("name", ["vae", "mvae", "mopoe"])
def test_elbo_with_analytic_kl_is_linear_in_beta(gen, name):
    """-ELBO_β = -rec + β KL: the loss moves by exactly the logged KL per unit of β."""
    specs = {"a": MIXED_SPECS["a"]} if name == "vae" else {m: MIXED_SPECS[m] for m in ("a", "b")}
    batch = random_batch(specs, 16, gen)
    model = build_tiny(name, specs)
    estimator = model.objective.inner if name == "mvae" else model.objective      # mvae: the subsampled sum
    assert estimator.kl == "analytic"
    l0, l1, l3 = (_seeded_loss(model, batch, b) for b in (0.0, 1.0, 3.0))
    torch.manual_seed(11)
    kl = float(model.loss(batch, 1.0)[1]["kl"])
    assert l1 - l0 == pytest.approx(kl, rel=1e-4, abs=1e-5)
    assert l3 - l1 == pytest.approx(2 * kl, rel=1e-4, abs=1e-5)
    assert kl > 0
