"""Conditional VAE (Sohn et al. 2015; MultiVae's cvae) against a formula written here: float64, fixed noise,
loss and gradients to 1e-6, with and without the prior network; its user API (what it can and cannot
infer), refusals, and a learning test on the toy data."""
from __future__ import annotations

import pytest
import torch

from helpers import TOY_SPECS, toy_data
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from reference import head_var as head, toy_log_lik
from test_learning import agreement, fit

SPECS = TOY_SPECS
D, B = 4, 6


def make_model(target="a", k=1, **extra):
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="cvae", latent_dim=D, hidden=16, k=k,
                                     extra={"target": target, **extra})).double()


def make_batch() -> Batch:
    return Batch(toy_data(B))


def reference_loss(model, batch, eps, beta, target):
    """−mean[log p(x_t | z, x_C) − β KL(q(z | x_t, x_C) ‖ p(z | x_C))], decoder input [z, features(x_C)]."""
    cond = [m for m in SPECS if m != target]
    mu, var = head(model.encoder(batch.data))
    if model.prior_net is None:
        mu_p, var_p = torch.zeros_like(mu), torch.ones_like(var)
    else:
        mu_p, var_p = head(model.prior_net({m: batch.data[m] for m in cond}))
    z = mu + var.sqrt() * eps                                               # (K, B, D)
    h = torch.cat([torch.cat(model.decoder.heads[m](batch.data[m]), -1) for m in cond], -1)
    out = model.decoder.decoder(torch.cat([z, h.expand(z.shape[0], -1, -1)], -1).reshape(-1, z.shape[-1] + h.shape[-1]))
    out = out.reshape(z.shape[0], B, -1)
    x = batch.data[target]
    rec = toy_log_lik(target, out, x)                                        # target a or b
    kl = 0.5 * (torch.log(var_p / var) + (var + (mu - mu_p) ** 2) / var_p - 1).sum(-1)
    return -(rec.mean(0) - beta * kl).mean()


@pytest.mark.parametrize("target,conditional,beta,k", [("a", True, 1.0, 1), ("b", True, 0.5, 2), ("a", False, 1.0, 1)])
def test_loss_and_gradients_match_the_formula(target, conditional, beta, k):
    model = make_model(target, k, conditional_prior=conditional)
    batch = make_batch()
    eps = torch.randn(k, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, _ = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, beta, target)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    params = [p for p in model.parameters()]
    g_lib = torch.autograd.grad(loss, params, retain_graph=True)
    g_ref = torch.autograd.grad(ref, params, retain_graph=True)
    for (name, _), a, b in zip(model.named_parameters(), g_lib, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=name: f"{n}: {s}")
    assert all(bool(g.abs().sum() > 0) for g in g_lib)                   # prior network included
    assert (model.prior_net is not None) == conditional
    # the comparison can fail: another KL weight gives another loss
    assert abs(float(reference_loss(model, batch, eps, beta + 1, target).detach()) - float(loss.detach())) > 1e-4


def test_api_infers_from_conditions_and_generates_the_target_only():
    model = make_model("a")
    batch = make_batch()
    model.train().loss(batch)                                             # fills the bank of conditions
    model.eval()
    assert int(model.bank_filled) == B
    cond = {m: batch.data[m] for m in ("b", "c")}
    out = model.translate(cond, ["a"])["a"]
    assert out.shape == (B, 5)
    with torch.no_grad():
        mu_p, _ = head(model.prior_net(cond))
        torch.testing.assert_close(model.embed(cond), mu_p)
        mu_q, _ = head(model.encoder(batch.data))
        torch.testing.assert_close(model.embed(batch.data), mu_q)
    for bad in ({"a": batch.data["a"]}, {"b": batch.data["b"]}):          # no z without every condition
        with pytest.raises(ValueError, match="conditioning"):
            model.encode(bad)
    with pytest.raises(ValueError, match="only its target"):
        model.translate(cond, ["b"])
    gen = model.generate(7)
    assert set(gen) == set(SPECS) and gen["a"].shape == (7, 5)
    bank = torch.cat([model.bank_b, model.bank_c], -1)[:B]
    assert all(bool((torch.cat([gen["b"][i], gen["c"][i]]) == bank).all(-1).any()) for i in range(7))
    ll = model.conditional_log_likelihood(batch.data, k=50)
    assert ll.shape == (B,) and bool(torch.isfinite(ll).all())
    assert bool(torch.isnan(model.log_likelihood(batch, ["a", "b", "c"])).all())


def test_refusals():
    model = make_model()
    batch = make_batch()
    batch.mask["b"][0] = False
    with pytest.raises(UserError, match="every row"):
        model.loss(batch)
    with pytest.raises(UserError, match="target"):
        make_model("z")
    with pytest.raises(UserError, match="conditional_prior"):
        make_model(conditional_prior="maybe")
    with pytest.raises(UserError, match="paired_fraction"):
        build_model(SPECS, Config(model="cvae", paired_fraction=0.5))
    with pytest.raises(UserError, match="prior"):
        build_model(SPECS, Config(model="cvae", prior="learned"))
    with pytest.raises(ValueError, match="stored"):
        make_model().generate(3)


def test_cvae_learns_to_generate_its_target_from_the_condition():
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="cvae", latent_dim=8, hidden=64, extra={"target": "b"}))
    assert agreement(model.eval(), toy.test, "a", "b") < 0.5
    fit(model, toy.train, ["a", "b"], epochs=3)
    assert agreement(model, toy.test, "a", "b") > 0.9
    gen = model.generate(500)                                             # x_a from the bank, x_b generated
    ya = torch.cdist(gen["a"], toy.test.prototypes["a"]).argmin(1)
    yb = torch.cdist(gen["b"], toy.test.prototypes["b"]).argmin(1)
    assert float((ya == yb).float().mean()) > 0.9                         # chance: 0.1


def test_saved_runs_keep_their_state_dict_keys():
    """The bank (``distributions/empirical.InputBank``) and the networks keep the keys runs were saved with."""
    keys = set(make_model("a").state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder", "prior_net", "decoder", "bank_b", "bank_c", "bank_filled"}
    assert {"prior_net.out.weight", "decoder.decoder.net.0.weight", "encoder.heads.a.head.weight"} <= keys
    model = make_model("a")
    model.train().loss(make_batch())
    again = make_model("a")
    again.load_state_dict(model.state_dict())
    assert int(again.bank_filled) == B and torch.equal(again.bank_c, model.bank_c)
