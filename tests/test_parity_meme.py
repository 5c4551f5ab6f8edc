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
