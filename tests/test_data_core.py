"""Data core: the npz conventions, in-memory datasets sliced by index, the built-in offline datasets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmvae.data import Batch, load_dataset
from mmvae.data.arrays import arrays_to_splits
from mmvae.data.dataset import validation_split
from mmvae.data.partial import drop_unobserved_rows, partial_masks
from mmvae.errors import UserError


def _arrays(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {"img": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            "cls": rng.integers(0, 4, n).astype(np.int64),
            "vec": rng.normal(size=(n, 6)).astype(np.float32)}


def test_npz_conventions(tmp_path):
    arrays = _arrays()
    arrays["label"] = np.arange(40) % 3
    arrays["split"] = (np.arange(40) >= 30).astype(np.int64)
    np.savez(tmp_path / "d.npz", **arrays)
    splits = load_dataset(str(tmp_path / "d.npz"))
    specs = splits.specs
    assert set(specs) == {"img", "cls", "vec"}                      # label and split are not modalities
    assert specs["img"].kind == "image" and specs["img"].shape == (1, 28, 28)
    assert specs["cls"].kind == "categorical" and specs["cls"].num_classes == 4
    assert specs["vec"].kind == "vector" and specs["vec"].shape == (6,)
    assert len(splits.train) == 30 and len(splits.test) == 10      # split: 0 train, 1 test
    tr = splits.train
    assert torch.allclose(tr.data["img"][:, 0], torch.from_numpy(arrays["img"][:30]).float() / 255.0)  # uint8 / 255
    assert torch.equal(tr.data["cls"].argmax(1), torch.from_numpy(arrays["cls"][:30]))                  # one-hot
    assert torch.allclose(tr.data["cls"].sum(1), torch.ones(30))
    assert torch.equal(tr.label, torch.arange(30) % 3)
    assert torch.equal(splits.test.label, torch.arange(30, 40) % 3)


def test_npz_channels_last_images_and_seeded_default_split():
    rng = np.random.default_rng(1)
    arrays = {"rgb": rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), "x": rng.normal(size=(50, 2))}
    a = arrays_to_splits(arrays, seed=3)
    b = arrays_to_splits(arrays, seed=3)
    c = arrays_to_splits(arrays, seed=4)
    assert a.specs["rgb"].shape == (3, 32, 32) and a.specs["rgb"].kind == "image"
    assert len(a.test) == 5 and len(a.train) == 45                 # 90/10
    assert torch.equal(a.test.data["x"], b.test.data["x"]) and not torch.equal(a.test.data["x"], c.test.data["x"])
    # channels moved to the front, values kept
    ordered = arrays_to_splits({**arrays, "split": (np.arange(50) >= 40).astype(np.int64)})
    expected = torch.from_numpy(arrays["rgb"][:40]).permute(0, 3, 1, 2).float() / 255.0
    assert torch.allclose(ordered.train.data["rgb"], expected)


def test_npz_masks(tmp_path):
    arrays = _arrays()
    mask = np.ones(40, bool)
    mask[::4] = False
    arrays["mask_vec"] = mask
    arrays["vec"][~mask] = np.nan                                   # missing entries may hold anything
    arrays["split"] = (np.arange(40) >= 30).astype(np.int64)
    splits = arrays_to_splits(arrays)
    tr = splits.train
    assert torch.equal(tr.mask["vec"], torch.from_numpy(mask[:30]))
    assert torch.isfinite(tr.data["vec"]).all()
    assert tr.mask["img"].all()
    # partially observed test rows are kept (issue 14): each metric uses the rows observing what it needs
    assert len(splits.test) == 10 and torch.equal(splits.test.mask["vec"], torch.from_numpy(mask[30:]))
    assert tr.counts() == {"img+cls+vec": int(mask[:30].sum()), "img+cls": int((~mask[:30]).sum())}


@pytest.mark.parametrize("arrays,match", [
    ({"label": np.arange(5)}, "no modality arrays"),
    ({"a": np.zeros((5, 2)), "b": np.zeros((4, 2))}, "different numbers of samples"),
    ({"a": np.zeros((5, 2)), "mask_b": np.ones(5, bool)}, "names no modality"),
    ({"a": np.zeros((5, 2)), "split": np.full(5, 2)}, "split"),
    ({"a": np.zeros((5, 2)), "label": np.array([0.5] * 5)}, "label"),
    ({"a": np.full((5, 2), np.nan)}, "NaN"),
    ({"a": np.array(["x"] * 5)}, "dtype"),
])
def test_npz_validation_errors(arrays, match):
    with pytest.raises(UserError, match=match):
        arrays_to_splits(arrays)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("no-such-dataset")


def test_batches_slice_every_row_once_and_batch_masks():
    splits = arrays_to_splits(_arrays(n=103))
    data = splits.train
    seen = []
    for b in data.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert isinstance(b, Batch) and b.size <= 16 and b.complete
        seen.append(b.data["vec"])
    assert data.num_batches(16) == len(seen)
    got = torch.cat(seen)
    assert got.shape == data.data["vec"].shape
    assert torch.equal(got[got[:, 0].argsort()], data.data["vec"][data.data["vec"][:, 0].argsort()])
    skipped = list(data.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0), start=2))
    assert torch.equal(skipped[0].data["vec"], seen[2])                       # exact resume mid-epoch


def test_batch_fills_masks_and_selects():
    b = Batch({"a": torch.zeros(3, 2), "b": torch.ones(3)}, {"b": torch.tensor([True, False, True])})
    assert b.mask["a"].all() and not b.complete
    s = b.select(["b"])
    assert s.modalities == ["b"] and torch.equal(s.mask["b"], b.mask["b"])
    r = b.rows(torch.tensor([2, 0]))
    assert r.size == 2 and r.mask["b"].all()


def test_validation_split_is_seeded_and_disjoint():
    data = arrays_to_splits(_arrays(n=200)).train
    tr, va = validation_split(data, 0.1, seed=1)
    tr2, va2 = validation_split(data, 0.1, seed=1)
    _, va3 = validation_split(data, 0.1, seed=2)
    assert len(va) == 18 and len(tr) + len(va) == len(data)
    assert torch.equal(va.data["vec"], va2.data["vec"]) and not torch.equal(va.data["vec"], va3.data["vec"])
    rows = {tuple(r.tolist()) for r in tr.data["vec"]}
    assert not any(tuple(r.tolist()) in rows for r in va.data["vec"])


@pytest.mark.parametrize("observed", ["a", "split"])
def test_partial_masks(observed):
    names = ["a", "b", "c"]
    masks = partial_masks(100, names, 0.3, observed, seed=0)
    obs = torch.stack([masks[m] for m in names])
    assert int(obs.all(0).sum()) == 30
    if observed == "a":
        assert masks["a"].all() and int(masks["b"].sum()) == 30
    else:
        assert bool((obs.sum(0)[~obs.all(0)] == 1).all())        # unpaired rows see exactly one modality
    assert torch.equal(partial_masks(100, names, 0.3, observed, seed=0)["b"], masks["b"])


def test_drop_unobserved_rows():
    arrays = _arrays(n=20)
    arrays["mask_img"] = np.arange(20) % 2 == 0
    arrays["mask_cls"] = np.arange(20) % 2 == 0
    arrays["mask_vec"] = np.arange(20) % 4 == 0
    arrays["split"] = (np.arange(20) >= 16).astype(np.int64)
    data = arrays_to_splits(arrays).train
    assert len(drop_unobserved_rows(data)) == 8


def test_toy_dataset_keeps_prototypes_and_shares_the_class():
    splits = load_dataset("toy", n=300)
    for part in (splits.train, splits.test):
        for m in ("a", "b"):
            nearest = torch.cdist(part.data[m], part.prototypes[m]).argmin(1)
            assert float((nearest == part.label).float().mean()) > 0.95


def test_mnist_label_dataset():
    splits = load_dataset("mnist-label", n=300)
    assert len(splits.train) + len(splits.test) == 300
    tr = splits.train
    assert tr.specs["image"].likelihood == "bernoulli" and tr.specs["label"].kind == "categorical"
    assert torch.equal(tr.data["label"].argmax(1), tr.label)
    x = tr.data["image"]
    assert x.shape[1:] == (1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert bool(((x > 0) & (x < 1)).any())                        # grey levels, not binarised
    assert len(load_dataset("mnist-label").train) == 4500


def test_polymnist_dataset():
    splits = load_dataset("polymnist", n=200, modalities=2)
    tr = splits.train
    assert list(tr.specs) == ["m0", "m1"] and len(tr) + len(splits.test) == 200
    for m in ("m0", "m1"):
        x = tr.data[m]
        assert x.shape[1:] == (3, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    # different photographs behind each modality, and not the same digit image (independent permutations)
    assert float((tr.data["m0"] - tr.data["m1"]).abs().mean()) > 0.05
    again = load_dataset("polymnist", n=200, modalities=2)
    assert torch.equal(again.train.data["m1"], tr.data["m1"])     # built deterministically
    with pytest.raises(UserError, match="modalities"):
        load_dataset("polymnist", n=50, modalities=6)



def test_misspelt_data_option_is_an_error():
    """An option that would silently do nothing (a β-like pitfall for data) is refused, naming the options."""
    with pytest.raises(UserError, match="modalites.*modalities"):
        load_dataset("polymnist", modalites=2)
    with pytest.raises(UserError, match="data.n"):
        load_dataset("polymnist", n=1)
