"""Factorised MMVAE: the InfoNCE term, the objective as a sum of proper bounds, masks, the user API, the
shared/private split on a toy dataset with a private factor per modality, and the CLI."""
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
from mmvae.distributions.posteriors import make_posterior, standard_prior
from mmvae.errors import UserError
from mmvae.fusion.mixture import DiagonalMixture
from mmvae.models.fmmvae import FactorisedMMVAE
from mmvae.models.registry import build_model
from mmvae.objectives.infonce import info_nce, paired_info_nce

from conftest import MIXED_SPECS, random_batch, random_masks

VECTOR_SPECS = {m: ModalitySpec(m, "vector", (6,), "normal") for m in ("a", "b")}


def fmmvae(specs, *sets, **fields) -> FactorisedMMVAE:
    cfg = Config(model="fmmvae", latent_dim=3, hidden=16, **fields)
    apply_overrides(cfg, ["private_dim=2", *sets])
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


# ----------------------------------------------------------------------------------- objective
def _posterior(net, x, family):
    loc, raw = net(x)
    return make_posterior(family, loc, raw)


def objective_by_loops(model: FactorisedMMVAE, batch: Batch) -> float:
    """Naive MMVAE ELBO of the factorised model + the unimodal ELBOs, row by row, evaluated at the
    posterior means (the sampler is patched to return them), with torch.distributions directly."""
    fam, ds, names = model.posterior_family, model.shared_dim, model.modalities
    p_s, p_w = standard_prior(fam, ds), standard_prior(fam, model.private_dim)

    def lp(dist, v):
        return float(dist.log_prob(v).sum())

    def loglik(n, s, w, row):
        out = model.decoders[n](torch.cat([s, w])[None])
        return model.weights[n] * float(model.likelihoods[n].log_prob(out, batch.data[n][row:row + 1])[0])

    total = 0.0
    for r in range(batch.size):
        seen = [m for m in names if batch.mask[m][r]]
        qs = {m: _posterior(model.encoders[m], batch.data[m][r:r + 1], fam) for m in seen}
        qw = {m: _posterior(model.private_encoders[m], batch.data[m][r:r + 1], fam) for m in seen}
        joint = 0.0
        for g in seen:                                       # stratum: s from expert g
            s = qs[g].loc[0]
            mix = math.log(sum(math.exp(lp(qs[h], s[None])) for h in seen) / len(seen))
            term = lp(p_s, s) - mix
            for n in seen:
                w = qw[n].loc[0]
                term += loglik(n, s, w, r) + lp(p_w, w) - lp(qw[n], w[None])
            joint += term / len(seen)
        unimodal = 0.0
        for m in seen:
            s, w = qs[m].loc[0], qw[m].loc[0]
            unimodal += (loglik(m, s, w, r) + lp(p_s, s) - lp(qs[m], s[None]) + lp(p_w, w) - lp(qw[m], w[None]))
        total += joint + unimodal
    return total / batch.size


@pytest.fixture
def means_as_samples(monkeypatch):
    monkeypatch.setattr(DiagonalMixture, "rsample_stratified",
                        lambda self, k: self.loc.unsqueeze(1).expand(-1, k, -1, -1))


@pytest.mark.parametrize("posterior", ["laplace", "normal"])
def test_zero_weight_objective_is_joint_plus_unimodal_bounds(gen, means_as_samples, posterior):
    model = fmmvae(MIXED_SPECS, "infonce_weight=0", posterior=posterior)
    batch = random_batch(MIXED_SPECS, 6, gen, random_masks(list(MIXED_SPECS), 6, gen))
    for m in batch.data:
        batch.data[m][~batch.mask[m]] = float("nan")         # never encoded, never scored
    with torch.no_grad():
        loss, logs = model.loss(batch)
        expected = objective_by_loops(model, batch)
    assert float(loss) == pytest.approx(-expected, rel=1e-4)
    assert float(logs["bound"]) == pytest.approx(-float(loss), rel=1e-5)


def test_weighted_objective_adds_infonce_of_shared_means(gen, means_as_samples):
    batch = random_batch(VECTOR_SPECS, 8, gen)
    plain = fmmvae(VECTOR_SPECS, "infonce_weight=0")
    weighted = fmmvae(VECTOR_SPECS, "infonce_weight=2.5", "temperature=0.2")
    weighted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        base, _ = plain.loss(batch)
        loss, logs = weighted.loss(batch)
        a = weighted.encoders["a"](batch.data["a"])[0].double()
        b = weighted.encoders["b"](batch.data["b"])[0].double()
    nce = nce_by_loops(a, b, 0.2)                           # Laplace mean = loc
    assert float(logs["infonce"]) == pytest.approx(nce, rel=1e-4)
    assert float(loss) == pytest.approx(float(base) + 2.5 * nce, rel=1e-5)


def test_missing_rows_are_never_encoded_and_gradients_are_finite(gen):
    model = fmmvae(MIXED_SPECS)
    masks = random_masks(list(MIXED_SPECS), 10, gen)
    batch = random_batch(MIXED_SPECS, 10, gen, masks)
    seen = {}
    for m, net in model.private_encoders.items():
        net.register_forward_hook(lambda mod, inp, out, m=m: seen.update({m: inp[0].shape[0]}))
    for m in batch.data:
        batch.data[m][~batch.mask[m]] = float("nan")
    loss, _ = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert seen == {m: int(masks[m].sum()) for m in MIXED_SPECS}


@pytest.mark.parametrize("objective", ["iwae", "dreg"])
def test_other_estimators_give_finite_losses(gen, objective):
    model = fmmvae(MIXED_SPECS, objective=objective, k=3)
    loss, logs = model.loss(random_batch(MIXED_SPECS, 5, gen, random_masks(list(MIXED_SPECS), 5, gen)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logs["bound"]) and torch.isfinite(logs["infonce"])


# ------------------------------------------------------------------------------------ user API
def test_user_api_shapes_and_latent_representations(gen):
    model = fmmvae(MIXED_SPECS).eval()
    batch = random_batch(MIXED_SPECS, 4, gen)
    assert model.latent_dim == 3 + 3 * 2
    reps = model.latent_representations(batch.data)
    assert set(reps) == {f"{m}/{part}" for m in MIXED_SPECS for part in ("shared", "private")}
    assert reps["a/shared"].shape == (4, 3) and reps["c/private"].shape == (4, 2)
    assert model.embed({"a": batch.data["a"]}).shape == (4, model.latent_dim)
    assert model.generate(3)["c"].shape == (3, 1, 28, 28)
    out = model.translate({"a": batch.data["a"]}, ["b", "c"])
    assert out["b"].shape == (4, 3) and out["c"].shape == (4, 1, 28, 28)
    assert set(model.reconstruct(batch.data)) == set(MIXED_SPECS)


def test_cross_generation_uses_source_shared_code_and_target_prior_private(gen):
    model = fmmvae(VECTOR_SPECS).eval()
    x = random_batch(VECTOR_SPECS, 5, gen).data
    with torch.no_grad():
        s_a = model.encoders["a"](x["a"])[0]                 # Laplace mean of the source's shared expert
        torch.manual_seed(3)
        w_b = model.prior.sample((5,))[:, model._private_slices["b"]]
        expected = model.likelihoods["b"].mean(model.decoders["b"](torch.cat([s_a, w_b], -1)))
        torch.manual_seed(3)
        got = model.translate({"a": x["a"]}, ["b"])["b"]
        # Reconstruction keeps the target's own private code (its posterior mean).
        w_own = model.private_encoders["b"](x["b"])[0]
        s_mix = 0.5 * (s_a + model.encoders["b"](x["b"])[0])
        recon = model.likelihoods["b"].mean(model.decoders["b"](torch.cat([s_mix, w_own], -1)))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(model.reconstruct(x)["b"], recon)


def test_options_are_validated():
    with pytest.raises(UserError, match="temperature"):
        fmmvae(VECTOR_SPECS, "temperature=0")
    with pytest.raises(UserError, match="private_dim"):
        fmmvae(VECTOR_SPECS, "private_dim=zero")
    with pytest.raises(UserError, match="unknown option"):
        fmmvae(VECTOR_SPECS, "infonce=1")
    with pytest.raises(UserError, match="at least 2"):
        fmmvae({"a": VECTOR_SPECS["a"]})


# ----------------------------------------------------------------------- shared vs private split
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
    data, style = toy_factorised(1200)
    model = build_model(data.specs, apply_overrides(Config(model="fmmvae", latent_dim=4, hidden=64),
                                                    ["private_dim=2"]))
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
        shared, private = reps[f"{m}/shared"], reps[f"{m}/private"]
        assert probe(shared, label, 900) >= 0.9                 # 5 classes: chance 0.2
        assert probe(private, label, 900) <= 0.5
        assert probe(private, style[m][order], 900) >= 0.8     # not collapsed: it holds the style


# ------------------------------------------------------------------------------------------ CLI
def test_cli_trains_fmmvae_on_toy(tmp_path, capsys):
    from mmvae.runs import load_run

    out = tmp_path / "run"
    code = main(["train", "--model", "fmmvae", "--dataset", "toy", "--epochs", "1", "--latent-dim", "4",
                 "--out", str(out), "--set", "hidden=32", "--set", "data.n=500", "--set", "private_dim=2", "--set", "infonce_weight=0.5"])
    assert code == 0
    run = load_run(out)
    assert isinstance(run.model, FactorisedMMVAE) and run.model.private_dim == 2
    assert (out / "samples.png").exists()
    # `mmvae evaluate` reports the latent accuracy of the shared and the private latents separately.
    assert main(["evaluate", str(out), "--metrics", "latent", "--quiet"]) == 0
    record = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert set(record["latent_accuracy"]) == {"a/shared", "a/private", "b/shared", "b/private"}
    assert main(["train", "--model", "fmmvae", "--dataset", "toy", "--epochs", "1", "--out", str(tmp_path / "bad"),
                 "--set", "temperature=-1"]) == 2
    assert "temperature" in capsys.readouterr().err
