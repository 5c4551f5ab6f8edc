"""JMVAE-kl (Suzuki et al. 2016) against a formula written here from the paper and the official code
(masa-su/jmvae on Tars, MVAE.lowerbound: loss = annealing_beta·KL(q(z|x,w)‖p) − log-likelihoods
+ γ·Σ KL(q(z|x,w)‖q(z|x_m)), batch means): float64, fixed noise, loss and gradients to 1e-6. Also the
joint encoder's inference routing, the refusal of incomplete rows and a learning test on the toy data.
"""
from __future__ import annotations

import pytest
import torch

from helpers import TOY_SPECS, assert_same_gradients, check_learns_agreement, toy_data
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from reference import gaussian_kl, head_var as head, toy_log_lik

SPECS = TOY_SPECS
D, B = 4, 6


def make_model(k: int = 1, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="jmvae", latent_dim=D, hidden=16, weights="rescale", k=k,
                                     extra=extra)).double()


def make_batch() -> Batch:
    return Batch(toy_data(B))


# ------------------------------------------------------------------------------------ the reference
def log_lik(model, m, z, x):
    return toy_log_lik(m, model.decoders[m](z.reshape(-1, D)).reshape(*z.shape[:-1], -1), x)


def reference_loss(model, batch, eps, alpha, annealing_beta):
    lam = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}                              # weights=rescale
    mu, var = head(model.joint_encoder(batch.data))
    z = mu + var.sqrt() * eps                                              # (K, B, D)
    loglike = sum(lam[m] * log_lik(model, m, z, batch.data[m]).mean(0) for m in SPECS)
    kl = gaussian_kl(mu, var, torch.zeros_like(mu), torch.ones_like(var))
    kl_m = sum(gaussian_kl(mu, var, *head(model.encoders[m](batch.data[m]))) for m in SPECS)
    return (annealing_beta * kl - loglike + alpha * kl_m).mean()


@pytest.mark.parametrize("alpha,beta,k", [(0.1, 1.0, 1), (1.0, 0.3, 3), (0.0, 1.0, 2)])
def test_loss_and_gradients_match_the_formula(alpha, beta, k):
    model = make_model(k, alpha=alpha)
    batch = make_batch()
    eps = torch.randn(k, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, _ = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, alpha, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    reached = {n.split(".")[0] for n in assert_same_gradients(model, loss, ref)}
    assert reached == ({"joint_encoder", "decoders", "encoders"} if alpha else {"joint_encoder", "decoders"})
    # the comparison can fail: annealing the JM terms too (MultiVae) changes the loss when β < 1 or α ≠ 0
    if alpha and beta != 1.0:
        other = reference_loss(model, batch, eps, alpha * beta, beta)
        assert abs(float(other.detach()) - float(loss.detach())) > 1e-4


def test_inference_routes_subsets_to_joint_encoder_or_product_of_experts():
    model = make_model()
    batch = make_batch()
    with torch.no_grad():
        full = model.encode(batch.data)
        mu, var = head(model.joint_encoder(batch.data))
        torch.testing.assert_close(full.loc[0], mu)
        torch.testing.assert_close(full.scale[0], var.sqrt())
        one = model.encode({"a": batch.data["a"]})
        mu_a, var_a = head(model.encoders["a"](batch.data["a"]))
        torch.testing.assert_close(one.loc[0], mu_a, rtol=1e-7, atol=1e-7)
        pair = model.encode({m: batch.data[m] for m in ("a", "c")})
        mu_c, var_c = head(model.encoders["c"](batch.data["c"]))
        prec = 1 / (var_a + 1e-8) + 1 / (var_c + 1e-8)                   # no prior expert
        torch.testing.assert_close(pair.loc[0], (mu_a / (var_a + 1e-8) + mu_c / (var_c + 1e-8)) / prec)
        torch.testing.assert_close(pair.scale[0], prec.rsqrt())
        # per row: a row missing c uses the product of a and b, complete rows the joint encoder
        mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
        mask["c"][[1, 4]] = False
        mixed = model.encode(batch.data, mask)
        ab = model.encode({m: batch.data[m] for m in ("a", "b")})
        torch.testing.assert_close(mixed.loc[0, [1, 4]], ab.loc[0, [1, 4]])
        keep = [0, 2, 3, 5]
        torch.testing.assert_close(mixed.loc[0, keep], mu[keep])


def test_refusals():
    model = make_model()
    batch = make_batch()
    batch.mask["b"][0] = False
    with pytest.raises(UserError, match="missing modalities"):
        model.loss(batch)
    with pytest.raises(UserError, match="paired_fraction"):
        build_model(SPECS, Config(model="jmvae", paired_fraction=0.5))
    with pytest.raises(UserError, match="objective"):
        build_model(SPECS, Config(model="jmvae", objective="dreg"))
    with pytest.raises(UserError, match="alpha"):
        make_model(alpha=-1)


def test_jmvae_learns_cross_modal_agreement():
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="jmvae", latent_dim=8, hidden=64))
    # default α = 0.1: the unimodal encoders follow; chance: 0.1
    check_learns_agreement(model, toy, epochs=5, lr=4e-3, floor=0.85)
