"""Factorised MMVAE (the factorizing-mmvae study's FUMMVAE + m_infoNCE_naive): the fission contrast and
InfoNCE against explicit formulas, the whole loss and its gradients against an independent float64
transcription of the official objective with fixed noise, masks, the user API, what the latents hold on
a toy dataset, and the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mmvae.cli import main
from mmvae.config import Config, apply_overrides
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec, MultimodalDataset
from torch.distributions import Laplace, Normal

from mmvae.distributions.posteriors import make_posterior, standard_prior
from mmvae.errors import UserError
from mmvae.fusion.mixture import DiagonalMixture
from mmvae.models.fmmvae import FactorisedMMVAE
from mmvae.models.registry import build_model
from mmvae.objectives.infonce import fission_contrast, fission_cross_entropy, info_nce, paired_info_nce

from conftest import MIXED_SPECS, random_batch, random_masks

VECTOR_SPECS = {m: ModalitySpec(m, "vector", (6,), "normal") for m in ("a", "b")}


def fmmvae(specs, *sets, **fields) -> FactorisedMMVAE:
    cfg = Config(model="fmmvae", latent_dim=3, hidden=16, **fields)
    apply_overrides(cfg, list(sets))
    return build_model(specs, cfg)


# ------------------------------------------------------------------------------------- InfoNCE
def nce_by_loops(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """½ [−1/N Σ_i log e^{c(a_i,b_i)/τ} / Σ_j e^{c(a_i,b_j)/τ} + the same with a and b swapped], c = cosine."""
    n = a.shape[0]

    def cos(u, v):
        u, v = u.tolist(), v.tolist()
        dot = sum(x * y for x, y in zip(u, v))
        return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))

    def one_way(x, y):
        total = 0.0
        for i in range(n):
            num = math.exp(cos(x[i], y[i]) / tau)
            den = sum(math.exp(cos(x[i], y[j]) / tau) for j in range(n))
            total += -math.log(num / den)
        return total / n

    return 0.5 * (one_way(a, b) + one_way(b, a))


def test_info_nce_matches_explicit_loops(gen):
    a, b = torch.randn(7, 4, generator=gen, dtype=torch.float64), torch.randn(7, 4, generator=gen, dtype=torch.float64)
    for tau in (0.1, 0.5, 2.0):
        assert float(info_nce(a, b, tau)) == pytest.approx(nce_by_loops(a, b, tau), rel=1e-9)


def test_info_nce_limits():
    # Identical codes carry no information about the partner: exactly log N. Orthogonal paired codes at a
    # low temperature identify the partner: close to 0 (the bound log N − L reaches log N).
    n = 5
    assert float(info_nce(torch.ones(n, 3), torch.ones(n, 3), 0.1)) == pytest.approx(math.log(n), rel=1e-5)
    assert float(info_nce(torch.eye(n), 2 * torch.eye(n), 0.05)) < 1e-6


def test_paired_info_nce_uses_only_co_observed_rows(gen):
    names = ["a", "b", "c"]
    codes = {m: torch.randn(9, 3, generator=gen, dtype=torch.float64) for m in names}
    masks = {"a": torch.tensor([1, 1, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool),
             "b": torch.tensor([1, 0, 1, 1, 1, 1, 0, 0, 1], dtype=torch.bool),
             "c": torch.tensor([1, 0, 0, 0, 1, 0, 0, 1, 0], dtype=torch.bool)}   # (a, c): one row, skipped
    for m in names:
        codes[m][~masks[m]] = float("nan")                   # missing rows may hold anything
    expected = []
    for s, t in (("a", "b"), ("b", "c")):
        rows = [i for i in range(9) if masks[s][i] and masks[t][i]]
        expected.append(nce_by_loops(codes[s][rows], codes[t][rows], 0.3))
    got = paired_info_nce(codes, masks, 0.3)
    assert float(got) == pytest.approx(sum(expected) / len(expected), rel=1e-9)
    none = {m: torch.zeros(9, dtype=torch.bool) for m in names}
    assert float(paired_info_nce(codes, none, 0.3)) == 0.0


# ------------------------------------------------------------------------------ fission contrast
def test_fission_cross_entropy_is_the_sources_soft_target_cross_entropy(gen):
    """Per row and dimension, −[log softmax(d)_1 + log softmax(d)_2] over the four densities d; averaged it is
    exactly what the source computes with torch.nn.CrossEntropyLoss and the targets [1, 1, 0, 0]."""
    b, d = 5, 3
    qs = Normal(torch.randn(b, d, generator=gen, dtype=torch.float64), torch.rand(b, d, generator=gen, dtype=torch.float64) + 0.2)
    qp = Laplace(torch.randn(b, d, generator=gen, dtype=torch.float64), torch.rand(b, d, generator=gen, dtype=torch.float64) + 0.2)
    zs, zp = qs.sample((1,)), qp.sample((1,))
    got = fission_cross_entropy(qs, qp, zs, zp)
    for i in range(b):
        for j in range(d):
            dens = [math.exp(float(q.log_prob(z)[0, i, j])) for q, z in ((qs, zs), (qp, zp), (qp, zs), (qs, zp))]
            total = sum(math.exp(v) for v in dens)
            expected = -(math.log(math.exp(dens[0]) / total) + math.log(math.exp(dens[1]) / total))
            assert float(got[i, j]) == pytest.approx(expected, rel=1e-12)
    logits = torch.stack([qs.log_prob(zs).exp().mean(0), qp.log_prob(zp).exp().mean(0),
                          qp.log_prob(zs).exp().mean(0), qs.log_prob(zp).exp().mean(0)], 1)
    target = torch.cat([torch.ones(b, 2, d, dtype=torch.float64), torch.zeros(b, 2, d, dtype=torch.float64)], 1)
    assert float(got.mean()) == pytest.approx(float(torch.nn.CrossEntropyLoss()(logits, target)), rel=1e-12)


def test_fission_contrast_pushes_the_two_encoders_apart():
    """Minimising the contrast alone moves two overlapping posteriors of one modality apart: the densities
    each assigns to the other's samples (the negatives) fall."""
    torch.manual_seed(0)
    loc_s, loc_p = torch.zeros(64, 4, requires_grad=True), torch.full((64, 4), 0.1).requires_grad_(True)
    raw_s, raw_p = torch.zeros(64, 4, requires_grad=True), torch.zeros(64, 4, requires_grad=True)
    opt = torch.optim.Adam([loc_s, loc_p, raw_s, raw_p], 0.05)

    def negatives():
        qs, qp = make_posterior("laplace", loc_s, raw_s), make_posterior("laplace", loc_p, raw_p)
        zs, zp = qs.rsample((1,)), qp.rsample((1,))
        ones = torch.ones(64, dtype=torch.bool)
        term = fission_contrast({"a": qs}, {"a": qp}, {"a": zs}, {"a": zp}, {"a": ones})
        return term, float((qp.log_prob(zs).exp().mean() + qs.log_prob(zp).exp().mean()).detach())

    first = negatives()
    for _ in range(200):
        term, _ = negatives()
        opt.zero_grad()
        term.backward()
        opt.step()
    last = negatives()
    assert float(last[0].detach()) < float(first[0].detach()) - 0.3 and last[1] < 0.2 * first[1]
    assert float((loc_s - loc_p).detach().abs().mean()) > 1.0


def test_fission_contrast_uses_only_observed_rows(gen):
    q = {m: Normal(torch.randn(6, 2, generator=gen, dtype=torch.float64), torch.ones(6, 2, dtype=torch.float64),
                   validate_args=False) for m in "ab"}
    z = {m: torch.randn(1, 6, 2, generator=gen, dtype=torch.float64) for m in "ab"}
    mask = {"a": torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool), "b": torch.zeros(6, dtype=torch.bool)}
    z["a"][:, ~mask["a"]] = float("nan")
    got = fission_contrast(q, q, z, z, mask)
    rows = mask["a"]
    expected = fission_cross_entropy(Normal(q["a"].loc[rows], q["a"].scale[rows]), Normal(q["a"].loc[rows], q["a"].scale[rows]),
                                     z["a"][:, rows], z["a"][:, rows]).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


# ------------------------------------------------------------------- the loss against the source
@pytest.fixture
def fixed_noise(monkeypatch):
    """Every stratified draw returns loc + scale · ε with ε taken, in call order, from a list of fixed
    tensors (a valid reparameterisation for any fixed ε): the reference formula uses the same ε."""
    noises: list[torch.Tensor] = []
    used: list[int] = [0]

    def draw(self, k):
        eps = noises[used[0] % len(noises)]
        used[0] += 1
        return (self.loc.unsqueeze(1) + self.scale.unsqueeze(1) * eps[:, :k]).clone()

    monkeypatch.setattr(DiagonalMixture, "rsample_stratified", draw)
    return noises


def official_objective(model: FactorisedMMVAE, x: dict, eps_shared, eps_private, alpha: float) -> torch.Tensor:
    """The factorizing-mmvae study's m_infoNCE_naive, transcribed for any M modalities from its code:
    unimodal ELBOs (analytic KL, likelihood weight 1) + the naive MMVAE ELBO 1/M Σ_r [Σ_d λ_d log p(x_d | z_r)
    − KL(q_r ‖ p)] + −α Σ_m CrossEntropyLoss(densities, [1, 1, 0, 0]), ELBOs summed over the batch."""
    fam = model.posterior_family
    names = list(x)

    def post(net, xm, dim):
        out = net(xm)
        loc, raw = (out[0], out[1]) if isinstance(out, tuple) else (out[..., :dim], out[..., dim:])
        return make_posterior(fam, loc, raw)

    qs = {m: post(model.encoders[m], x[m], model.shared_dim) for m in names}
    qp = {m: post(model.private.encoders[m], x[m], model.private_dim) for m in names}
    zs = {m: qs[m].loc + qs[m].scale * eps_shared[g, :1] for g, m in enumerate(names)}       # (1, B, D)
    zp = {m: qp[m].loc + qp[m].scale * eps_private[g, :1] for g, m in enumerate(names)}
    prior_s, prior_p = standard_prior(fam, model.shared_dim), standard_prior(fam, model.private_dim)
    total = 0.0
    for m in names:                                                            # unimodal VAEs
        lpx = model.private.likelihoods[m].log_prob(model.private.decoders[m](zp[m][0]), x[m])
        kl = torch.distributions.kl_divergence(qp[m], prior_p).sum(-1)
        total = total + (lpx - kl).sum()
    mm = 0.0
    for r in names:                                                            # naive MMVAE ELBO
        kl = torch.distributions.kl_divergence(qs[r], prior_s).sum(-1)
        rec = sum(model.weights[d] * model.likelihoods[d].log_prob(model.decoders[d](zs[r][0]), x[d]) for d in names)
        mm = mm + rec - kl
    total = total + (mm / len(names)).sum()
    ce = torch.nn.CrossEntropyLoss()
    for m in names:                                                            # the contrast
        dens = torch.stack([qs[m].log_prob(zs[m]).exp().mean(0), qp[m].log_prob(zp[m]).exp().mean(0),
                            qp[m].log_prob(zs[m]).exp().mean(0), qs[m].log_prob(zp[m]).exp().mean(0)], 1)
        target = torch.cat([torch.ones_like(dens[:, :2]), torch.zeros_like(dens[:, 2:])], 1)
        total = total - alpha * ce(dens, target)
    return total


@pytest.mark.parametrize("posterior", ["laplace", "normal"])
@pytest.mark.parametrize("specs", [VECTOR_SPECS, MIXED_SPECS], ids=["2 vectors", "vector+label+image"])
def test_loss_and_gradients_equal_the_official_objective(gen, fixed_noise, posterior, specs):
    model = fmmvae(specs, "contrast_weight=1.7", posterior=posterior).double()
    batch = random_batch(specs, 6, gen)
    x = {m: v.double() for m, v in batch.data.items()}
    batch = Batch(x)
    m_count, d = len(specs), model.shared_dim
    eps_s = torch.randn(m_count, 1, 6, d, generator=gen, dtype=torch.float64)
    eps_p = torch.randn(m_count, 1, 6, d, generator=gen, dtype=torch.float64)
    fixed_noise += [eps_s, eps_p]                                  # the MMVAE draws first, then the VAEs
    loss, logs = model.loss(batch)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    reference = -official_objective(model, x, eps_s, eps_p, 1.7) / 6   # the source sums over rows; we average
    ref_grads = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)
    for g, r in zip(grads, ref_grads):
        if r is None:
            assert g is None or float(g.abs().max()) == 0.0
        else:
            torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-9)
    assert float(logs["contrast"]) > 0 and torch.isfinite(logs["bound"])


def test_infonce_option_adds_the_infonce_of_shared_means(gen, fixed_noise):
    batch = random_batch(VECTOR_SPECS, 8, gen)
    fixed_noise += [torch.randn(2, 1, 8, 3, generator=gen), torch.randn(2, 1, 8, 2, generator=gen)]
    plain = fmmvae(VECTOR_SPECS, "contrast=none", "private_dim=2")
    weighted = fmmvae(VECTOR_SPECS, "contrast=infonce", "contrast_weight=2.5", "temperature=0.2", "private_dim=2")
    weighted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        base, _ = plain.loss(batch)
        loss, logs = weighted.loss(batch)
        a = weighted.encoders["a"](batch.data["a"])[0].double()
        b = weighted.encoders["b"](batch.data["b"])[0].double()
    nce = nce_by_loops(a, b, 0.2)                           # Laplace mean = loc
    assert float(logs["contrast"]) == pytest.approx(nce, rel=1e-4)
    assert float(loss) == pytest.approx(float(base) + 2.5 * nce, rel=1e-5)


def test_missing_rows_are_never_encoded_and_gradients_are_finite(gen):
    model = fmmvae(MIXED_SPECS)
    masks = random_masks(list(MIXED_SPECS), 10, gen)
    batch = random_batch(MIXED_SPECS, 10, gen, masks)
    seen = {}
    for m, net in model.private.encoders.items():
        net.register_forward_hook(lambda mod, inp, out, m=m: seen.update({m: inp[0].shape[0]}))
    for m in batch.data:
        batch.data[m][~batch.mask[m]] = float("nan")
    loss, logs = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logs["contrast"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert seen == {m: int(masks[m].sum()) for m in MIXED_SPECS}


@pytest.mark.parametrize("objective", ["iwae", "dreg"])
def test_other_estimators_give_finite_losses(gen, objective):
    model = fmmvae(MIXED_SPECS, objective=objective, k=3)
    loss, logs = model.loss(random_batch(MIXED_SPECS, 5, gen, random_masks(list(MIXED_SPECS), 5, gen)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logs["bound"]) and torch.isfinite(logs["contrast"])


# ------------------------------------------------------------------------------------ user API
def test_user_api_shapes_and_latent_representations(gen):
    model = fmmvae(MIXED_SPECS).eval()
    batch = random_batch(MIXED_SPECS, 4, gen)
    assert model.latent_dim == 3 and model.private_dim == 3
    reps = model.latent_representations(batch.data)
    assert set(reps) == {f"{m}/{part}" for m in MIXED_SPECS for part in ("shared", "private")}
    assert reps["a/shared"].shape == (4, 3) and reps["c/private"].shape == (4, 3)
    assert model.embed({"a": batch.data["a"]}).shape == (4, model.latent_dim)
    assert model.generate(3)["c"].shape == (3, 1, 28, 28)
    out = model.translate({"a": batch.data["a"]}, ["b", "c"])
    assert out["b"].shape == (4, 3) and out["c"].shape == (4, 1, 28, 28)
    assert set(model.reconstruct(batch.data)) == set(MIXED_SPECS)


def test_cross_generation_is_the_mmvae_decoding_the_sources_shared_code(gen):
    """As in the source, the MMVAE's decoders read the shared code only: translate decodes the source's
    shared posterior (mean, or one sample) with the target's MMVAE decoder; the unimodal VAEs take no part."""
    model = fmmvae(VECTOR_SPECS).eval()
    x = random_batch(VECTOR_SPECS, 5, gen).data
    with torch.no_grad():
        q = make_posterior(model.posterior_family, *model.encoders["a"](x["a"]))
        expected = model.likelihoods["b"].mean(model.decoders["b"](q.loc))
        torch.manual_seed(3)
        sampled = model.likelihoods["b"].mean(model.decoders["b"](q.rsample()))
        for p in model.private.parameters():
            p.add_(torch.randn_like(p))                      # changing the unimodal VAEs changes nothing
        torch.testing.assert_close(model.translate({"a": x["a"]}, ["b"])["b"], expected)
        torch.manual_seed(3)
        torch.testing.assert_close(model.translate({"a": x["a"]}, ["b"], sample=True)["b"], sampled)


def test_learned_prior_for_the_mmvae_and_each_unimodal_vae(gen):
    model = fmmvae(VECTOR_SPECS, "prior=learned")
    assert model.prior_kind == "learned" and model.private.prior_kind == "learned"
    loss, _ = model.loss(random_batch(VECTOR_SPECS, 6, gen))
    loss.backward()
    learned = [p for n, p in model.named_parameters() if "latent_prior" in n]
    assert len(learned) == 2 and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in learned)


def test_options_are_validated():
    with pytest.raises(UserError, match="temperature"):
        fmmvae(VECTOR_SPECS, "temperature=0")
    with pytest.raises(UserError, match="private_dim"):
        fmmvae(VECTOR_SPECS, "private_dim=zero")
    with pytest.raises(UserError, match="private_dim=2.*dimension"):
        fmmvae(VECTOR_SPECS, "private_dim=2")                      # fission compares densities across latents
    assert fmmvae(VECTOR_SPECS, "private_dim=2", "contrast=infonce").private_dim == 2
    with pytest.raises(UserError, match="contrast"):
        fmmvae(VECTOR_SPECS, "contrast=fusion")
    with pytest.raises(UserError, match="unknown option"):
        fmmvae(VECTOR_SPECS, "infonce_weight=1")
    with pytest.raises(UserError, match="at least 2"):
        fmmvae({"a": VECTOR_SPECS["a"]})


# ------------------------------------------------------------------------- what the latents hold
def toy_factorised(n: int, classes: int = 5, styles: int = 4, dim: int = 16, seed: int = 0):
    """Two modalities sharing a class c, each with its own style u_m: x_m = P_m[c] + Q_m[u_m] + noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    data, style = {}, {}
    for m in ("a", "b"):
        protos, looks = torch.randn(classes, dim, generator=g) * 1.5, torch.randn(styles, dim, generator=g) * 1.5
        style[m] = torch.randint(0, styles, (n,), generator=g)
        data[m] = protos[y] + looks[style[m]] + 0.3 * torch.randn(n, dim, generator=g)
    specs = {m: ModalitySpec(m, "vector", (dim,), "normal") for m in data}
    return MultimodalDataset(specs, data, label=y, num_classes=classes), style


def probe(features: torch.Tensor, target: torch.Tensor, n_train: int) -> float:
    clf = LogisticRegression(max_iter=2000).fit(features[:n_train].numpy(), target[:n_train].numpy())
    return clf.score(features[n_train:].numpy(), target[n_train:].numpy())


def test_shared_latent_carries_the_shared_class_and_private_latents_their_style():
    """Neither latent collapses. (Unlike the [shared, private] decoders this model had before, the source's
    model does not keep the class out of the private latent: each unimodal VAE is a full VAE of its
    modality, as the study's table shows with 93 % MNIST accuracy in its unimodal latent.)"""
    data, style = toy_factorised(1200)
    model = build_model(data.specs, Config(model="fmmvae", latent_dim=4, hidden=64))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    train = data.subset(torch.arange(300, 1200))
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        for batch in train.batches(64, shuffle=True, generator=g):
            loss, _ = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    order = torch.cat([torch.arange(300, 1200), torch.arange(300)])   # probe: train rows, then test rows
    reps = model.latent_representations({m: x[order] for m, x in data.data.items()})
    label = data.label[order]
    for m in ("a", "b"):
        assert probe(reps[f"{m}/shared"], label, 900) >= 0.9            # 5 classes: chance 0.2
        assert probe(reps[f"{m}/private"], style[m][order], 900) >= 0.8  # 4 styles: chance 0.25


# ------------------------------------------------------------------------------------------ CLI
def test_cli_trains_fmmvae_on_toy(tmp_path, capsys):
    from mmvae.runs import load_run

    out = tmp_path / "run"
    code = main(["train", "--model", "fmmvae", "--dataset", "toy", "--epochs", "1", "--latent-dim", "4",
                 "--out", str(out), "--set", "hidden=32", "--set", "data.n=500", "--set", "contrast_weight=0.5"])
    assert code == 0
    run = load_run(out)
    assert isinstance(run.model, FactorisedMMVAE) and run.model.private_dim == 4
    assert (out / "samples.png").exists()
    # `mmvae evaluate` reports the latent accuracy of the shared and the private latents separately.
    assert main(["evaluate", str(out), "--metrics", "latent", "--quiet"]) == 0
    record = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert set(record["latent_accuracy"]) == {"a/shared", "a/private", "b/shared", "b/private"}
    assert main(["train", "--model", "fmmvae", "--dataset", "toy", "--epochs", "1", "--out", str(tmp_path / "bad"),
                 "--set", "temperature=-1"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_fixed_noise_fixes_the_loss():
    """model.loss(batch, noise=FixedNoise(...)) reaches every draw (shared ``s``, private ``w``): the same
    noise gives the same loss, other noise another, and the shared and private draws are distinct."""
    from mmvae.distributions.noise import FixedNoise

    model = fmmvae(VECTOR_SPECS).double()
    gen = torch.Generator().manual_seed(0)
    batch = random_batch(VECTOR_SPECS, 5, gen)
    batch = type(batch)({m: v.double() for m, v in batch.data.items()}, batch.mask)
    noise = FixedNoise(seed=1)
    a = model.loss(batch, noise=noise)[0]
    assert set(noise.eps) >= {"s", "w"}
    torch.testing.assert_close(model.loss(batch, noise=noise)[0], a)
    torch.testing.assert_close(model.loss(batch, noise=FixedNoise(seed=1))[0], a)
    assert not torch.allclose(model.loss(batch, noise=FixedNoise(seed=2))[0], a)
