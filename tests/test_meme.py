"""MEME (Joy et al. 2022): the bound's gradients, masks, pseudo-samples, learning from 25% paired data, CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import MIXED_SPECS, random_batch
from mmvae.cli import main as cli_main
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.partial import apply_partial_observation
from mmvae.data.toy import toy_bimodal
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model
from mmvae.objectives.meme import log_cross_likelihood, mixture_log_density, mutual_supervision_bound

PAIRS = [("a", "c"), ("b", "c"), ("a", "b")]        # vector + image, label + image, vector + label


def tiny_meme(names=("a", "c"), **extra):
    specs = {m: MIXED_SPECS[m] for m in names}
    return build_model(specs, Config(model="meme", latent_dim=4, hidden=32, k=3,
                                     extra={"pseudo_samples": 5, **extra}))


def masked(batch: Batch, s_only: slice | None = None, t_only: slice | None = None) -> Batch:
    s, t = batch.modalities
    mask = {m: torch.ones(batch.size, dtype=torch.bool) for m in (s, t)}
    if s_only is not None:
        mask[t][s_only] = False
    if t_only is not None:
        mask[s][t_only] = False
    return Batch(dict(batch.data), mask)


# ------------------------------------------------------------------------------------ the bound itself
def test_ratio_is_a_constant_in_the_bound():
    """Gradients of eq. 6 with w detached (App. B): d/d log_p_s = w, d/d kl = -β w,
    d/d log q(t|z_j) = c softmax_j - w [j = 0]. Without the stop-gradient the last one would change."""
    g = torch.Generator().manual_seed(1)
    k1, b, beta, c = 4, 3, 0.7, 10.0
    log_p_s = torch.randn(b, generator=g, dtype=torch.float64, requires_grad=True)
    log_q_t = torch.randn(k1, b, generator=g, dtype=torch.float64, requires_grad=True)
    kl = torch.rand(b, generator=g, dtype=torch.float64, requires_grad=True)
    value, parts = mutual_supervision_bound(log_p_s, log_q_t, kl, beta, c)
    assert not parts["weight"].requires_grad
    d_ps, d_qt, d_kl = torch.autograd.grad(value.sum(), (log_p_s, log_q_t, kl))
    soft = torch.softmax(log_q_t.detach(), 0)
    w = soft[0] * k1                                  # q(t|z) / mean_j q(t|z_j)
    torch.testing.assert_close(parts["weight"], w)
    torch.testing.assert_close(d_ps, w)
    torch.testing.assert_close(d_kl, -beta * w)
    expected = c * soft
    expected[0] -= w
    torch.testing.assert_close(d_qt, expected)
    assert bool((w <= k1 + 1e-12).all())              # the sample itself in the log-sum-exp bounds w by K+1


def test_log_q_t_s_includes_the_sample_itself():
    lq = torch.tensor([[0.0], [math.log(3.0)]])
    torch.testing.assert_close(log_cross_likelihood(lq), torch.tensor([math.log(2.0)]))


def test_mixture_log_density_matches_a_loop():
    g = torch.Generator().manual_seed(2)
    comps = torch.distributions.Normal(torch.randn(6, 3, generator=g), torch.rand(6, 3, generator=g) + 0.3)
    z = torch.randn(4, 3, generator=g)
    loop = torch.stack([torch.stack([comps.log_prob(zb)[i].sum() for i in range(6)]).exp().mean().log() for zb in z])
    torch.testing.assert_close(mixture_log_density(comps, z), loop)


# ------------------------------------------------------------------------------------ the model
def _patterns(n):
    h = n // 2
    return {"all paired": (None, None), "s-only rows": (slice(0, h), None), "t-only rows": (None, slice(0, h)),
            "split, some paired": (slice(0, 3), slice(3, 6)), "split, no paired row": (slice(0, h), slice(h, n)),
            "one row, s only": (slice(0, n), None), "one row, t only": (None, slice(0, n))}


@pytest.mark.parametrize("names", PAIRS, ids=["+".join(p) for p in PAIRS])
@pytest.mark.parametrize("pattern", list(_patterns(8)))
@pytest.mark.parametrize("mode", ["train", "eval-before-any-pseudo-sample"])
def test_loss_finite_for_every_mask_pattern(gen, names, pattern, mode):
    n = 1 if pattern.startswith("one row") else 8
    model = tiny_meme(names)
    model.train(mode == "train")
    batch = masked(random_batch(model.specs, n, gen), *_patterns(n)[pattern])
    # missing rows hold NaN: they must never be encoded or scored
    data = {m: torch.where(batch.mask[m].view(-1, *[1] * (x.dim() - 1)), x, torch.full_like(x, math.nan))
            for m, x in batch.data.items()}
    noise = FixedNoise(seed=0)
    loss, logs = model.loss(Batch(data, batch.mask), noise=noise)
    assert torch.isfinite(loss), (pattern, logs)
    assert all(torch.isfinite(v) for v in logs.values())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    # and what the missing rows hold does not matter at all (same draws, zeros instead of NaN)
    model.train(False)
    zero = {m: torch.nan_to_num(x, nan=0.0) for m, x in data.items()}
    again, _ = model.loss(Batch(zero, batch.mask), noise=noise)
    assert float(again.detach()) == pytest.approx(float(loss.detach()), rel=1e-6, abs=1e-6)


def test_pseudo_samples_start_as_real_items_and_persist(gen):
    model = tiny_meme().train()
    batch = masked(random_batch(model.specs, 8, gen), s_only=slice(0, 5))   # t observed in rows 5..7 only
    model.loss(batch)
    assert model.pseudo_filled.tolist() == [5, 3]
    torch.testing.assert_close(model.pseudo["a"][:5].detach(), batch.data["a"][:5])
    torch.testing.assert_close(model.pseudo["c"][:3].detach(), batch.data["c"][5:8])
    model.eval()
    model.loss(random_batch(model.specs, 8, gen))                            # evaluation never fills
    assert model.pseudo_filled.tolist() == [5, 3]
    clone = tiny_meme()
    clone.load_state_dict(model.state_dict())
    assert clone.pseudo_filled.tolist() == [5, 3]
    torch.testing.assert_close(clone.pseudo["c"], model.pseudo["c"])


def test_pseudo_samples_get_gradients_only_from_unpaired_rows(gen):
    model = tiny_meme().train()
    model.loss(random_batch(model.specs, 8, gen))                            # fill every pseudo-sample slot
    assert model.pseudo_filled.tolist() == [5, 5]
    full = random_batch(model.specs, 8, gen)

    def pseudo_grads(batch):
        model.zero_grad(set_to_none=True)
        model.loss(batch)[0].backward()
        return {m: (None if model.pseudo[m].grad is None else float(model.pseudo[m].grad.abs().sum()))
                for m in model.modalities}

    for g in pseudo_grads(full).values():                                    # paired rows: never
        assert g is None or g == 0.0
    s_only = pseudo_grads(masked(full, s_only=slice(0, 4)))                  # t missing: t's pseudo-samples
    assert s_only["c"] > 0 and (s_only["a"] is None or s_only["a"] == 0.0)
    t_only = pseudo_grads(masked(full, t_only=slice(0, 4)))
    assert t_only["a"] > 0 and (t_only["c"] is None or t_only["c"] == 0.0)


def test_api_shapes_and_pseudo_sample_prior(gen):
    model = tiny_meme().train()
    batch = random_batch(model.specs, 6, gen)
    model.loss(batch)
    model.eval()
    assert model.prior.sample((7,)).shape == (7, 4)
    assert model.prior.mixture_distribution.logits.shape == (10,)           # 5 pseudo-samples of each modality
    out = model.generate(7)
    assert out["a"].shape == (7, 5) and out["c"].shape == (7, 1, 28, 28)
    tr = model.translate({"a": batch.data["a"]}, ["c"])
    assert tr["c"].shape == (6, 1, 28, 28) and float(tr["c"].min()) >= 0
    reps = model.latent_representations(batch.data)
    assert set(reps) == {"a", "c"} and reps["a"].shape == (6, 4)
    torch.testing.assert_close(model.embed({"a": batch.data["a"]}), reps["a"])
    assert set(model.reconstruct(batch.data)) == {"a", "c"}
    assert model.decode(torch.zeros(2, 4), ["a"])["a"].shape == (2, 5)


def test_refuses_what_it_cannot_do():
    with pytest.raises(UserError, match="at most 2"):
        build_model(MIXED_SPECS, Config(model="meme", latent_dim=4, hidden=32))
    with pytest.raises(UserError, match="pseudo_samples"):
        tiny_meme(pseudo_samples=0)
    with pytest.raises(UserError, match="unknown option"):
        tiny_meme(ratio=3)


def test_learns_toy_from_a_quarter_paired():
    """25% paired, the rest split between the modalities: translations agree with the source's class."""
    torch.manual_seed(0)
    toy = toy_bimodal(n=3000, classes=10, noise=0.5)
    train = apply_partial_observation(toy.train, 0.25, "split", seed=0)
    assert train.counts() == {"a+b": 600, "a": 900, "b": 900}
    model = build_model(toy.specs, Config(model="meme", latent_dim=8, hidden=64))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)

    def agreement(s, t):
        out = model.eval().translate({s: toy.test.data[s]}, [t])[t]
        return float((torch.cdist(out, toy.test.prototypes[t]).argmin(1) == toy.test.label).float().mean())

    assert agreement("a", "b") < 0.5
    for _ in range(6):
        model.train()
        for batch in train.batches(64, shuffle=True, generator=g):
            loss, _ = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    scores = {"a->b": agreement("a", "b"), "b->a": agreement("b", "a")}
    assert min(scores.values()) > 0.9, scores


def test_cli_trains_meme_on_partially_observed_toy(tmp_path):
    out = tmp_path / "run"
    code = cli_main(["train", "--model", "meme", "--dataset", "toy", "--epochs", "1", "--out", str(out),
                     "--set", "paired_fraction=0.25", "--set", "observed=split", "--set", "hidden=32"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    counts = saved["data"]["observed_patterns"]
    assert counts["a+b"] == round(0.25 * saved["data"]["train_rows"]) and counts["a"] + counts["b"] > 0
    assert (out / "observed_mask.pt").exists() and (out / "samples.png").exists()
    from mmvae.runs import load_run

    run = load_run(out)
    assert int(run.model.pseudo_filled.min()) == run.model.num_pseudo    # restored, not re-initialised


def test_marginal_log_likelihood_is_an_importance_sampled_bound(gen):
    """log p(x_m) under the pseudo-sample prior of the other modality: finite, tighter with more samples
    (IWAE, Burda et al. 2016), equal to log p(x|z) + log p(z) - log q(z|x) averaged for k = 1; no joint."""
    model = tiny_meme().train()
    batch = random_batch(model.specs, 6, gen)
    model.loss(batch)
    model.eval()
    single = Batch({"a": batch.data["a"]})
    torch.manual_seed(0)
    one = torch.stack([model.log_likelihood(single, ["a"], k=1) for _ in range(200)]).mean(0)
    many = model.log_likelihood(single, ["a"], k=200)
    assert many.shape == (6,) and torch.isfinite(many).all()
    assert bool((many > one).all()), (many, one)
    assert torch.isnan(model.log_likelihood(batch, ["a", "c"], k=3)).all()


def test_user_networks_replace_the_defaults():
    specs = {m: MIXED_SPECS[m] for m in ("a", "c")}
    enc = torch.nn.Sequential(torch.nn.Linear(5, 8))                     # (N, 5) -> (N, 2 * latent)
    model = build_model(specs, Config(model="meme", latent_dim=4, hidden=32), encoders={"a": enc})
    assert model.encoders["a"] is enc
    assert torch.isfinite(model.loss(random_batch(specs, 4, torch.Generator().manual_seed(0)))[0])
