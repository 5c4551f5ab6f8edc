"""Learned priors (``--set prior=learned | learned-loc-scale``): parameterisation (MMVAE authors' softmax · D),
gradients through every estimator, generate(), the evaluation's likelihood, saving and loading, refusals."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Normal

from conftest import MIXED_SPECS, build_tiny, random_batch
from mmvae.cli import main as cli_main
from mmvae.config import Config
from mmvae.distributions.noise import FixedNoise
from mmvae.distributions.prior import Prior
from mmvae.fusion.mixture import DiagonalMixture
from mmvae.errors import UserError
from mmvae.evaluation.likelihood import importance_log_likelihood
from mmvae.models.registry import build_model, fusion_model, register_model, MODELS
from mmvae.runs import load_run

SPECS = {m: MIXED_SPECS[m] for m in ("a", "b")}


def _perturb(model, gen):
    with torch.no_grad():
        model.latent_prior.scale_logits.copy_(torch.randn(model.latent_dim, generator=gen))
        if model.prior_kind == "learned-loc-scale":
            model.latent_prior.loc.copy_(torch.randn(model.latent_dim, generator=gen))


@pytest.mark.parametrize("family", ["normal", "laplace"])
def test_learned_scale_is_softmax_times_dim_and_starts_as_the_standard_prior(family):
    """MMVAE authors (iffsid/mmvae, _pz_params): loc fixed at 0, scale = softmax(logits) · D."""
    p = Prior(family, 5, "learned")
    q = p.distribution()
    torch.testing.assert_close(q.scale, torch.ones(5))
    torch.testing.assert_close(q.loc, torch.zeros(5))
    with torch.no_grad():
        p.scale_logits.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5]))
    expected = torch.softmax(p.scale_logits.detach(), 0) * 5
    torch.testing.assert_close(p.distribution().scale, expected)
    assert float(p.distribution().scale.detach().sum()) == pytest.approx(5.0)
    assert [n for n, _ in p.named_parameters()] == ["scale_logits"]
    full = Prior(family, 5, "learned-loc-scale")
    assert sorted(n for n, _ in full.named_parameters()) == ["loc", "scale_logits"]
    assert list(Prior(family, 5).named_parameters()) == []          # standard: nothing to save


@pytest.mark.parametrize("name,objective", [("vae", "elbo"), ("mvae", "elbo"), ("mmvae", "elbo"), ("mmvae", "iwae"),
                                            ("mmvae", "dreg"), ("mopoe", "elbo"), ("mopoe", "dreg")])
def test_prior_parameters_receive_the_gradient_of_their_term(gen, name, objective):
    """The loss reaches the learned prior; for the ELBOs by exactly the prior's own term at the same draws:
    −β E[log p(z)] (Monte Carlo KL: mmvae) or β KL(q ‖ p) (analytic: vae, mvae, mopoe)."""
    specs = {"a": SPECS["a"]} if name == "vae" else SPECS
    model = build_tiny(name, specs, objective=objective, prior="learned-loc-scale", beta=0.7)
    _perturb(model, gen)
    batch = random_batch(specs, 8, gen)
    noise = FixedNoise(seed=5)
    params = list(model.latent_prior.parameters())
    grads = torch.autograd.grad(model.loss(batch, noise=noise)[0], params)
    assert all(float(g.abs().sum()) > 0 for g in grads)
    if objective != "elbo":
        return                                  # IWAE-type bounds: tests/test_parity_mmvae.py checks them
    estimator = model.objective.inner if name == "mvae" else model.objective
    if name == "mvae":
        from mmvae.fusion.fusions import subset_products
        from mmvae.objectives.subsampled import training_subsets
        subsets = training_subsets(list(specs), 0)
        loc, scale, usable = subset_products(model.encode_experts(batch), batch.mask, subsets, prior_expert=True)
        post = DiagonalMixture(Normal, loc, scale, usable)
    else:
        post = model.posterior(batch)
    weight = post.weight if (model.stratified or name == "mvae") else torch.ones_like(post.weight[:1])
    prior = model.prior
    if estimator.kl == "analytic":
        kl = post.detached().kl_components(prior) if weight.shape[0] > 1 else post.detached().kl_average(prior)[None]
        own = 0.7 * (weight * kl).sum(0).mean()
    else:
        z = post.detached().loc.unsqueeze(1) + post.detached().scale.unsqueeze(1) * noise.eps["z"].transpose(0, 1)
        own = -(0.7 * (weight * prior.log_prob(z).sum(-1).mean(1)).sum(0)).mean()
    for g, e in zip(grads, torch.autograd.grad(own, params)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_generate_samples_the_learned_prior(gen, monkeypatch):
    model = build_tiny("mmvae", SPECS, prior="learned-loc-scale", posterior="laplace")
    with torch.no_grad():
        model.latent_prior.loc.fill_(30.0)
        model.latent_prior.scale_logits.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    seen = []
    original = model.decode
    monkeypatch.setattr(model, "decode", lambda z, mods=None: seen.append(z) or original(z, mods))
    model.generate(4000)
    z = seen[0]
    assert abs(float(z.mean()) - 30.0) < 0.5
    scale = torch.softmax(torch.tensor([3.0, 0.0, 0.0, 0.0]), 0) * 4              # Laplace: sd = scale · √2
    torch.testing.assert_close(z.std(0), scale * math.sqrt(2), rtol=0.1, atol=0.02)


def test_evaluation_likelihood_reads_the_learned_prior(gen):
    """The importance-sampled log p(x) changes with the prior's parameters, by exactly log p(z) at the same z."""
    model = build_tiny("mopoe", SPECS, prior="learned").eval()
    batch = random_batch(SPECS, 5, gen)
    before = importance_log_likelihood(model, batch, list(range(5)), k=1, sample_chunk=1)
    with torch.no_grad():
        model.latent_prior.scale_logits.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
    after = importance_log_likelihood(model, batch, list(range(5)), k=1, sample_chunk=1)
    assert float((after - before).abs().min()) > 1e-4
    # k = 1 with the same uniforms: the same z, so the difference is log p_new(z) − log p_old(z)
    from mmvae.evaluation.likelihood import row_uniforms, sample_mixture
    post = model.posterior(batch)
    z = sample_mixture(post, row_uniforms(list(range(5)), 0, 1, 1 + 4, 0, {}).to(post.loc.dtype))
    old = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(after - before, (model.prior.log_prob(z).sum(-1) - old)[0], rtol=1e-4, atol=1e-5)


def test_learned_prior_is_saved_with_the_weights_and_loaded_back(tmp_path):
    out = tmp_path / "run"
    code = cli_main(["train", "--model", "mmvae", "--dataset", "toy", "--epochs", "1", "--out", str(out),
                     "--set", "prior=learned", "--set", "hidden=32", "--set", "latent_dim=4"])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["config"]["prior"] == "learned"
    saved = load_file(out / "model.safetensors")
    logits = saved["latent_prior.scale_logits"]
    assert float(logits.abs().max()) > 0                                        # it was trained
    run = load_run(out)
    torch.testing.assert_close(run.model.prior.scale, torch.softmax(logits, 0) * 4)
    plain = tmp_path / "plain"
    assert cli_main(["train", "--model", "vae", "--dataset", "toy", "--epochs", "1", "--out", str(plain),
                     "--set", "hidden=32"]) == 0
    assert json.loads((plain / "config.json").read_text())["config"]["prior"] == "standard"
    assert not any(k.startswith("latent_prior") for k in load_file(plain / "model.safetensors"))


def test_refusals():
    with pytest.raises(UserError, match="unknown prior"):
        build_tiny("mmvae", SPECS, prior="vamp")
    with pytest.raises(UserError, match="meme.*does not apply"):
        build_model(SPECS, Config(model="meme", latent_dim=4, hidden=32, prior="learned"))
    # a model whose builder ignores the option is refused rather than silently trained with N(0, I)
    register_model("test-fixed-prior", "test", "a builder that drops cfg.prior",
                   dict(objective="elbo", kl="analytic", posterior="normal"))(
        lambda specs, cfg, **nets: fusion_model("moe", stratified=True)(specs, Config(**{**cfg.to_dict(), "prior": None})))
    try:
        with pytest.raises(UserError, match="does not support --set prior=learned"):
            build_model(SPECS, Config(model="test-fixed-prior", latent_dim=4, hidden=32, prior="learned"))
        assert build_model(SPECS, Config(model="test-fixed-prior", latent_dim=4, hidden=32)).prior_kind == "standard"
    finally:
        MODELS.pop("test-fixed-prior")
