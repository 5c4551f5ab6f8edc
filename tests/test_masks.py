"""Missing modalities: masked rows never reach an encoder and never score (ARCHITECTURE: Batch contract)."""
from __future__ import annotations

import pytest
import torch

from conftest import MIXED_SPECS, build_tiny, random_batch, random_masks
from mmvae.data.batch import Batch

CASES = [("vae", "elbo", {}), ("vae", "iwae", {}), ("vae", "dreg", {}),
         ("mvae", "elbo", {}), ("mvae", "elbo", {"subsample_k": 2}), ("mvae", "iwae", {}), ("mvae", "dreg", {}),
         ("mmvae", "elbo", {}), ("mmvae", "iwae", {}), ("mmvae", "dreg", {}), ("mmvae", "elbo", {"posterior": "normal"}),
         ("mopoe", "elbo", {}), ("mopoe", "iwae", {}), ("mopoe", "dreg", {}), ("mopoe", "elbo", {"kl": "mc"})]


def _nan_filled(batch: Batch) -> Batch:
    data = {}
    for m, x in batch.data.items():
        hide = ~batch.mask[m].view(-1, *([1] * (x.dim() - 1)))
        data[m] = torch.where(hide, torch.full_like(x, float("nan")), x)
    return Batch(data, dict(batch.mask))


def _setup(name, gen, n=24):
    specs = {"c": MIXED_SPECS["c"]} if name == "vae" else MIXED_SPECS
    masks = random_masks(list(specs), n, gen)
    if name == "vae":
        masks["c"][n // 2:] = False          # the trainer drops such rows; the model must still cope
    return specs, random_batch(specs, n, gen, masks)


@pytest.mark.parametrize("name,objective,extra", CASES)
def test_nan_in_missing_rows_leaves_loss_and_gradients_finite(gen, name, objective, extra):
    specs, batch = _setup(name, gen)
    model = build_tiny(name, specs, objective=objective, k=3, **extra)
    seen = {}
    for m, enc in model.encoders.items():
        enc.register_forward_pre_hook(lambda mod, args, m=m: seen.setdefault(m, []).append(args[0].detach()))
    nan_batch = _nan_filled(batch)
    torch.manual_seed(5)
    loss, logs = model.loss(nan_batch)
    assert torch.isfinite(loss), (name, objective, float(loss))
    assert all(torch.isfinite(v) for v in logs.values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    # the encoders saw exactly the observed rows, and no NaN
    for m in specs:
        rows = sum(x.shape[0] for x in seen.get(m, []))
        assert rows == int(batch.mask[m].sum()), (m, rows)          # each encoder once, observed rows only
        assert all(torch.isfinite(x).all() for x in seen.get(m, []))
    # and what the missing rows hold does not matter at all
    torch.manual_seed(5)
    zero_loss = model.loss(batch)[0].detach()
    assert float(zero_loss) == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe"])
def test_missing_modality_does_not_score_or_move_its_decoder(gen, name):
    """A modality missing in every row of a batch contributes nothing: its decoder gets zero gradient."""
    specs = MIXED_SPECS
    masks = {m: torch.ones(12, dtype=torch.bool) for m in specs}
    masks["b"][:] = False
    batch = _nan_filled(random_batch(specs, 12, gen, masks))
    model = build_tiny(name, specs)
    loss, _ = model.loss(batch)
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.decoders["b"].parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.encoders["b"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoders["a"].parameters())


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe"])
def test_posterior_of_a_row_depends_only_on_its_observed_modalities(gen, name):
    """encode with a partial mask equals encode of the observed modalities alone (row by row)."""
    specs = MIXED_SPECS
    model = build_tiny(name, specs).eval()
    batch = random_batch(specs, 6, gen)
    mask = {"a": torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool),
            "b": torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool),
            "c": torch.tensor([0, 1, 1, 1, 1, 0], dtype=torch.bool)}
    full = model.encode(_nan_filled(Batch(batch.data, mask)).data, mask).mean
    for row in range(6):
        observed = [m for m in specs if mask[m][row]]
        alone = model.encode({m: batch.data[m][row:row + 1] for m in observed}).mean
        assert torch.allclose(full[row], alone[0], atol=1e-5), (row, observed)
