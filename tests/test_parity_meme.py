"""MEME (Joy et al. 2022) against an independently written formula that follows the authors' code
(thwjoy/meme, models/meme.py): float64, fixed noise, losses and gradients to 1e-6."""
from __future__ import annotations

import pytest
import torch

from conftest import MIXED_SPECS, random_batch
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.errors import UserError
from mmvae.models.registry import build_model

PAIR = ("a", "c")


def meme(**extra):
    specs = {m: MIXED_SPECS[m] for m in PAIR}
    return build_model(specs, Config(model="meme", latent_dim=4, hidden=16, k=3,
                                     extra={"pseudo_samples": 4, **extra})).double()


def _batch(gen, n=6, s_only=(), t_only=()):
    specs = {m: MIXED_SPECS[m] for m in PAIR}
    b = random_batch(specs, n, gen)
    mask = {m: torch.ones(n, dtype=torch.bool) for m in PAIR}
    mask["c"][list(s_only)] = False
    mask["a"][list(t_only)] = False
    return Batch({m: x.double() for m, x in b.data.items()}, mask)


def test_direction_weight_half_is_the_paper_and_sum_the_authors_code(gen):
    """Paired rows weigh ½ per direction (eq. 2) by default and 1 with direction_weight=sum; rows with one
    modality are unchanged, so the difference of the two losses is exactly the half of the paired part."""
    half, summed = meme(), meme(direction_weight="sum")
    summed.load_state_dict(half.state_dict())
    paired = _batch(gen)
    noise = FixedNoise(seed=0)
    l_half, logs_half = half.eval().loss(paired, noise=noise)
    l_sum, _ = summed.eval().loss(paired, noise=noise)
    torch.testing.assert_close(l_sum, 2 * l_half, rtol=1e-12, atol=1e-12)
    mixed = _batch(gen, s_only=[0, 1], t_only=[2])                    # rows 3..5 paired
    noise = FixedNoise(seed=1)
    l_half, _ = half.eval().loss(mixed, noise=noise)
    l_sum, _ = summed.eval().loss(mixed, noise=noise)
    # the single-modality part alone: the same batch with the paired rows removed from both losses
    keep = torch.tensor([0, 1, 2])
    single = Batch({m: x[keep] for m, x in mixed.data.items()}, {m: v[keep] for m, v in mixed.mask.items()})
    single_noise = FixedNoise({"z/a": noise.eps["z/a"][:2], "z/c": noise.eps["z/c"][:1]}, seed=None)
    l_single, _ = half.eval().loss(single, noise=single_noise)
    paired_half = l_half * 6 - l_single * 3                              # −Σ over paired rows of ½ Σ_dir
    torch.testing.assert_close(l_sum * 6, l_single * 3 + 2 * paired_half, rtol=1e-10, atol=1e-10)


def test_defaults_and_refusals():
    model = build_model({m: MIXED_SPECS[m] for m in PAIR}, Config(model="meme", latent_dim=4, hidden=16))
    assert model.direction_weight == "half" and model.num_pseudo == 128
    with pytest.raises(UserError, match="direction_weight"):
        meme(direction_weight="mean")


# ------------------------------------------------------------------------------------ the reference
def gaussian_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * torch.log(torch.tensor(2 * torch.pi))


def compute_kl(locs_q, scale_q, locs_p, scale_p):                 # models/meme.py: compute_kl
    kl = 0.5 * (2 * scale_p.log() - 2 * scale_q.log() + (locs_q - locs_p).pow(2) / scale_p.pow(2)
                + scale_q.pow(2) / scale_p.pow(2) - 1)
    return kl.sum(-1)


def encode(model, m, x):
    loc, raw = model.encoders[m](x)
    return loc, torch.nn.functional.softplus(raw) + 1e-6             # the library's Gaussian head


def log_lik(model, m, z, x):
    out = model.decoders[m](z.reshape(-1, z.shape[-1]))
    out = out.reshape(*z.shape[:-1], *out.shape[1:])
    if m == "a":
        return gaussian_logpdf(x, out, torch.tensor(0.75, dtype=z.dtype)).sum(-1)
    logits, target = out.flatten(-3), x.flatten(-3).expand_as(out.flatten(-3))
    return -(torch.clamp(logits, 0) - logits * target + torch.log1p(torch.exp(-logits.abs()))).sum(-1)


def reference_loss(model, batch, noise, beta, c, direction, detach_ratio=True):
    """−(1/B) Σ_rows: paired rows dw · [L(a→c) + L(c→a)] (run_match; dw = 1 in the code's 'bi', ½ in eq. 2),
    single-modality rows the ELBO with the pseudo-sample mixture of the missing modality (run_unsup)."""
    s_t = [("a", "c"), ("c", "a")]
    obs = batch.mask
    rows = {m: torch.nonzero(obs[m]).squeeze(1) for m in PAIR}
    paired = torch.nonzero(obs["a"] & obs["c"]).squeeze(1)
    total = torch.zeros(batch.size, dtype=torch.float64)
    dw = 1.0 if direction == "sum" else 0.5
    for s, t in s_t:
        loc_s, scale_s = encode(model, s, batch.data[s])
        loc_t, scale_t = encode(model, t, batch.data[t])
        z_all = torch.zeros_like(loc_s)
        z_all[rows[s]] = loc_s[rows[s]] + scale_s[rows[s]] * noise.eps[f"z/{s}"]
        # paired rows: the semi-supervised bound of direction s -> t
        if paired.numel():
            z = z_all[paired]
            log_psz = log_lik(model, s, z, batch.data[s][paired])
            log_qtz = log_lik(model, t, z, batch.data[t][paired])
            kl = compute_kl(loc_s[paired], scale_s[paired], loc_t[paired], scale_t[paired])
            fresh = loc_s[paired] + scale_s[paired] * noise.eps[f"fresh/{s}"]                 # (K, P, D)
            probs = torch.cat([log_lik(model, t, fresh, batch.data[t][paired]), log_qtz.unsqueeze(0)])
            log_qts = torch.logsumexp(probs, 0) - torch.log(torch.tensor(float(probs.shape[0])))
            w = torch.exp(log_qtz - log_qts)
            loss = (w.detach() if detach_ratio else w) * (log_psz - log_qtz - beta * kl) + c * log_qts
            total = total.index_add(0, paired, dw * loss)
        # rows with s only: ELBO whose prior is the mixture of t's encoder at t's pseudo-samples
        only = torch.nonzero(obs[s] & ~obs[t]).squeeze(1)
        if only.numel():
            z = z_all[only]
            n = int(model.pseudo_filled[list(PAIR).index(t)])
            p_loc, p_scale = encode(model, t, model.pseudo[t][:n])
            log_qz = gaussian_logpdf(z, loc_s[only], scale_s[only]).sum(-1)
            mix = torch.logsumexp(gaussian_logpdf(z.unsqueeze(1), p_loc, p_scale).sum(-1), 1) - torch.log(
                torch.tensor(float(n)))                                                     # uniform logits
            elbo = log_lik(model, s, z, batch.data[s][only]) - beta * (log_qz - mix)
            total = total.index_add(0, only, elbo)
    return -total.mean()


def fixed_noise(batch, k=3):
    g = torch.Generator().manual_seed(7)
    paired = int((batch.mask["a"] & batch.mask["c"]).sum())
    eps = {f"z/{m}": torch.randn(int(batch.mask[m].sum()), 4, generator=g, dtype=torch.float64) for m in PAIR}
    eps.update({f"fresh/{m}": torch.randn(k, paired, 4, generator=g, dtype=torch.float64) for m in PAIR})
    return FixedNoise(eps, seed=None)


ROWS = {"paired": ((), ()), "one-missing": ((0, 1), (2,)), "no-paired-row": ((0, 1, 2), (3, 4, 5))}


@pytest.mark.parametrize("rows", list(ROWS))
@pytest.mark.parametrize("direction,c,beta", [("sum", 10.0, 1.0), ("half", 10.0, 1.0), ("half", 1.0, 0.6)])
def test_loss_and_gradients_match_the_authors_formulas(gen, rows, direction, c, beta):
    model = meme(direction_weight=direction, classifier_weight=c)
    model.train().loss(_batch(gen, n=8))                       # fill the pseudo-sample slots from real items
    model.eval()
    assert model.pseudo_filled.tolist() == [4, 4]
    s_only, t_only = ROWS[rows]
    batch = _batch(gen, s_only=list(s_only), t_only=list(t_only))
    noise = fixed_noise(batch)
    loss, logs = model.loss(batch, beta, noise=noise)
    ref = reference_loss(model, batch, noise, beta, c, direction)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    params = list(model.parameters())
    g_lib = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    reached = 0
    for (n, p), a, b in zip(model.named_parameters(), g_lib, g_ref):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=lambda s, n=n: f"{n}: {s}")
        reached += bool(a.abs().sum() > 0)
    assert reached >= 6
    if rows != "paired":
        assert any("pseudo" in n and bool(a is not None and a.abs().sum() > 0)
                   for (n, _), a in zip(model.named_parameters(), g_lib))       # the pseudo-samples learn
    # the comparison can fail: the other direction weight gives another loss whenever a row is paired
    if rows != "no-paired-row":
        other = reference_loss(model, batch, noise, beta, c, "sum" if direction == "half" else "half")
        assert abs(float(other.detach()) - float(loss.detach())) > 1e-4


def test_the_ratio_is_held_constant_in_the_model_gradient(gen):
    """App. B's stop-gradient on w = q(t|z) / q(t|s), at model level: the reference with w left in the
    graph has the same loss but other gradients, and the library matches the detached one (above)."""
    model = meme(direction_weight="sum")
    model.train().loss(_batch(gen, n=8))
    model.eval()
    batch = _batch(gen)
    noise = fixed_noise(batch)
    loss, _ = model.loss(batch, noise=noise)
    live = reference_loss(model, batch, noise, 1.0, 10.0, "sum", detach_ratio=False)
    torch.testing.assert_close(loss, live, rtol=1e-9, atol=1e-9)
    params = [p for n, p in model.named_parameters() if n.startswith(("encoders", "decoders"))]
    g_lib = torch.autograd.grad(loss, params, retain_graph=True)
    g_live = torch.autograd.grad(live, params)
    assert max(float((a - b).abs().max()) for a, b in zip(g_lib, g_live)) > 1e-3
