"""Nexus (Vasco et al. 2022) against a formula written here from the paper, the official code
(miguelsvasco/nexus_pytorch: ``NexusModel.forward``, ``mean_drop``, ``Trainer.nexus_loss_function``) and
MultiVae's ``Nexus.forward``: float64, fixed noise and dropout picks, loss and gradients of every
parameter to 1e-6, complete and partially observed batches. Also the forced-perceptual-dropout
distribution, the inference routes, refusals, a CLI run with evaluation and a learning test."""
from __future__ import annotations

import json
import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from helpers import TOY_SPECS, toy_batch
from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise, Noise
from mmvae.errors import UserError
from mmvae.fusion.messages import forced_dropout
from mmvae.models.registry import build_model
from reference import head_std as head, toy_log_lik
from test_learning import agreement, fit

SPECS = TOY_SPECS
D, DM, B = 4, 3, 8                                   # nexus dim, modality dim, rows
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}          # weights=rescale


def make_model(**extra) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"modality_dim": DM, "message_dim": 6, "bottom_beta": 0.7, "gamma": 2.0, "dropout": 0.5, **extra}
    return build_model(SPECS, Config(model="nexus", latent_dim=D, hidden=16, weights="rescale", beta=1.5,
                                     extra=extra)).double()


def make_batch(missing: bool) -> Batch:
    return toy_batch(B, {"b": [0, 1], "a": [2], "c": [1, 3]} if missing else None)


# ------------------------------------------------------------------------------------ the reference
def log_lik(model, m, z, x):
    return toy_log_lik(m, model.decoders[m](z), x)


def std_normal_kl(mu, std):
    return 0.5 * (std ** 2 + mu ** 2 - 1 - 2 * torch.log(std)).sum(-1)


def reference_loss(model, batch, eps, picks, beta, training, stop_gradient=True):
    names = list(SPECS)
    ramp = beta / 1.5
    obs = {m: batch.mask[m].double() for m in names}
    bottom, z = 0, {}
    for m in names:
        mu, std = head(model.encoders[m](batch.data[m]))
        zm = mu + std * eps[f"z/{m}"]
        bottom = bottom + obs[m] * (LAMBDA[m] * log_lik(model, m, zm, batch.data[m]) - ramp * 0.7 * std_normal_kl(mu, std))
        z[m] = zm.detach() if stop_gradient else zm
    # which messages each row's nexus reads: the official mean_drop for complete rows, the observed ones otherwise
    subsets = [s for r in range(1, 4) for s in combinations(names, r)]
    keep = torch.stack([batch.mask[m] for m in names]).double()                  # (M, B)
    if training:
        for b in range(B):
            if bool(keep[:, b].all()):
                keep[:, b] = torch.tensor([float(m in subsets[int(picks[0, b])]) for m in names])
    msgs = torch.stack([model.messages[m](z[m]) for m in names])                  # (M, B, F)
    h = (keep.unsqueeze(-1) * msgs).sum(0) / keep.sum(0).unsqueeze(-1)
    mu_s, std_s = head(model.nexus_encoder(h))
    z_s = mu_s + std_s * eps["nexus"]
    top = sum(2.0 * obs[m] * (-0.5 * ((z[m] - model.top_decoders[m](z_s)) ** 2).sum(-1) - DM / 2 * math.log(2 * math.pi))
              for m in names)
    return -(bottom + top - beta * std_normal_kl(mu_s, std_s)).mean()


@pytest.mark.parametrize("missing,beta,training", [(False, 1.5, True), (True, 0.6, True), (True, 1.5, False)])
def test_loss_and_gradients_match_the_formula(missing, beta, training):
    model = make_model()
    model.train(training)
    batch = make_batch(missing)
    noise = FixedNoise(seed=3)
    loss, _ = model.loss(batch, beta, noise=noise)
    picks = noise.picks.get("dropout")
    assert (picks is not None) == training
    ref = reference_loss(model, batch, noise.eps, picks, beta, training)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    params = list(model.parameters())
    g_lib = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params, retain_graph=True, allow_unused=True)
    for (name, p), a, b in zip(model.named_parameters(), g_lib, g_ref):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=name: f"{n}: {s}")
    # the comparison can fail on a detail: without the stop-gradient the top level trains the encoders too
    other = reference_loss(model, batch, noise.eps, picks, beta, training, stop_gradient=False)
    g_other = torch.autograd.grad(other, [model.encoders["a"].head.weight])[0]
    assert (g_other - g_lib[[n for n, _ in model.named_parameters()].index("encoders.a.head.weight")]).abs().max() > 1e-4


class Capture(Noise):
    def choice(self, weight, k, name):
        self.weight = weight
        return super().choice(weight, k, name)


def test_forced_perceptual_dropout_distribution():
    """P(keep S) = p / ((M − 1) C(M, |S|)) for every proper S, 1 − p for all: the size of the dropped set
    uniform on 1..M−1 and the set uniform among those of its size (official ``mean_drop``)."""
    names = ["a", "b", "c", "d"]
    masks = {m: torch.ones(3, dtype=torch.bool) for m in names}
    masks["d"][2] = False                                                        # row 2: keeps a, b, c
    noise = Capture()
    forced_dropout(masks, 0.3, noise)
    subsets = [s for r in range(1, 5) for s in combinations(names, r)]
    for i, s in enumerate(subsets):
        want = 0.7 if len(s) == 4 else 0.3 / (3 * math.comb(4, len(s)))
        assert math.isclose(float(noise.weight[i, 0]), want, rel_tol=1e-12)
        assert float(noise.weight[i, 2]) == float(s == ("a", "b", "c"))
    kept = forced_dropout({m: torch.ones(20000, dtype=torch.bool) for m in names}, 0.3)
    sizes = torch.stack(list(kept.values())).sum(0)
    assert abs(float((sizes == 4).double().mean()) - 0.7) < 0.02
    for n in (1, 2, 3):
        assert abs(float((sizes == n).double().mean()) - 0.1) < 0.015


def test_inference_routes():
    model = make_model().eval()
    batch = make_batch(False)
    with torch.no_grad():
        mu = {m: head(model.encoders[m](batch.data[m]))[0] for m in ("a", "c")}
        h = (model.messages["a"](mu["a"]) + model.messages["c"](mu["c"])) / 2
        loc, _ = head(model.nexus_encoder(h))
        post = model.encode({m: batch.data[m] for m in ("a", "c")})
        torch.testing.assert_close(post.loc[0], loc)
        out = model.translate({m: batch.data[m] for m in ("a", "c")}, ["a", "b"])
        torch.testing.assert_close(out["a"], model.decoders["a"](mu["a"]))         # own latent
        torch.testing.assert_close(out["b"], F.softmax(model.decoders["b"](model.top_decoders["b"](loc)), -1))
        assert model.generate(5)["c"].shape == (5, 4)


def test_refusals():
    for cfg, match in [(dict(objective="iwae"), "objective"), (dict(k=3), "k=3"), (dict(posterior="laplace"), "posterior"),
                       (dict(extra={"dropout": 1.5}), "dropout"), (dict(prior="learned"), "prior"),
                       (dict(extra={"modality_dim": 0}), "modality_dim")]:
        with pytest.raises(UserError, match=match):
            build_model(SPECS, Config(model="nexus", **cfg))
    with pytest.raises(UserError, match="at least 2"):
        build_model({"a": SPECS["a"]}, Config(model="nexus"))


def test_cli_half_paired_then_evaluate(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "toy", "--set", "data.n=400", "--batch-size", "64", "--set", "hidden=24",
                 "--latent-dim", "3", "--device", "cpu", "--model", "nexus", "--set", "paired_fraction=0.5",
                 "--epochs", "2", "--out", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--metrics", "likelihood,latent,relatedness", "--quiet"]) == 0
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["log_likelihood"] is None and "no single p(x)" in metrics["notes"]["log_likelihood"]
    assert set(metrics["latent_accuracy"]) == {"a", "b", "joint"}
    assert metrics["relatedness"]["pairs"]


@pytest.mark.parametrize("gamma", [None, 1.0])
def test_nexus_learns_cross_modal_agreement(gamma):
    """The default γ = 10 learns; MultiVae's default γ = 1 leaves the nexus near its prior (the unit-variance
    Gaussian on z_m weighs little against the nexus KL) and does not, in the same budget."""
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="nexus", latent_dim=8, hidden=64,
                                          extra={} if gamma is None else {"gamma": gamma}))
    assert max(agreement(model.eval(), toy.test, "a", "b"), agreement(model, toy.test, "b", "a")) < 0.5
    fit(model, toy.train, ["a", "b"], epochs=6, lr=4e-3)
    after = {"a->b": agreement(model, toy.test, "a", "b"), "b->a": agreement(model, toy.test, "b", "a")}
    if gamma is None:
        assert min(after.values()) > 0.85, after                                # chance: 0.1
    else:
        assert max(after.values()) < 0.6, after
