"""Partial observation (MEME, Joy et al. 2022, Sec. 5): exact counts per scheme, seeding, the run folder."""
from __future__ import annotations

import json

import pytest
import torch

from mmvae.config import Config
from mmvae.data.dataset import ModalitySpec, MultimodalDataset
from mmvae.data.partial import apply_partial_observation, drop_unobserved_rows, partial_masks
from mmvae.data.toy import toy_bimodal
from mmvae.errors import UserError
from mmvae.train.trainer import Trainer

NAMES2 = ["s", "t"]
NAMES3 = ["x", "y", "z"]


def pattern_counts(masks: dict, names: list[str]) -> dict[tuple[bool, ...], int]:
    stacked = torch.stack([masks[m] for m in names], 1)
    out: dict[tuple[bool, ...], int] = {}
    for row in stacked.tolist():
        out[tuple(row)] = out.get(tuple(row), 0) + 1
    return out


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
@pytest.mark.parametrize("f", [0.125, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("observed", ["s", "t", "split"])
def test_two_modality_counts_are_exact(n, f, observed):
    masks = partial_masks(n, NAMES2, f, observed, seed=3)
    paired = int(round(f * n))
    unpaired = n - paired
    c = pattern_counts(masks, NAMES2)
    assert c.get((True, True), 0) == paired
    assert c.get((False, False), 0) == 0                      # every row keeps something
    if observed == "split":
        assert c.get((True, False), 0) == (unpaired + 1) // 2  # dealt out in turn: s gets the odd one
        assert c.get((False, True), 0) == unpaired // 2
    else:
        keep = (True, False) if observed == "s" else (False, True)
        assert c.get(keep, 0) == unpaired
        assert sum(c.values()) == paired + unpaired


@pytest.mark.parametrize("observed", NAMES3 + ["split"])
def test_three_modality_schemes(observed):
    n, f = 301, 0.3
    masks = partial_masks(n, NAMES3, f, observed, seed=0)
    c = pattern_counts(masks, NAMES3)
    paired = int(round(f * n))
    assert c[(True, True, True)] == paired
    singles = {m: c.get(tuple(k == m for k in NAMES3), 0) for m in NAMES3}
    if observed == "split":                                   # never two modalities together when unpaired
        assert sum(singles.values()) == n - paired and max(singles.values()) - min(singles.values()) <= 1
    else:
        assert singles[observed] == n - paired and sum(singles.values()) == n - paired


def test_full_fraction_masks_nothing_and_seed_fixes_the_draw():
    assert all(bool(m.all()) for m in partial_masks(50, NAMES2, 1.0, "split", seed=0).values())
    a = partial_masks(200, NAMES2, 0.25, "split", seed=5)
    b = partial_masks(200, NAMES2, 0.25, "split", seed=5)
    c = partial_masks(200, NAMES2, 0.25, "split", seed=6)
    assert all(torch.equal(a[m], b[m]) for m in NAMES2)
    assert not all(torch.equal(a[m], c[m]) for m in NAMES2)


@pytest.mark.parametrize("f,observed,match", [(0.0, "split", "paired_fraction"), (1.5, "split", "paired_fraction"),
                                              (0.5, "u", "names no modality")])
def test_bad_options_are_user_errors(f, observed, match):
    with pytest.raises(UserError, match=match):
        partial_masks(10, NAMES2, f, observed, seed=0)


def test_existing_masks_are_kept_and_empty_rows_dropped():
    spec = ModalitySpec("s", "vector", (2,), "normal")
    data = MultimodalDataset({"s": spec, "t": ModalitySpec("t", "vector", (2,), "normal")},
                             {"s": torch.zeros(40, 2), "t": torch.zeros(40, 2)},
                             {"s": torch.arange(40) % 4 != 0, "t": torch.ones(40, dtype=torch.bool)})
    out = apply_partial_observation(data, 0.5, "s", seed=1)
    assert not bool(out.mask["s"][::4].any())                # rows missing s before stay missing
    kept = drop_unobserved_rows(out)
    assert "none" not in kept.counts() and len(kept) == len(out) - out.counts().get("none", 0)
    assert sum(kept.counts().values()) == len(kept)


@pytest.mark.parametrize("model", ["mvae", "mmvae", "mopoe"])
def test_trainer_masks_training_rows_only_and_records_them(tmp_path, model):
    """The mask is saved in the run folder and reported; validation and test rows stay complete."""
    splits = toy_bimodal(n=400)
    cfg = Config(model=model, dataset="toy", epochs=1, batch_size=64, latent_dim=4, hidden=16, seed=2,
                 paired_fraction=0.25, observed="a", out=str(tmp_path / model))
    trainer = Trainer(cfg, splits=splits, show_progress=False)
    trainer.fit()
    n = len(trainer.train_data)
    counts = json.loads((tmp_path / model / "config.json").read_text())["data"]["observed_patterns"]
    assert counts == {"a+b": int(round(0.25 * n)), "a": n - int(round(0.25 * n))}
    saved = torch.load(tmp_path / model / "observed_mask.pt", weights_only=True)
    assert saved["modalities"] == ["a", "b"]
    assert torch.equal(saved["mask"], torch.stack([trainer.train_data.mask[m] for m in ["a", "b"]], 1))
    assert all(bool(trainer.val.mask[m].all()) and bool(splits.test.mask[m].all()) for m in ["a", "b"])
