"""The library's default objectives against the plain hand-written loops of bench/reference/ (the bar of
bench/quality.py): float64, the same tiny linear networks in both, the same batch with masks (fully
paired rows, rows observing one modality, both split patterns) and the same reparameterisation noise
-> the same loss and the same gradient of every parameter to 1e-6, or a stated exact relation.

The library model is built with the defaults ``mmvae train`` resolves (``models/registry.resolve``:
for mvae elbo + analytic KL + Gaussian posteriors + uniform λ + warm-up 2 epochs; KL weight compared
at its final value 1 and at a warm-up value). The two differ in architecture (the library's MLP has a
softplus scale head, the reference an exp(½ logvar) head), so both get one shared ``nn.Linear`` per
encoder and decoder: the reference reads (mu, logvar) from it, the library's encoder turns the same
output into the raw scale whose softplus + 1e-6 is exp(½ logvar). Gradients then reach the same
parameters through the same values. Findings (docs/models/partial-observation.md):

* mvae: the same function on every mask pattern (joint ELBO on paired rows, each observed unimodal
  ELBO on every row, batch mean over all rows, prior expert), up to the library's 1e-8 variance floor.
  The only difference is the KL warm-up: the library's β·KL at β < 1 is the reference's loss minus
  (1 − β)·Σ_S usable_S KL(q_S || p) / B.
* mmvae: the same function (stratified naive ELBO, mixture over the observed experts, 1/|S| per row).
* mopoe: the library draws one subset per row from the mixture (and subtracts Σ_S π_S KL_S), the
  reference one sample per usable subset: the library's loss averaged over the pick with the mixture
  weights π is the reference's loss exactly (the same expectation; the reference has less variance).
* meme: the same function once the reference's constants are the library's defaults (k = 4 fresh
  samples, reference K = 10; 128 pseudo-samples, reference 100), on the same pseudo-inputs.
* fmmvae: the same function (naive MMVAE ELBO with analytic KL, 1/|S| per row; the unimodal ELBO of each
  observed modality only; fission contrast Σ_m CE_m, CE_m averaged over the rows observing m and the
  dimensions, on the very samples of the bounds, weight α / B), MMVAE and unimodal VAEs each on their own
  shared linear networks. The library's FactorisedObjective takes no ``noise`` (``lib.loss(..., noise=)``
  raises TypeError), so its two stratified draws (MMVAE experts first, then the VAEs) are patched.
* scoring: bench/reference/adapter.py gives the library's fused posterior on every batch the scoring
  builds; for mvae it weights a partially observed row 0 (never reached by the scoring, stated below).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.fusion.fusions import nonempty_subsets
from mmvae.models import builtin  # noqa: F401  (registers meme and the other models of their own modules)
from mmvae.models.registry import MODELS, build_model, resolve

ROOT = Path(__file__).resolve().parents[1]
D, B = 3, 6
SPECS = {"a": ModalitySpec("a", "image", (2, 3), "bernoulli"),
         "b": ModalitySpec("b", "image", (4,), "bernoulli")}
NAMES = list(SPECS)
# Row patterns: fully paired, a only, b only (the two split patterns), and the mixes the trainer sees.
PATTERNS = {
    "paired": ([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]),
    "split": ([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]),
    "mixed": ([1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 1, 0]),
}


def reference(name: str):
    """A module of bench/reference/, imported as the package ``bench_reference`` (tests/reference.py
    already owns the name ``reference`` in this process)."""
    package = "bench_reference"
    if package not in sys.modules:
        folder = ROOT / "bench" / "reference"
        spec = importlib.util.spec_from_file_location(package, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{name}")


class SharedEncoder(nn.Module):
    """The library's encoder contract (loc, raw scale) on a shared linear map whose output is the
    reference's (mu, logvar): softplus(raw) + 1e-6 = exp(½ logvar) exactly (float64)."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        mu, logvar = self.lin(x.flatten(1)).chunk(2, -1)
        scale = (0.5 * logvar).exp() - 1e-6
        return mu, scale + torch.log(-torch.expm1(-scale))          # softplus⁻¹(scale), stable


class SharedDecoder(nn.Module):
    def __init__(self, lin: nn.Linear, shape):
        super().__init__()
        self.lin, self.shape = lin, tuple(shape)

    def forward(self, z):
        return self.lin(z).view(*z.shape[:-1], *self.shape)


def default_config(model: str) -> Config:
    """What ``mmvae train --model <model>`` resolves (only the latent size is made tiny)."""
    cfg = resolve(Config(model=model, latent_dim=D), MODELS[model])
    return cfg


def models(name: str):
    """(library model, reference model) sharing one linear encoder and decoder per modality."""
    torch.manual_seed(0)
    ref = getattr(reference(name), {"mvae": "MVAE", "mmvae": "MMVAE", "mopoe": "MoPoE"}[name])(SPECS).double()
    encoders, decoders = {}, {}
    for m, spec in SPECS.items():
        enc = nn.Linear(math.prod(spec.shape), 2 * D).double()
        dec = nn.Linear(D, math.prod(spec.shape)).double()
        with torch.no_grad():   # logvar in a moderate range, so every scale is well away from the floor
            enc.weight.mul_(0.5)
            enc.bias[D:].uniform_(-1.0, 0.5)
        ref.mods[m].enc, ref.mods[m].dec = nn.Sequential(enc), nn.Sequential(dec)
        encoders[m], decoders[m] = SharedEncoder(enc), SharedDecoder(dec, spec.shape)
    cfg = default_config(name)
    lib = build_model(SPECS, cfg, encoders=encoders, decoders=decoders).double()
    assert cfg.posterior == "normal" and cfg.objective == "elbo" and cfg.weights == "uniform"
    return lib, ref, cfg


def make_batch(pattern: str) -> Batch:
    g = torch.Generator().manual_seed(1)
    data = {m: torch.rand(B, *s.shape, generator=g, dtype=torch.float64) for m, s in SPECS.items()}
    a, b = PATTERNS[pattern]
    return Batch(data, {"a": torch.tensor(a, dtype=torch.bool), "b": torch.tensor(b, dtype=torch.bool)})


def reference_loss(module, ref, batch: Batch, eps: list[torch.Tensor]):
    """The reference's loss with its calls to ``sample`` fed ``eps`` in order."""
    queue = list(eps)

    def sample(mu, logvar):
        return mu + (0.5 * logvar).exp() * queue.pop(0)

    original = module.sample
    module.sample = sample
    try:
        loss = ref.loss(batch.data, {m: o.double() for m, o in batch.mask.items()})
    finally:
        module.sample = original
    assert not queue, "the reference drew fewer samples than given"
    return loss


def assert_same(lib, lib_loss, ref_loss, unused: tuple[str, ...] = ()):
    """Equal values and equal gradients of every parameter; each gradient non-zero except those named
    in ``unused`` (prefixes), so the comparison cannot pass on zeros."""
    torch.testing.assert_close(lib_loss, ref_loss, rtol=1e-6, atol=1e-8)
    named = [(n, p) for n, p in lib.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    g_lib = torch.autograd.grad(lib_loss, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref_loss, params, retain_graph=True, allow_unused=True)
    for (name, p), a, b in zip(named, g_lib, g_ref):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=lambda s, name=name: f"{name}: {s}")
        if not name.startswith(unused):
            assert bool(a.abs().sum() > 0), f"{name}: zero gradient, nothing compared"


def test_the_library_model_uses_the_shared_networks():
    lib, ref, cfg = models("mvae")
    assert cfg.warmup == 2.0 and cfg.kl == "analytic"                  # mvae's defaults as resolved
    x = make_batch("paired").data["a"]
    loc, raw = lib.encoders["a"](x)
    mu, logvar = ref.mods["a"].encode(x)
    torch.testing.assert_close(loc, mu)
    torch.testing.assert_close(torch.nn.functional.softplus(raw) + 1e-6, (0.5 * logvar).exp(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- MVAE
def mvae_noise():
    # the library's subsets in training order: joint, then each modality alone (subsample_k = 0)
    return torch.randn(1, 1 + len(NAMES), B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_mvae_default_is_the_reference_objective(pattern):
    lib, ref, cfg = models("mvae")
    assert cfg.subsample_k == 0
    batch, eps = make_batch(pattern), mvae_noise()
    lib_loss, _ = lib.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    ref_loss = reference_loss(reference("mvae"), ref, batch, [eps[0, g] for g in range(eps.shape[1])])
    assert_same(lib, lib_loss, ref_loss)


def mvae_kl_sum(lib, batch):
    """Σ_S usable_S · KL(q_S || N(0, I)) per row (the reference's KL terms, prior expert included)."""
    experts = lib.encode_experts(batch)
    total = 0.0
    for subset in [tuple(NAMES)] + [(m,) for m in NAMES]:
        use = torch.stack([batch.mask[m] for m in subset]).double()          # (S, B)
        precision = torch.stack([experts[m].scale ** -2 for m in subset]) * use.unsqueeze(-1)
        t = 1.0 + precision.sum(0)
        loc = (torch.stack([experts[m].loc for m in subset]) * precision).sum(0) / t
        kl = 0.5 * (loc ** 2 + 1 / t - 1 + t.log()).sum(-1)
        total = total + use.prod(0) * kl
    return total


@pytest.mark.parametrize("pattern", ["split", "mixed"])
def test_mvae_warmup_is_the_reference_minus_a_share_of_the_kl(pattern):
    """During the default warm-up (2 epochs, β rising per step from 0) the library minimises the
    reference's loss with (1 − β) of every subset's KL taken away: exactly that, nothing else."""
    lib, ref, _ = models("mvae")
    batch, eps, beta = make_batch(pattern), mvae_noise(), 0.3
    lib_loss, _ = lib.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref_loss = reference_loss(reference("mvae"), ref, batch, [eps[0, g] for g in range(eps.shape[1])])
    expected = ref_loss - (1 - beta) * mvae_kl_sum(lib, batch).mean()
    assert_same(lib, lib_loss, expected)
    assert abs(float((lib_loss - ref_loss).detach())) > 1e-3               # the comparison can fail


def test_mvae_comparison_tells_a_different_weighting_apart():
    """Counting an unpaired row's ELBO twice (as if unpaired rows were up-weighted) is seen: the
    comparison above can fail."""
    lib, ref, _ = models("mvae")
    batch, eps = make_batch("mixed"), mvae_noise()
    lib_loss, _ = lib.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    ref_loss = reference_loss(reference("mvae"), ref, batch, [eps[0, g] for g in range(eps.shape[1])])
    torch.testing.assert_close(lib_loss, ref_loss, rtol=1e-6, atol=1e-8)
    paired = (batch.mask["a"] & batch.mask["b"]).double()
    mu, logvar = (torch.stack(t) for t in zip(*(ref.mods[m].encode(batch.data[m]) for m in NAMES)))
    obs = torch.stack([batch.mask[m] for m in NAMES]).double()
    unpaired_twice = ref_loss - ((1 - paired) * ref_unimodal_elbo(ref, batch, mu, logvar, obs, eps)).mean()
    assert abs(float((unpaired_twice - lib_loss).detach())) > 1e-3


def ref_unimodal_elbo(ref, batch, mu, logvar, obs, eps):
    module = reference("mvae")
    total = 0.0
    for i in range(len(NAMES)):
        alone = torch.zeros_like(obs)
        alone[i] = obs[i]
        pmu, plogvar = module.product_of_experts(mu, logvar, alone)
        z = pmu + (0.5 * plogvar).exp() * eps[0, 1 + i]
        rec = sum(alone[j] * net.log_lik(net.logits(z), batch.data[m]) for j, (m, net) in enumerate(ref.mods.items()))
        total = total + obs[i] * (rec - module.kl_to_standard(pmu, plogvar))
    return total


# ------------------------------------------------------------------------------------------ MMVAE
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_mmvae_default_is_the_reference_objective(pattern):
    lib, ref, cfg = models("mmvae")
    assert cfg.kl == "mc" and cfg.warmup == 0.0 and lib.stratified
    batch = make_batch(pattern)
    eps = torch.randn(1, len(NAMES), B, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lib_loss, _ = lib.loss(batch, 1.0, noise=FixedNoise({"z": eps}, seed=None))
    ref_loss = reference_loss(reference("mmvae"), ref, batch, [eps[0, g] for g in range(len(NAMES))])
    assert_same(lib, lib_loss, ref_loss)


# ------------------------------------------------------------------------------------------ MoPoE
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_mopoe_default_averaged_over_its_pick_is_the_reference_objective(pattern):
    """The library samples z from the mixture (one subset per row, picked with weight π_S = 1/#usable)
    and subtracts Σ_S π_S KL_S; the reference samples every usable subset once and averages. With the
    reference's noise ε_S given to the library's pick S: Σ_S π_S · loss_lib(row, pick S) = loss_ref(row)."""
    lib, ref, cfg = models("mopoe")
    assert cfg.kl == "analytic" and cfg.warmup == 0.0 and not lib.stratified
    batch = make_batch(pattern)
    ref_order = [tuple(NAMES[i] for i in s) for s in reference("mopoe").subsets(NAMES)]
    lib_order = nonempty_subsets(NAMES)
    eps = {s: torch.randn(B, D, generator=torch.Generator().manual_seed(10 + i), dtype=torch.float64)
           for i, s in enumerate(ref_order)}
    ref_loss = reference_loss(reference("mopoe"), ref, batch, [eps[s] for s in ref_order])
    expected, single_picks = 0.0, []
    for b in range(B):
        row = Batch({m: x[b:b + 1] for m, x in batch.data.items()}, {m: o[b:b + 1] for m, o in batch.mask.items()})
        usable = [g for g, s in enumerate(lib_order) if all(bool(row.mask[m]) for m in s)]
        for g in usable:
            noise = FixedNoise({"z": eps[lib_order[g]][b:b + 1].unsqueeze(0)}, {"z": torch.tensor([[g]])}, seed=None)
            loss, _ = lib.loss(row, 1.0, noise=noise)
            expected = expected + loss / (len(usable) * B)
            single_picks.append(loss)
    assert_same(lib, expected, ref_loss)
    # the comparison can fail: with rows of 3 and of 1 usable subsets, the unweighted mean of the picks
    # (every pick alike, not π per row) is another value
    if pattern == "mixed":
        assert abs(float((sum(single_picks) / len(single_picks) - ref_loss).detach())) > 1e-3


# ------------------------------------------------------------------------------------------- MEME
def meme_models(monkeypatch):
    """The library's default MEME (k = 4 fresh samples, 128 pseudo-samples, c = 10, the two directions
    halved) and the reference with its two constants set to the library's (K = 10 and 100 there: the
    only differences) on the same pseudo-inputs and shared linear networks."""
    module = reference("meme")
    cfg = default_config("meme")
    assert cfg.kl == "analytic" and cfg.k == 4 and module.K == 10 and module.PSEUDO == 100 and module.C == 10.0
    monkeypatch.setattr(module, "K", cfg.k)
    monkeypatch.setattr(module, "PSEUDO", 128)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    init = {m: torch.rand(128, *s.shape, generator=g, dtype=torch.float64) for m, s in SPECS.items()}
    ref = module.MEME(SPECS, init).double()
    encoders, decoders = {}, {}
    for m, spec in SPECS.items():
        enc, dec = nn.Linear(math.prod(spec.shape), 2 * D).double(), nn.Linear(D, math.prod(spec.shape)).double()
        with torch.no_grad():
            enc.weight.mul_(0.5)
            enc.bias[D:].uniform_(-1.0, 0.5)
        ref.mods[m].enc, ref.mods[m].dec = nn.Sequential(enc), nn.Sequential(dec)
        encoders[m], decoders[m] = SharedEncoder(enc), SharedDecoder(dec, spec.shape)
    lib = build_model(SPECS, cfg, encoders=encoders, decoders=decoders).double()
    assert lib.num_pseudo == 128 and lib.classifier_weight == module.C and lib.direction_weight == "half"
    with torch.no_grad():
        for m in SPECS:
            lib.pseudo[m].copy_(init[m])
        lib.pseudo_filled.fill_(128)       # every slot filled: training mode copies nothing in
    lib.pseudo = ref.pseudo                # one set of pseudo-inputs (learnable in both)
    return module, lib, ref, cfg


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_meme_default_is_the_reference_objective_with_its_k_and_pseudo_samples(pattern, monkeypatch):
    module, lib, ref, cfg = meme_models(monkeypatch)
    batch = make_batch(pattern)
    noise = FixedNoise(seed=5)
    lib.train()
    lib_loss, _ = lib.loss(batch, 1.0, noise=noise)
    s, t = NAMES
    obs = {m: batch.mask[m] for m in NAMES}
    paired = obs[s] & obs[t]
    rows = {m: torch.nonzero(obs[m]).squeeze(1) for m in NAMES}

    def one(m):                            # the library's sample of each row observing m, at its row
        e = torch.zeros(B, D, dtype=torch.float64)
        if m in NAMES and f"z/{m}" in noise.eps:
            e[rows[m]] = noise.eps[f"z/{m}"]
        return e

    def fresh(m):
        e = torch.zeros(cfg.k, B, D, dtype=torch.float64)
        if f"fresh/{m}" in noise.eps:
            e[:, torch.nonzero(paired).squeeze(1)] = noise.eps[f"fresh/{m}"]
        return e

    eps = [one(s), fresh(s), one(t), fresh(t)]
    eps += [one(m) for m, o in ((s, t), (t, s)) if bool((obs[m] & ~obs[o]).any())]
    ref_loss = reference_loss(module, ref, batch, eps)
    assert_same(lib, lib_loss, ref_loss, unused=("pseudo",) if pattern == "paired" else ())


# -------------------------------------------------------------------------------- evaluation side
@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe"])
@pytest.mark.parametrize("pattern", ["split", "mixed"])
def test_the_adapter_scores_the_posterior_the_library_scores(name, pattern):
    """bench/quality.py scores the reference through bench/reference/adapter.py and the library model
    through its own API: on shared networks both give the same fused posterior (locations, scales,
    weights) and the same decoder means, so a row's metrics compare training, not evaluation.

    One stated difference, never reached by the scoring: for mvae the adapter gives a row that observes
    only some modalities weight 0 (its one component is 'usable' only when the row observes all), the
    library weight 1 (the product of the observed experts and the prior expert); so the adapter's
    ``mean`` of such a row is 0. Every batch the scoring builds holds complete rows or the source
    modality alone (cross coherence, latent probe, log-likelihood subsets), where the two agree
    (checked below)."""
    lib, ref, _ = models(name)
    adapter = reference("adapter").adapt(ref).double()
    batch = make_batch(pattern)
    with torch.no_grad():
        ours, theirs = lib.posterior(batch), adapter.posterior(batch)
        keep = theirs.weight > 0                          # components a row cannot use carry no weight
        if name == "mvae":
            complete = (batch.mask["a"] & batch.mask["b"]).double()
            torch.testing.assert_close(theirs.weight, complete.unsqueeze(0))
            torch.testing.assert_close(ours.weight, torch.ones_like(ours.weight))
            keep = torch.ones_like(keep)                  # the product itself is the same on every row
        else:
            torch.testing.assert_close(ours.weight, theirs.weight)
        for a, b in ((ours.loc, theirs.loc), (ours.scale, theirs.scale)):
            torch.testing.assert_close(a[keep], b[keep], rtol=1e-6, atol=1e-8)
        for m in NAMES:                                   # what the scoring feeds: one modality alone
            one = Batch({m: batch.data[m]}, {m: torch.ones(B, dtype=torch.bool)})
            ours, theirs = lib.posterior(one), adapter.posterior(one)
            for a, b in ((ours.weight, theirs.weight), (ours.mean, theirs.mean), (ours.scale, theirs.scale)):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
            z = ours.loc[0]
            torch.testing.assert_close(lib.decode(z, [m])[m], adapter.decode(z, [m])[m])


# ------------------------------------------------------------------------------- factorised MMVAE
def fmmvae_models(**extra):
    """The library's default fmmvae (``extra``: ``--set`` options) and bench/reference/fmmvae.py on shared
    linear networks: one pair per modality for the MMVAE (``encoders``/``decoders``; the reference's
    ``mods``) and one for each unimodal VAE (``model.private``; the reference's ``private``)."""
    torch.manual_seed(0)
    ref = reference("fmmvae").FMMVAE(SPECS).double()
    cfg = default_config("fmmvae")
    cfg.extra.update(extra)
    nets = {}
    for part in ("mods", "private"):
        for m, spec in SPECS.items():
            enc = nn.Linear(math.prod(spec.shape), 2 * D).double()
            dec = nn.Linear(D, math.prod(spec.shape)).double()
            with torch.no_grad():
                enc.weight.mul_(0.5)
                enc.bias[D:].uniform_(-1.0, 0.5)
            getattr(ref, part)[m].enc, getattr(ref, part)[m].dec = nn.Sequential(enc), nn.Sequential(dec)
            nets[part, m] = SharedEncoder(enc), SharedDecoder(dec, spec.shape)
    lib = build_model(SPECS, cfg, encoders={m: nets["mods", m][0] for m in NAMES},
                      decoders={m: nets["mods", m][1] for m in NAMES}).double()
    for m in NAMES:                        # build_fmmvae takes the MMVAE's networks only: the VAEs' set here
        lib.private.encoders[m], lib.private.decoders[m] = nets["private", m]
    return lib, ref, cfg


def fmmvae_noise():
    """ε of the MMVAE's stratified draw (one per expert) and of the unimodal VAEs' draw, (M, 1, B, D) each."""
    g = torch.Generator().manual_seed(6)
    return (torch.randn(len(NAMES), 1, B, D, generator=g, dtype=torch.float64),
            torch.randn(len(NAMES), 1, B, D, generator=g, dtype=torch.float64))


def fmmvae_library_loss(lib, batch, eps_shared, eps_private, monkeypatch):
    """The library's loss with its two stratified draws (the MMVAE's experts first, then the unimodal VAEs:
    FactorisedObjective's order) given: loc + scale · ε. FactorisedObjective takes no ``noise`` argument, so
    the draw itself is replaced (the estimator calls ``rsample_stratified(k)`` under the default noise; the
    contrast reads back the very samples of the bounds through ``_Drawn.drawn``)."""
    from mmvae.fusion.mixture import DiagonalMixture

    queue = [eps_shared, eps_private]

    def draw(self, k, *args, **kwargs):
        eps = queue.pop(0)
        assert eps.shape[:2] == (self.loc.shape[0], k)
        return self.loc.unsqueeze(1) + self.scale.unsqueeze(1) * eps

    with monkeypatch.context() as patch:
        patch.setattr(DiagonalMixture, "rsample_stratified", draw)
        loss, logs = lib.loss(batch, 1.0)
    assert not queue, "the library drew fewer samples than given"
    return loss, logs


def fmmvae_reference_loss(ref, batch, eps_shared, eps_private):
    """The reference draws, per modality m in order, s ~ q(s | x_m) then w ~ q(w_m | x_m)."""
    eps = [e[g, 0] for g in range(len(NAMES)) for e in (eps_shared, eps_private)]
    return reference_loss(reference("fmmvae"), ref, batch, eps)


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_fmmvae_default_is_the_reference_objective(pattern, monkeypatch):
    """The same function on every pattern: naive MMVAE ELBO with analytic KL (1/|S| per row over the
    observed experts, each reconstructing every observed modality), the unimodal ELBO of each observed
    modality only, and the fission contrast Σ_m CE_m (CE_m the mean over the rows observing m and the
    dimensions, on the very samples of the two bounds) with weight α / B = 1 / B; all over B rows."""
    lib, ref, cfg = fmmvae_models()
    assert (cfg.objective, cfg.kl, cfg.posterior, cfg.weights, cfg.k, cfg.warmup, cfg.beta) == \
        ("elbo", "analytic", "normal", "uniform", 1, 0.0, 1.0)
    assert lib.objective.contrast == "fission" and lib.objective.weight == 1.0 and lib.private_dim == lib.shared_dim == D
    batch = make_batch(pattern)
    eps_s, eps_p = fmmvae_noise()
    lib_loss, logs = fmmvae_library_loss(lib, batch, eps_s, eps_p, monkeypatch)
    ref_loss = fmmvae_reference_loss(ref, batch, eps_s, eps_p)
    assert_same(lib, lib_loss, ref_loss)
    assert float(logs["contrast"]) > 0


@pytest.mark.parametrize("pattern", ["split", "mixed"])
def test_fmmvae_comparison_sees_the_contrast_and_its_normalisation(pattern, monkeypatch):
    """The comparison above can fail on the contrast: without it (``contrast=none``) the library is the
    reference minus Σ_m CE_m / B exactly, a difference well above the tolerance; and the contrast's
    per-modality mean over the rows observing m (not over all B rows) is what both use."""
    batch = make_batch(pattern)
    eps_s, eps_p = fmmvae_noise()
    lib, ref, _ = fmmvae_models(contrast="none")
    lib_loss, _ = fmmvae_library_loss(lib, batch, eps_s, eps_p, monkeypatch)
    ref_loss = fmmvae_reference_loss(ref, batch, eps_s, eps_p)
    # the reference's contrast, recomputed from its own encoders and the same samples
    from mmvae.objectives.infonce import fission_cross_entropy
    from torch.distributions import Normal

    per_row, over_seen = 0.0, 0.0
    for g, m in enumerate(NAMES):
        (mu, logvar), (pmu, plogvar) = ref.mods[m].encode(batch.data[m]), ref.private[m].encode(batch.data[m])
        qs, qp = Normal(mu, (0.5 * logvar).exp()), Normal(pmu, (0.5 * plogvar).exp())
        ce = fission_cross_entropy(qs, qp, qs.loc + qs.scale * eps_s[g], qp.loc + qp.scale * eps_p[g]).mean(-1)
        seen = batch.mask[m].double()
        over_seen = over_seen + (seen * ce).sum() / seen.sum()
        per_row = per_row + (seen * ce).sum() / B
    assert_same(lib, lib_loss, ref_loss - over_seen / B)
    assert abs(float((over_seen / B).detach())) > 1e-2
    assert abs(float((over_seen - per_row).detach())) > 1e-3      # the two normalisations are told apart
