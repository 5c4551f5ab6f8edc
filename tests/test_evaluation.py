"""Evaluation (issue 4, item 8): importance-sampled likelihoods against exact values and chunk invariance,
coherence at its two extremes, closed-form W2, unlabeled data refused for label metrics only, and
`mmvae evaluate` end to end on a tiny trained run."""
from __future__ import annotations

import json
import math

import matplotlib.legend
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from conftest import build_tiny
from mmvae.cli import main
from mmvae.data.dataset import ModalitySpec, MultimodalDataset, one_hot
from mmvae.data.toy import toy_bimodal
from mmvae.evaluation.evaluate import evaluate_model, Options
from mmvae.evaluation.likelihood import (CPU_ROWS_PER_PASS, conditional_log_likelihood, default_sample_chunk,
                                         log_likelihoods, summarise)
from mmvae.evaluation.relatedness import w2_diagonal, w2_matrix
from mmvae.fusion.fusions import mixture_of_experts, product_of_experts
from mmvae.models.multimodal import MultimodalVAE
from mmvae.objectives.estimators import make_estimator


# ----------------------------------------------------------------------------- linear-Gaussian model
class Linear(nn.Module):
    """x -> (A x + c, raw) with a constant raw scale: an encoder that returns a fixed Gaussian family."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor, raw: torch.Tensor):
        super().__init__()
        self.a, self.c, self.raw = nn.Parameter(a), nn.Parameter(c), nn.Parameter(raw)

    def forward(self, x):
        return x @ self.a.t() + self.c, self.raw.expand(x.shape[0], -1)


class Affine(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, z):
        return z @ self.w.t() + self.b


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def linear_gaussian(names, n_obs: int = 3, d: int = 2, sigma: float = 0.5, seed: int = 0,
                    scale_factor: float = 1.0, shift: float = 0.0, fusion=None):
    """x_m = W_m z + b_m + N(0, σ² I), z ~ N(0, I). Each encoder is the exact posterior q(z | x_m) (times
    ``scale_factor`` and shifted by ``shift`` to make it approximate); columns of W_m are orthogonal, so
    that posterior is diagonal. Returns the model (float64) and the exact joint Gaussian of the data."""
    g = torch.Generator().manual_seed(seed)
    specs, enc, dec, ws, bs = {}, {}, {}, [], []
    for m in names:
        q, _ = torch.linalg.qr(torch.randn(n_obs, d, generator=g, dtype=torch.float64))
        w = q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:d]
        b = torch.randn(n_obs, generator=g, dtype=torch.float64)
        post_var = 1.0 / (1.0 + (w * w).sum(0) / sigma ** 2)                    # diag of (I + WᵀW/σ²)⁻¹
        a = post_var[:, None] * w.t() / sigma ** 2
        raw = inv_softplus(post_var.sqrt() * scale_factor).unsqueeze(0)
        enc[m] = Linear(a, -a @ b + shift, raw)
        dec[m] = Affine(w, b)
        specs[m] = ModalitySpec(m, "vector", (n_obs,), "normal")
        ws.append(w)
        bs.append(b)
    model = MultimodalVAE(specs, d, fusion or (lambda e, k: product_of_experts(e, k, prior_expert=False)),
                          make_estimator("elbo", 1, "analytic"), posterior="normal", default_scale=sigma,
                          encoders=enc, decoders=dec).double().eval()
    w_all, b_all = torch.cat(ws), torch.cat(bs)
    exact = MultivariateNormal(b_all, w_all @ w_all.t() + sigma ** 2 * torch.eye(len(b_all), dtype=torch.float64))
    return model, exact, specs


def sample_rows(exact: MultivariateNormal, specs, n: int, seed: int = 1) -> MultimodalDataset:
    torch.manual_seed(seed)
    x = exact.sample((n,))
    data, i = {}, 0
    for m, s in specs.items():
        data[m] = x[:, i:i + s.shape[0]]
        i += s.shape[0]
    return MultimodalDataset(specs, data)


def test_importance_sampling_is_exact_with_the_exact_posterior():
    """With q(z|x) = p(z|x) every importance weight equals p(x): the estimate is exact for any K."""
    model, exact, specs = linear_gaussian(["x"])
    data = sample_rows(exact, specs, 20)
    est = log_likelihoods(model, data, k=3)["x"]
    assert torch.allclose(est, exact.log_prob(data.data["x"]), atol=1e-6)


def test_importance_sampling_converges_to_the_exact_log_likelihood():
    """An approximate posterior (wider, shifted): K = 2000 is within MC error of log p(x); K = 1 is an
    ELBO-like estimate, below log p(x) in expectation (Burda et al. 2016)."""
    model, exact, specs = linear_gaussian(["x"], scale_factor=1.4, shift=0.3)
    data = sample_rows(exact, specs, 40)
    truth = exact.log_prob(data.data["x"])
    many = log_likelihoods(model, data, k=2000)["x"]
    one = torch.stack([log_likelihoods(model, data, k=1, seed=s)["x"] for s in range(20)]).mean(0)
    assert abs(float((many - truth).mean())) < 0.01          # unbiased in p: the mean error vanishes
    assert float((many - truth).abs().max()) < 0.1           # each row within a few MC standard errors
    assert float((truth - one).mean()) > 0.5                 # the K = 1 estimate sits well below


def test_joint_and_conditional_with_a_mixture_proposal():
    """Two modalities fused by a mixture of experts: the joint estimate (mixture proposal, mixture
    density) and log p(a | b) = log p(a, b) − log p(b) match the exact Gaussian values."""
    model, exact, specs = linear_gaussian(["a", "b"], fusion=mixture_of_experts)
    data = sample_rows(exact, specs, 30)
    per_row = log_likelihoods(model, data, k=4000)
    x = torch.cat([data.data["a"], data.data["b"]], 1)
    marginal_b = MultivariateNormal(exact.loc[3:], exact.covariance_matrix[3:, 3:])
    assert (per_row["a+b"] - exact.log_prob(x)).abs().mean() < 0.03
    assert torch.allclose(per_row["b"], marginal_b.log_prob(data.data["b"]), atol=1e-6)  # exact expert
    summary = summarise(per_row, ["a", "b"], 4000)
    truth = float((exact.log_prob(x) - marginal_b.log_prob(data.data["b"])).mean())
    assert abs(summary["conditional"]["a|b"] - truth) < 0.03
    assert summary["weighted"] is False and summary["k"] == 4000


def test_conditional_given_any_subset_matches_the_exact_gaussian():
    """Three modalities: log p(a | b, c) and log p(a, b | c) against the exact Gaussian conditionals, and
    the report's "given the rest" entries equal joint − log p(rest)."""
    model, exact, specs = linear_gaussian(["a", "b", "c"], fusion=mixture_of_experts)
    data = sample_rows(exact, specs, 20)
    x = torch.cat([data.data[m] for m in ("a", "b", "c")], 1)

    def marginal(idx):
        return MultivariateNormal(exact.loc[idx], exact.covariance_matrix[idx][:, idx]).log_prob(x[:, idx])

    a, b, c = list(range(0, 3)), list(range(3, 6)), list(range(6, 9))
    got = conditional_log_likelihood(model, data, ["a"], ["b", "c"], k=4000)
    assert (got - (exact.log_prob(x) - marginal(b + c))).mean().abs() < 0.05
    got = conditional_log_likelihood(model, data, ["a", "b"], ["c"], k=4000)
    assert (got - (exact.log_prob(x) - marginal(c))).mean().abs() < 0.05
    per_row = log_likelihoods(model, data, k=50)
    summary = summarise(per_row, ["a", "b", "c"], 50)
    want = float((per_row["a+b+c"] - per_row["b+c"]).mean())
    assert summary["conditional_given_rest"]["a|b+c"] == pytest.approx(want)
    with pytest.raises(ValueError):
        conditional_log_likelihood(model, data, ["a"], ["a", "b"], k=10)


def test_estimate_does_not_depend_on_chunking():
    """Rows and samples in chunks of any size give the same per-row estimate (each row's samples come
    from its own random stream), for a mixture posterior (MMVAE) and every subset."""
    toy = toy_bimodal(n=100, dim=4)
    model = build_tiny("mmvae", toy.specs).eval()
    data = toy.test
    ref = log_likelihoods(model, data, k=60, row_chunk=20, sample_chunk=60)
    for rows, samples in [(1, 60), (7, 13), (20, 1), (3, 59)]:
        other = log_likelihoods(model, data, k=60, row_chunk=rows, sample_chunk=samples)
        for key in ref:
            assert torch.allclose(ref[key], other[key], atol=1e-4, rtol=0), (key, rows, samples)
    assert not torch.allclose(ref["a"], log_likelihoods(model, data, k=60, seed=1)["a"])  # it is random



def test_default_sample_chunk_caps_passes_on_cpu_only():
    """On a CPU a pass decodes about CPU_ROWS_PER_PASS codes (the decoders' fastest call size); elsewhere
    only the memory budget bounds it; never below one sample, never above K or the budget."""
    image = ModalitySpec("image", "image", (1, 28, 28), "bernoulli")
    label = ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)
    data = MultimodalDataset({"image": image, "label": label},
                             {"image": torch.zeros(4, 1, 28, 28), "label": torch.zeros(4, 10)})
    budget = (1 << 22) // (16 * 784)                                              # 334 samples
    assert default_sample_chunk(data, 1000, 16, device="cuda") == budget
    assert default_sample_chunk(data, 1000, 16) == default_sample_chunk(data, 1000, 16, device="cpu") \
        == CPU_ROWS_PER_PASS // 16
    assert default_sample_chunk(data, 10, 16) == 10                               # K bounds it
    assert default_sample_chunk(data, 1000, 4 * CPU_ROWS_PER_PASS) == 1            # at least one sample
    small = default_sample_chunk(data, 1000, 16, budget=16 * 784 * 3)
    assert small == 3                                                             # the budget still bounds it

# ------------------------------------------------------------------------------------------ coherence
class LabelModel(nn.Module):
    """Both modalities are the one-hot label. ``copy``: generations copy the source's class; otherwise
    they are uniform random classes, ignoring the input."""

    def __init__(self, classes: int, copy: bool):
        super().__init__()
        self.classes, self.copy = classes, copy
        self.dummy = nn.Parameter(torch.zeros(1))

    def _random(self, n):
        return one_hot(torch.randint(0, self.classes, (n,)), self.classes)

    def translate(self, data, targets, sample=False):
        x = next(iter(data.values()))
        return {t: x.clone() if self.copy else self._random(x.shape[0]) for t in targets}

    def generate(self, n, modalities):
        shared = self._random(n)
        return {m: shared.clone() if self.copy else self._random(n) for m in modalities}


def label_data(names, n: int, classes: int) -> MultimodalDataset:
    y = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(3))
    specs = {m: ModalitySpec(m, "categorical", (classes,), "categorical", num_classes=classes) for m in names}
    return MultimodalDataset(specs, {m: one_hot(y, classes) for m in names}, label=y, num_classes=classes)


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c"]])
def test_coherence_is_one_for_a_copying_model_and_chance_for_one_that_ignores_its_input(tmp_path, names):
    classes, n = 10, 4000
    data = label_data(names, n, classes)
    argmax = {m: (lambda x: x) for m in names}          # a user-given "classifier": logits = the one-hot
    perfect = evaluate_model(LabelModel(classes, True), data, data, tmp_path / "p", ["coherence"],
                             Options(joint_samples=2000), classifiers=argmax, log=lambda *a: None)
    assert set(perfect["cross_coherence"]) >= {"a->b", "b->a"}
    assert all(v == 1.0 for v in perfect["cross_coherence"].values())
    assert perfect["joint_coherence"] == 1.0
    assert perfect["classifier_accuracy"] == {m: 1.0 for m in names}   # the user's classifiers are scored too
    blind = evaluate_model(LabelModel(classes, False), data, data, tmp_path / "b", ["coherence"],
                           Options(joint_samples=4000), classifiers=argmax, log=lambda *a: None)
    se = math.sqrt(0.1 * 0.9 / n)
    assert all(abs(v - 1 / classes) < 4 * se for v in blind["cross_coherence"].values())
    chance = classes ** -(len(names) - 1)            # all M classifiers agree by chance
    assert abs(blind["joint_coherence"] - chance) < 4 * math.sqrt(chance * (1 - chance) / 4000)
    if len(names) == 3:
        assert set(blind["cross_coherence"]) == {"a->b", "a->c", "b->a", "b->c", "c->a", "c->b",
                                                 "a+b->c", "a+c->b", "b+c->a"}
        assert perfect["synergy"]["coherence_by_given"] == {"1": 1.0, "2": 1.0}
    else:
        assert perfect["synergy"] is None


class Scaled(nn.Module):
    """x -> (gain · x, constant raw scale): a posterior centred on the scaled input with a fixed width."""

    def __init__(self, gain: float, raw: float):
        super().__init__()
        self.gain, self.raw = gain, raw

    def forward(self, x):
        return self.gain * x, torch.full_like(x, self.raw)


def label_vae(classes: int, width: float) -> MultimodalVAE:
    """Two one-hot modalities; q(z | x_m) = N(2 · onehot, width²) in D = classes dimensions; each decoder
    reads z as the logits of its class. The posterior mean always decodes to the input's class; a sample
    does so only when the posterior is narrow."""
    specs = {m: ModalitySpec(m, "categorical", (classes,), "categorical", num_classes=classes) for m in ("a", "b")}
    raw = math.log(math.expm1(width))                                        # softplus(raw) = width
    return MultimodalVAE(specs, classes, mixture_of_experts, make_estimator("elbo"), posterior="normal",
                         encoders={m: Scaled(2.0, raw) for m in specs},
                         decoders={m: nn.Identity() for m in specs}).eval()


@pytest.mark.parametrize("width", [0.01, 5.0])
def test_cross_coherence_decodes_one_posterior_sample_and_reports_the_mean_separately(tmp_path, width):
    classes = 10
    data = label_data(["a", "b"], 2000, classes)
    argmax = {m: (lambda x: x) for m in ("a", "b")}
    rec = evaluate_model(label_vae(classes, width), data, data, tmp_path, ["coherence"], Options(joint_samples=100),
                         classifiers=argmax, device="cpu", log=lambda *a: None)
    assert rec["cross_coherence_mean"] == {"a->b": 1.0, "b->a": 1.0}      # the mean is always the input's class
    if width < 0.1:
        assert rec["cross_coherence"] == {"a->b": 1.0, "b->a": 1.0}
    else:
        # N(2·e_y, 25 I): the argmax of a sample is y with probability ≈ 0.15; the official protocol sees it.
        assert all(0.05 < v < 0.3 for v in rec["cross_coherence"].values())
    assert "one posterior sample" in rec["protocol"]["cross_coherence"]
    assert "user-given classifiers for a, b" in rec["protocol"]["classifiers"]
    report = (tmp_path / "report.md").read_text()
    assert "one posterior sample" in report and "from the mean" in report


def test_classifiers_stop_at_a_validation_plateau():
    from mmvae.evaluation.classifiers import train_classifier

    data = label_data(["a"], 600, 4)
    spec = data.specs["a"]
    net = train_classifier(spec, 4, data.data["a"], data.label, 30, 0, "cpu", patience=3)
    assert net.epochs_run < 30                                              # one-hot labels: learnt at once
    assert float((net(data.data["a"]).argmax(-1) == data.label).float().mean()) == 1.0
    full = train_classifier(spec, 4, data.data["a"], data.label, 4, 0, "cpu", patience=0)
    assert full.epochs_run == 4


def test_a_model_without_any_likelihood_estimator_is_skipped_with_a_note(tmp_path):
    data = label_data(["a", "b"], 50, 3)
    rec = evaluate_model(LabelModel(3, True), data, data, tmp_path, ["likelihood"], log=lambda *a: None)
    assert rec["log_likelihood"] is None and "skipped" in rec["notes"]["log_likelihood"]


def test_trained_classifiers_are_cached(tmp_path):
    toy = toy_bimodal(n=300, dim=4)
    model = build_tiny("mmvae", toy.specs).eval()
    logs = []
    opts = Options(classifier_epochs=2, joint_samples=100)
    first = evaluate_model(model, toy.train, toy.test, tmp_path, ["coherence"], opts, log=logs.append)
    assert all(v > 0.9 for v in first["classifier_accuracy"].values())   # prototypes are separable
    assert (tmp_path / "classifiers" / "a.safetensors").exists()
    logs.clear()
    second = evaluate_model(model, toy.train, toy.test, tmp_path, ["coherence"], opts, log=logs.append)
    assert any("cached" in line for line in logs) and not any("training" in line for line in logs)
    assert second["classifier_accuracy"] == first["classifier_accuracy"]
    card = json.loads((tmp_path / "classifiers" / "a.json").read_text())["card"]
    assert card["max_epochs"] == 2 and card["patience"] == 3 and card["lr"] == 1e-3
    # A change of protocol (here the plateau rule) retrains instead of reusing the cached classifiers.
    logs.clear()
    evaluate_model(model, toy.train, toy.test, tmp_path, ["coherence"],
                   Options(classifier_epochs=2, classifier_patience=0, joint_samples=100), log=logs.append)
    assert any("training" in line for line in logs) and not any("cached" in line for line in logs)


# ------------------------------------------------------------------------------------------------ W2
def test_w2_is_zero_between_identical_gaussians_and_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu, sd = torch.randn(6, 3, generator=g), torch.rand(6, 3, generator=g) + 0.1
    assert torch.allclose(w2_diagonal(mu, sd, mu, sd), torch.zeros(6))
    assert torch.allclose(w2_matrix(mu, sd, mu, sd).diagonal(), torch.zeros(6, dtype=torch.float64), atol=1e-6)
    mu2, sd2 = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.1
    d = w2_matrix(mu, sd, mu2, sd2)
    assert torch.allclose(d.float(), w2_diagonal(mu[:, None], sd[:, None], mu2[None], sd2[None]), atol=1e-5)
    # Independent check: W2² of product measures is the sum over axes of the 1-D optimal-transport cost
    # ∫ (F1⁻¹(u) − F2⁻¹(u))² du (quantile coupling), integrated numerically.
    u = (torch.arange(200000, dtype=torch.float64) + 0.5) / 200000
    w2sq = sum(((Normal(mu[0, j].double(), sd[0, j].double()).icdf(u)
                 - Normal(mu2[1, j].double(), sd2[1, j].double()).icdf(u)) ** 2).mean() for j in range(3))
    assert abs(float(d[0, 1]) - math.sqrt(float(w2sq))) < 1e-3


# ------------------------------------------------------------------------------------ unlabeled data
def test_unlabeled_data_is_refused_for_label_metrics_and_the_others_are_computed(tmp_path):
    toy = toy_bimodal(n=200, dim=4)
    train, test = toy.train, toy.test
    train.label = test.label = None
    model = build_tiny("mopoe", toy.specs).eval()
    rec = evaluate_model(model, train, test, tmp_path, ["coherence", "latent", "likelihood", "relatedness"],
                         Options(k=5), log=lambda *a: None)
    for key in ("cross_coherence", "joint_coherence", "latent_accuracy"):
        assert rec[key] is None
        assert "no labels" in rec["refused"][key] and "label" in rec["refused"][key]
    assert math.isfinite(rec["log_likelihood"]["joint"])
    pair = rec["relatedness"]["pairs"]["a~b"]
    assert pair["paired_mean"] >= 0 and "class_matrix" not in pair
    report = (tmp_path / "report.md").read_text()
    assert "Refused" in report and "no labels" in report
    json.loads((tmp_path / "metrics.json").read_text())


# --------------------------------------------------------------------------------------- end to end
def test_mmvae_evaluate_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "mopoe", "--dataset", "toy", "--epochs", "1", "--out", str(run),
                 "--set", "hidden=32", "--set", "data.n=200", "--latent-dim", "4"]) == 0
    args = ["evaluate", str(run), "--k", "5", "--joint-samples", "200", "--classifier-epochs", "1", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "joint coherence" in out and "log p(all)" in out
    rec = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert set(rec["cross_coherence"]) == {"a->b", "b->a"}
    assert all(0 <= v <= 1 for v in rec["cross_coherence"].values())
    assert 0 <= rec["joint_coherence"] <= 1
    assert set(rec["latent_accuracy"]) == {"a", "b", "joint"}
    assert all(0 <= v <= 1 for v in rec["latent_accuracy"].values())
    ll = rec["log_likelihood"]
    assert ll["k"] == 5 and set(ll["marginal"]) == {"a", "b"} and set(ll["conditional"]) == {"a|b", "b|a"}
    for name in ("samples", "cross_a_to_b", "cross_b_to_a", "latent_tsne", "w2_histogram_a_b",
                 "w2_classes_a_b", "w2_dendrogram_a_b"):
        assert (run / "evaluation" / rec["pictures"][name]).stat().st_size > 1000
    assert "Unweighted" in (run / "evaluation" / "report.md").read_text()
    assert main(["evaluate", str(run), "--metrics", "nonsense"]) == 2
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------------------------------- chance levels
def test_chance_rules():
    from mmvae.evaluation.chance import flag, joint_chance, label_chance, uniform_log_likelihood
    from mmvae.data.text import one_hot_tokens

    balanced = label_chance(torch.arange(1000) % 10, 10)
    assert balanced["value"] == pytest.approx(0.1) and "1/classes" in balanced["rule"]
    skewed = label_chance(torch.tensor([0] * 70 + [1] * 20 + [2] * 10), 3)
    assert skewed["value"] == pytest.approx(0.7) and "majority" in skewed["rule"]
    uniform = {m: torch.arange(10000) % 10 for m in ("a", "b", "c")}
    assert joint_chance(uniform, 10)["value"] == pytest.approx(0.01)             # 10^-(3-1)
    blob = {m: torch.ones(100, dtype=torch.long) for m in ("a", "b")}         # every sample called "1"
    assert joint_chance(blob, 10)["value"] == pytest.approx(1.0)
    label = ModalitySpec("y", "categorical", (10,), "categorical", num_classes=10)
    assert uniform_log_likelihood(label)["value"] == pytest.approx(-math.log(10))
    text = ModalitySpec("t", "text", (5, 7), "categorical", vocab=tuple("abcdefg"))
    ids = torch.tensor([[3, 4, 1, 0, 0], [3, 4, 5, 6, 1]])                      # 3 and 5 scored tokens
    assert uniform_log_likelihood(text, one_hot_tokens(ids, 7))["value"] == pytest.approx(-4 * math.log(7))
    assert uniform_log_likelihood(ModalitySpec("x", "image", (1, 2, 2), "bernoulli")) is None
    assert flag(0.1, 0.1, 1000) == "below" and flag(0.105, 0.1, 1000) == "near" and flag(0.2, 0.1, 1000) is None
    assert flag(-2.0, -math.log(10), accuracy=False) is None and flag(-3.0, -math.log(10), accuracy=False) == "below"


def test_report_puts_chance_beside_every_figure_and_flags_the_chance_ones(tmp_path):
    from mmvae.evaluation.report import table

    classes, names = 10, ["a", "b"]
    data = label_data(names, 3000, classes)
    argmax = {m: (lambda x: x) for m in names}
    opts = Options(joint_samples=3000, k=5)
    blind = evaluate_model(LabelModel(classes, False), data, data, tmp_path / "b", ["coherence"], opts,
                           classifiers=argmax, log=lambda *a: None)
    assert blind["chance"]["accuracy"]["value"] == pytest.approx(0.1)
    assert blind["chance"]["joint_coherence"]["value"] == pytest.approx(0.1, abs=0.01)
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Chance levels" in report and "1/classes = 1/10" in report
    coherence_rows = [line for line in report.splitlines() if line.startswith("| a->b") or line.startswith("| b->a")]
    assert len(coherence_rows) == 2 and all("chance" in row for row in coherence_rows)   # flagged, both columns
    console = table(blind)
    assert "(chance 0.100)" in console
    assert all(("CHANCE" in line or "~ chance" in line) for line in console.splitlines() if line.startswith("coherence"))
    perfect = evaluate_model(LabelModel(classes, True), data, data, tmp_path / "p", ["coherence"], opts,
                             classifiers=argmax, log=lambda *a: None)
    assert "CHANCE" not in table(perfect) and "~ chance" not in table(perfect)
    rows = [line for line in (tmp_path / "p" / "report.md").read_text().splitlines() if line.startswith("|")]
    assert not any("≤ chance" in row or "≈ chance" in row for row in rows)


def test_uniform_log_likelihood_beside_a_categorical_modality(tmp_path):
    toy = toy_bimodal(n=200, dim=4)
    specs = {"a": toy.specs["a"], "y": ModalitySpec("y", "categorical", (5,), "categorical", num_classes=5)}

    def with_label(part):
        return MultimodalDataset(specs, {"a": part.data["a"], "y": one_hot(part.label % 5, 5)}, label=part.label,
                                 num_classes=part.num_classes)

    model = build_tiny("mmvae", specs).eval()
    rec = evaluate_model(model, with_label(toy.train), with_label(toy.test), tmp_path, ["likelihood"], Options(k=5),
                         log=lambda *a: None)
    assert rec["chance"]["log_likelihood"] == {"y": {"value": pytest.approx(-math.log(5)),
                                                     "rule": "uniform over 5 classes: -log 5"}}
    report = (tmp_path / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| log p(y) |"))
    assert "-1.61" in row                                       # the uniform column
    # An untrained decoder's log p(y) is no better than uniform here: the flag shows (or the figure beats -log 5).
    assert ("**≤ chance**" in row) == (rec["log_likelihood"]["marginal"]["y"] <= -math.log(5))


def test_tsne_has_a_legend_from_label_to_colour():
    from mmvae.evaluation.pictures import latent_embedding_figure

    g = torch.Generator().manual_seed(0)
    latents = {m: torch.randn(60, 3, generator=g) for m in ("a", "b")}
    fig = latent_embedding_figure(latents, torch.arange(60) % 10, seed=0)
    ax = fig.axes[0]
    legends = [a for a in ax.get_children() if isinstance(a, matplotlib.legend.Legend)]
    titles = {lg.get_title().get_text(): [t.get_text() for t in lg.get_texts()] for lg in legends}
    assert titles["label"] == [str(c) for c in range(10)] and titles["modality"] == ["a", "b"]
    colours = [tuple(h.get_color()) if not isinstance(h.get_color(), str) else h.get_color()
               for h in next(lg for lg in legends if lg.get_title().get_text() == "label").legend_handles]
    assert len(set(colours)) == 10                              # one colour per digit
