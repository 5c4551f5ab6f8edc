"""MoPoE (Sutter et al. 2021) against formulas written here from the authors' code (thomassutter/MoPoE,
run_epochs.py basic_routine_epoch, utils/BaseMMVae.py inference/poe_fusion/moe_fusion and
divergence_measures/mm_div.py): float64, fixed noise, loss and gradients of every parameter to 1e-6.

Per row: one sample of the mixture of subset products (the subset given as a fixed pick; the code
selects it by blocks of the batch, `mixture_component_selection`), loss = −Σ_m λ_m log p(x_m | z)
+ β Σ_S w_S KL(q_S ‖ N(0, I)), averaged over the batch, w_S uniform over the subsets the row observes.
Deliberate deviation (docs/models/fusion-models.md): the authors' poe_fusion also multiplies the full
set's product by a N(0, I) expert; the library, and so this reference, does not.
"""
from __future__ import annotations

from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_same_gradients
from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"x": ModalitySpec("x", "vector", (5,), "laplace"), "y": ModalitySpec("y", "vector", (3,), "normal"),
         "l": ModalitySpec("l", "categorical", (4,), "categorical", num_classes=4)}
NAMES = list(SPECS)
SUBSETS = [s for r in range(1, 4) for s in combinations(NAMES, r)]        # 7 non-empty subsets
D, B = 4, 6
LAMBDA = {"x": 1.0, "y": 2.0, "l": 0.5}


def make_model():
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="mopoe", latent_dim=D, hidden=16, weights=dict(LAMBDA))).double()


def make_batch(missing: bool) -> Batch:
    g = torch.Generator().manual_seed(1)
    data = {"x": torch.randn(B, 5, generator=g, dtype=torch.float64),
            "y": torch.randn(B, 3, generator=g, dtype=torch.float64),
            "l": F.one_hot(torch.randint(0, 4, (B,), generator=g), 4).double()}
    mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
    if missing:
        mask["l"][[0, 1]] = False
        mask["x"][[1, 2]] = False
        mask["y"][3] = False
    return Batch(data, mask)


def usable(batch, subset):
    return torch.stack([batch.mask[m] for m in subset]).all(0)


def draw_picks(batch, g):
    """A subset per row among those it observes (the library's fusion weights the others by 0)."""
    picks = []
    for b in range(B):
        ok = [s for s, sub in enumerate(SUBSETS) if bool(usable(batch, sub)[b])]
        picks.append(ok[int(torch.randint(0, len(ok), (1,), generator=g))])
    return torch.tensor(picks).unsqueeze(0)                                       # (K = 1, B)


def log_lik(model, m, z, x):
    out = model.decoders[m](z)
    if m == "x":
        return (-torch.log(2 * torch.tensor(0.75)) - (x - out).abs() / 0.75).sum(-1)
    if m == "y":
        return (-0.5 * ((x - out) / 0.75) ** 2 - torch.log(torch.tensor(0.75)) - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    return (x * F.log_softmax(out, -1)).sum(-1)


def reference_loss(model, batch, eps, picks, beta):
    mu, logvar = {}, {}
    for m in SPECS:
        loc, raw = model.encoders[m](batch.data[m])
        mu[m], logvar[m] = loc, 2 * torch.log(F.softplus(raw) + 1e-6)           # the library's Gaussian head
    sub_mu, sub_logvar = [], []
    for subset in SUBSETS:                                                         # BaseMMVae.poe (eps 1e-8)
        var = torch.exp(torch.stack([logvar[m] for m in subset])) + 1e-8
        T = 1.0 / var
        sub_mu.append((torch.stack([mu[m] for m in subset]) * T).sum(0) / T.sum(0))
        sub_logvar.append(torch.log(1.0 / T.sum(0)))
    sub_mu, sub_logvar = torch.stack(sub_mu), torch.stack(sub_logvar)              # (S, B, D)
    rows = torch.arange(B)
    z = sub_mu[picks[0], rows] + torch.exp(0.5 * sub_logvar[picks[0], rows]) * eps[0]   # reparameterize
    rec = sum(batch.mask[m].double() * LAMBDA[m] * log_lik(model, m, z, batch.data[m]) for m in SPECS)
    kld = -0.5 * (1 - sub_logvar.exp() - sub_mu.pow(2) + sub_logvar).sum(-1)     # calc_kl_divergence, (S, B)
    w = torch.stack([usable(batch, s) for s in SUBSETS]).double()
    group_div = (w / w.sum(0) * kld).sum(0)                                        # calc_group_divergence_moe
    return (-rec + beta * group_div).mean()


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "some-missing"])
@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_loss_and_gradients_match_the_authors_formulas(beta, missing):
    model, batch = make_model(), make_batch(missing)
    g = torch.Generator().manual_seed(2)
    picks = draw_picks(batch, g)
    eps = torch.randn(1, B, D, generator=g, dtype=torch.float64)
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, {"z": picks}, seed=None))
    ref = reference_loss(model, batch, eps, picks, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(-logs["bound"], ref.detach(), rtol=1e-6, atol=1e-9)
    assert_same_gradients(model, loss, ref)
    # the comparison can fail: the same draws with another subset for one row give another loss
    other = picks.clone()
    other[0, 4] = (other[0, 4] + 1) % len(SUBSETS)
    assert abs(float(reference_loss(model, batch, eps, other, beta).detach()) - float(loss.detach())) > 1e-4
