"""JNF (Senellart & Allassonnière 2025; MultiVae's JNF) against formulas written here from the paper and
MultiVae's ``JNF.forward`` / ``_compute_ljm`` and pythae's ``MAF``/``MADE`` (float64, fixed noise, loss
and the gradients of every parameter to 1e-6), its inference routes, its refusals, the trainer's stages
with exact resume, and a learning test on the toy data."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import TOY_SPECS, assert_same_gradients, toy_data
from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.flows import FlowMixture, FlowPosterior
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from mmvae.train.schedule import training_stage
from reference import head_std as head
from test_learning import agreement

SPECS = TOY_SPECS
D, B = 4, 6
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}                                  # weights=rescale


def make_model(k: int = 1, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(SPECS, Config(model="jnf", latent_dim=D, hidden=16, weights="rescale", k=k,
                                      extra={"flow_hidden": 12, **extra})).double()
    with torch.no_grad():                     # flows away from their near-identity start
        for p in model.flows.parameters():
            p.mul_(2.0)
    return model


def make_batch() -> Batch:
    return Batch(toy_data(B))


# ------------------------------------------------------------------------------------ the reference
def normal_logpdf(x, mu, std):
    return -0.5 * ((x - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def log_lik(model, m, z, x):
    out = model.decoders[m](z.reshape(-1, D)).reshape(*z.shape[:-1], -1)
    if m == "a":
        return normal_logpdf(x, out, torch.tensor(0.75, dtype=x.dtype)).sum(-1)
    if m == "c":
        return (-(x - out).abs() / 0.75 - math.log(2 * 0.75)).sum(-1)
    return (x * F.log_softmax(out, dim=-1)).sum(-1)


def made(block, x):
    """pythae's MADE: masked linear layers (weight * mask), ReLU between, (μ, log-scale) halves."""
    layers = [m for m in block.net if isinstance(m, torch.nn.Linear)]
    h = x
    for i, lin in enumerate(layers):
        h = h @ (lin.weight * lin.mask).T + lin.bias
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h[..., :D], h[..., D:]


def maf(flow, z, flip: bool = True):
    """pythae's MAF.forward: x = (x − μ) e^{−s}, log-det −Σ s, then reverse the dimensions."""
    logdet = 0
    for block in flow.blocks:
        mu, s = made(block, z)
        z = (z - mu) * torch.exp(-s)
        logdet = logdet - s.sum(-1)
        if flip:
            z = z.flip(-1)
    return z, logdet


def reference_stage0(model, batch, eps, beta):
    mu, std = head(model.joint_encoder(batch.data))
    z = mu + std * eps                                                        # (K, B, D)
    rec = sum(LAMBDA[m] * log_lik(model, m, z, batch.data[m]).mean(0) for m in SPECS)
    kl = 0.5 * (std ** 2 + mu ** 2 - 1 - 2 * torch.log(std)).sum(-1)
    return (beta * kl - rec).mean()


def reference_stage1(model, batch, eps, flip=True):
    with torch.no_grad():
        mu, std = head(model.joint_encoder(batch.data))
    z = mu + std * eps                                                        # MultiVae: frozen joint VAE
    total = 0
    for m in SPECS:
        mu_m, std_m = head(model.encoders[m](batch.data[m]))
        u, logdet = maf(model.flows[m], z, flip)
        total = total + normal_logpdf(u, mu_m, std_m).sum(-1) + logdet      # MultiVae's −ljm per row
    return -total.mean()


def grads_match(model, loss, ref):
    """The gradients agree; returns the top-level modules the library's gradient reaches."""
    return {n.split(".")[0] for n in assert_same_gradients(model, loss, ref, retain_graph=True)}


@pytest.mark.parametrize("beta,k", [(1.0, 1), (0.3, 2)])
def test_stage0_joint_elbo_and_gradients_match_the_formula(beta, k):
    model = make_model(k)
    batch = make_batch()
    eps = torch.randn(k, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_stage0(model, batch, eps, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    assert grads_match(model, loss, ref) == {"joint_encoder", "decoders"}   # stage 0: the joint VAE only


@pytest.mark.parametrize("k", [1, 3])
def test_stage1_unimodal_flow_loss_and_gradients_match_the_formula(k):
    model = make_model(k)
    model.stage = 1
    batch = make_batch()
    eps = torch.randn(k, B, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss, _ = model.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_stage1(model, batch, eps)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    assert grads_match(model, loss, ref) == {"encoders", "flows"}            # the joint VAE is frozen
    # the comparison can fail on a detail: without the reversal between MADE blocks the loss moves
    assert abs(float(reference_stage1(model, batch, eps, flip=False).detach()) - float(loss.detach())) > 1e-3


def test_stages_follow_the_epoch():
    model = make_model(joint_epochs=3)
    assert [training_stage(model, e) for e in range(5)] == [0, 0, 0, 1, 1]
    assert training_stage(torch.nn.Linear(1, 1), 7) == 0                    # one-stage models


def test_inference_routes():
    model = make_model(hmc_steps=20)
    batch = make_batch()
    with torch.no_grad():
        full = model.encode(batch.data)
        mu, std = head(model.joint_encoder(batch.data))
        torch.testing.assert_close(full.loc[0], mu)
        torch.testing.assert_close(full.scale[0], std)
        one = model.encode({"a": batch.data["a"]})
        assert isinstance(one, FlowPosterior)
        z = torch.randn(2, B, D, dtype=torch.float64)
        mu_a, std_a = head(model.encoders["a"](batch.data["a"]))
        u, logdet = maf(model.flows["a"], z)
        torch.testing.assert_close(one.log_prob(z), normal_logpdf(u, mu_a, std_a).sum(-1) + logdet)
        pair = model.encode({m: batch.data[m] for m in ("a", "c")})
        assert isinstance(pair, FlowMixture)
        torch.manual_seed(4)
        out = model.translate({m: batch.data[m] for m in ("a", "c")}, ["b"], sample=True)["b"]
        assert out.shape == (B, 3) and torch.isfinite(out).all()
        assert torch.isfinite(model.embed({m: batch.data[m] for m in ("b", "c")})).all()
    batch.mask["c"][0] = False
    with pytest.raises(ValueError, match="every row"):
        model.encode(batch.data, batch.mask)


def test_refusals():
    model = make_model()
    batch = make_batch()
    batch.mask["b"][0] = False
    with pytest.raises(UserError, match="missing modalities"):
        model.loss(batch)
    for cfg, match in [(dict(paired_fraction=0.5), "paired_fraction"), (dict(objective="iwae"), "objective"),
                       (dict(warmup=2.0), "joint_epochs"), (dict(posterior="laplace"), "posterior"),
                       (dict(extra={"joint_epochs": -1}), "joint_epochs")]:
        with pytest.raises(UserError, match=match):
            build_model(SPECS, Config(model="jnf", **cfg))
    with pytest.raises(UserError, match="at least 2"):
        build_model({"a": SPECS["a"]}, Config(model="jnf"))


TOY = ["train", "--dataset", "toy", "--set", "data.n=400", "--batch-size", "64", "--set", "hidden=24",
       "--latent-dim", "3", "--device", "cpu", "--seed", "1", "--model", "jnf", "--set", "joint_epochs=1",
       "--set", "flow_hidden=8", "--set", "hmc_steps=3", "--epochs", "2", "--quiet"]


def test_cli_stages_freeze_the_joint_vae_and_resume_exactly(tmp_path):
    from safetensors.torch import load_file

    first, ref, cut = tmp_path / "first", tmp_path / "ref", tmp_path / "cut"
    assert main([*TOY, "--out", str(ref)]) == 0
    assert main([*TOY, "--out", str(first), "--epochs", "1"]) == 0                 # stage 0 only
    records = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records if "epoch" in r] == [0, 1]
    assert "train_unimodal_nll" in records[1] and "train_kl" in records[0]
    w1, w2 = load_file(first / "model.safetensors"), load_file(ref / "model.safetensors")
    for key in (k for k in w1 if not k.endswith(".mask")):                   # masks: fixed buffers
        same = torch.equal(w1[key], w2[key])
        assert same == key.startswith(("joint_encoder.", "decoders.")), key   # stage 1 trains the rest only
    # cut inside the second stage, then resume: the same weights as the run never interrupted
    assert main([*TOY, "--out", str(cut), "--max-steps", "8"]) == 0
    assert main(["train", "--resume", "--out", str(cut), "--quiet"]) == 0
    w3 = load_file(cut / "model.safetensors")
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
    # evaluate: likelihoods through the joint encoder and the flow posteriors, pictures, latent probe
    assert main(["evaluate", str(ref), "--metrics", "likelihood,latent,pictures", "--k", "4", "--rows", "20",
                 "--quiet"]) == 0
    metrics = json.loads((ref / "evaluation" / "metrics.json").read_text())
    ll = metrics["log_likelihood"]
    assert all(math.isfinite(v) for v in [ll["joint"], *ll["marginal"].values()]), ll


def test_jnf_learns_cross_modal_agreement():
    from mmvae.data.toy import toy_bimodal

    toy = toy_bimodal(n=2000, classes=10, noise=0.5)
    torch.manual_seed(0)
    model = build_model(toy.specs, Config(model="jnf", latent_dim=8, hidden=64, extra={"flow_hidden": 32}))
    assert max(agreement(model.eval(), toy.test, "a", "b"), agreement(model, toy.test, "b", "a")) < 0.5
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    g = torch.Generator().manual_seed(0)
    for stage, epochs in ((0, 4), (1, 3)):
        if stage == 1:            # the joint VAE alone does not translate: the unimodal encoders are untrained
            assert agreement(model.eval(), toy.test, "a", "b") < 0.5
        model.stage = stage
        model.train()
        for _ in range(epochs):
            for batch in toy.train.batches(64, shuffle=True, generator=g):
                loss, _ = model.loss(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    after = {"a->b": agreement(model, toy.test, "a", "b"), "b->a": agreement(model, toy.test, "b", "a")}
    assert min(after.values()) > 0.85, after                                   # chance: 0.1
