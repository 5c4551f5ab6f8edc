"""The shared + private latent core (models/private_latents.py, fusion/factorised.py) under its three models:
the likelihood estimator against numerical integration, what translations decode, saving and loading,
`mmvae evaluate` and the checks at the boundary."""
from __future__ import annotations

import math

import pytest
import torch

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.data.toy import toy_bimodal
from mmvae.errors import UserError
from mmvae.evaluation.evaluate import Options, evaluate_model
from mmvae.models.registry import build_model

MODELS = ["mmvaeplus", "dmvae", "cmvae"]
VEC = {m: ModalitySpec(m, "vector", (2,), "normal") for m in ("a", "b")}


def tiny(name: str, specs=VEC, **extra):
    torch.manual_seed(0)
    return build_model(specs, Config(model=name, latent_dim=1, hidden=8, extra={"private_dim": 1, **extra})).double()


def exact_log_likelihood(model, x: dict, modalities: list[str]) -> torch.Tensor:
    """log p(x_S) = log ∫ p(z) Π_{m∈S} [∫ p(w) p(x_m | z, w) dw] dz on a grid (one-dimensional z and w)."""
    grid = torch.linspace(-18, 18, 721, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    prior = model.prior
    log_pz = prior.log_prob_shared(grid.view(-1, 1))                                  # (Z,)
    log_pw = prior.private.log_prob(grid.view(-1, 1).expand(-1, prior.private.loc.numel()))[:, 0]   # (W,)
    zz, ww = torch.meshgrid(grid, grid, indexing="ij")
    u = torch.zeros(*zz.shape, model.layout.full_dim, dtype=torch.float64)
    u[..., 0] = zz
    total = log_pz.view(-1, 1).expand(-1, next(iter(x.values())).shape[0]).clone()    # (Z, B)
    for m in modalities:
        u_m = u.clone()
        u_m[..., model.layout.slot(m)] = ww.unsqueeze(-1)
        out = model.decode_params(m, u_m.view(-1, u.shape[-1])).view(*zz.shape, -1)  # (Z, W, 2)
        lp = model.likelihoods[m].log_prob(out.unsqueeze(2), x[m])                    # (Z, W, B)
        inner = torch.logsumexp(lp + log_pw.view(1, -1, 1), 1) + math.log(step)       # ∫ dw
        total = total + inner
    return torch.logsumexp(total, 0) + math.log(step)                                 # ∫ dz


@pytest.mark.parametrize("name", ["mmvaeplus", "cmvae"])
def test_log_likelihood_is_the_integral(name):
    """The importance-sampled log p(x_S) (proposal q(z | x_S) Π q(w_m | x_m)) converges to the integral, for
    one modality (the other's private code cancels) and for both."""
    model = tiny(name, clusters=3) if name == "cmvae" else tiny(name)
    g = torch.Generator().manual_seed(3)
    x = {m: torch.randn(3, 2, generator=g, dtype=torch.float64) for m in VEC}
    torch.manual_seed(1)
    for subset in (["a"], ["a", "b"]):
        est = model.log_likelihood(Batch({m: x[m] for m in subset}), subset, k=20000, chunk=5000)
        with torch.no_grad():
            torch.testing.assert_close(est, exact_log_likelihood(model, x, subset), atol=0.02, rtol=0)


def test_translate_uses_own_private_code_for_sources_and_the_prior_otherwise():
    model = tiny("mmvaeplus").eval()
    x = {m: torch.randn(4, 2, dtype=torch.float64) for m in VEC}
    private = model.encode_private(Batch(dict(x)))
    z = model.posterior(Batch({"a": x["a"]})).mean
    out = model.translate({"a": x["a"]}, ["a", "b"])
    u = torch.zeros(4, model.layout.full_dim, dtype=torch.float64)
    u[:, :1], u[:, model.layout.slot("a")] = z, private["a"].mean        # w_b: the prior's mean, 0
    expected = model.decode(u, ["a", "b"])
    for m in ("a", "b"):
        torch.testing.assert_close(out[m], expected[m])


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_gives_the_same_loss(name):
    toy = toy_bimodal(n=100, dim=4)
    cfg = Config(model=name, latent_dim=3, hidden=16, extra={"private_dim": 2})
    torch.manual_seed(0)
    a = build_model(toy.specs, cfg)
    torch.manual_seed(5)
    b = build_model(toy.specs, Config(**{**cfg.__dict__, "extra": dict(cfg.extra)}))
    b.load_state_dict(a.state_dict())
    batch = toy.train.batch(slice(0, 16))
    torch.manual_seed(2)
    la = float(a.loss(batch)[0].detach())
    torch.manual_seed(2)
    assert float(b.loss(batch)[0].detach()) == pytest.approx(la, rel=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_evaluate_reports_shared_and_private_latents(name, tmp_path):
    toy = toy_bimodal(n=300, dim=4)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model=name, latent_dim=3, hidden=16, extra={"private_dim": 2}))
    record = evaluate_model(model, toy.train, toy.test, tmp_path, ["latent", "likelihood", "relatedness"],
                            Options(k=20, likelihood_rows=20, relatedness_rows=50, probe_rows=200), log=lambda *_: None)
    assert set(record["latent_accuracy"]) == {"a/shared", "a/private", "b/shared", "b/private"}
    assert all(math.isfinite(v) for v in record["log_likelihood"]["marginal"].values())
    assert math.isfinite(record["log_likelihood"]["joint"])
    assert "a~b" in record["relatedness"]["pairs"]


@pytest.mark.parametrize("name", MODELS)
def test_boundary_checks(name):
    toy = toy_bimodal(n=100, dim=4)
    with pytest.raises(UserError, match="at least 2 modalities"):
        build_model({"a": toy.specs["a"]}, Config(model=name))
    with pytest.raises(UserError, match="private_dim"):
        build_model(toy.specs, Config(model=name, extra={"private_dim": 0}))
    with pytest.raises(UserError, match="unknown option"):
        build_model(toy.specs, Config(model=name, extra={"privat_dim": 2}))
