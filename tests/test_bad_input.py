"""Bad input: one clear line on stderr, exit code 2, and nothing in the run folder overwritten.

Covers damaged checkpoints and safetensors, run folders of another format version, NaN / infinite
data, Bernoulli data outside [0, 1], labels outside the class range, a full disk or unwritable output
folder, and a fuzz test of the npz loader (every malformed file is a UserError, nothing else)."""
from __future__ import annotations

import errno
import hashlib
import importlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import copy_run, train_small
from mmvae.cli import main
from mmvae.config import Config
from mmvae.data.arrays import load_arrays
from mmvae.data.dataset import DatasetSplits, ModalitySpec, MultimodalDataset
from mmvae.errors import UserError
from mmvae.train.trainer import Trainer
from safetensors.torch import load_file

checkpoint = importlib.import_module("mmvae.train.checkpoint")  # mmvae.train is also a function name

OPTS = ["--epochs", "1", "--batch-size", "32", "--set", "hidden=16", "--latent-dim", "3", "--device", "cpu"]
SMALL = ["--dataset", "toy", "--set", "data.n=120", *OPTS]


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _fails_cleanly(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    # notes printed before the failure (e.g. "note: --resume overrides epochs 1 -> 2") are not the error
    err = "\n".join(line for line in err.splitlines() if not line.startswith("note: "))
    assert err.count("\n") == 0 and err.startswith("mmvae: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory.mktemp("bad"))


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return copy_run(trained, tmp_path)


# ----------------------------------------------------------------------------- damaged run folders
CORRUPTIONS = {
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "garbage": lambda b: os.urandom(64) + b[64:],
    "header": lambda b: b[:8] + b"{not json" + b[17:],   # safetensors: the JSON header after its length
}


def _weights(path: Path) -> dict:
    return load_file(str(path))


def _flip(path: Path, count: int = 64, seed: int = 0) -> None:
    """Overwrite ``count`` bytes in the middle half of a file (a bit-damaged copy that still loads)."""
    b = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.integers(len(b) // 4, 3 * len(b) // 4, size=count):
        b[pos] ^= 0xFF
    path.write_bytes(bytes(b))


def _flip_tensor_bytes(path: Path, count: int = 64, seed: int = 0) -> None:
    """Overwrite ``count`` bytes inside the largest tensor of a torch file (a zip of records): damage that
    still loads. Random bytes of the whole file may hit a record header, which torch.load rejects."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    b = bytearray(path.read_bytes())
    head = info.header_offset
    start = head + 30 + int.from_bytes(b[head + 26:head + 28], "little") + int.from_bytes(b[head + 28:head + 30], "little")
    rng = np.random.default_rng(seed)
    for pos in rng.integers(start, start + info.file_size, size=count):
        b[pos] ^= 0xFF
    path.write_bytes(bytes(b))


@pytest.fixture(scope="module")
def resumed_clean(trained, tmp_path_factory) -> Path:
    """The trained run resumed to epoch 2 without damage: what every recovery must reach."""
    out = tmp_path_factory.mktemp("clean") / "run"
    shutil.copytree(trained, out)
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    return out


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS) + ["flipped"])
def test_damaged_weights_export_is_rewritten_from_the_state(run, resumed_clean, capsys, damage):
    path = run / "model.safetensors"
    original = path.read_bytes()
    if damage == "flipped":
        _flip(path)
    else:
        path.write_bytes(CORRUPTIONS[damage](original))
    damaged = path.read_bytes()
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "model.safetensors is damaged" in err and "model.safetensors.damaged" in err, err
    assert (run / "model.safetensors.damaged").read_bytes() == damaged      # kept, not deleted
    clean, got = _weights(resumed_clean / "model.safetensors"), _weights(run / "model.safetensors")
    assert all(torch.equal(clean[k], got[k]) for k in clean)                # the exact resumed run


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "flipped", "missing"])
def test_damaged_state_falls_back_to_the_last_intact_weights(run, capsys, damage):
    state = run / "training_state.pt"
    if damage == "flipped":        # loads without any error: only the checksum finds it
        _flip_tensor_bytes(state)
        torch.load(state, weights_only=True)
    elif damage == "missing":
        state.unlink()
    else:
        state.write_bytes(CORRUPTIONS[damage](state.read_bytes()))
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "training_state.pt is" in err and "continuing from model.safetensors (epoch 1" in err, err
    assert (run / "training_state.pt.damaged").exists() == (damage != "missing")
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert events[-1]["from"] == "model.safetensors"
    state = torch.load(run / "training_state.pt", weights_only=True)       # a new, intact state
    assert state["progress"]["epoch"] == 2


def test_everything_damaged_exits_2_naming_the_state(run, capsys):
    for name in ("training_state.pt", "model.safetensors", "best.safetensors"):
        _flip(run / name)
    before = _fingerprint(run)
    _fails_cleanly(capsys, ["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"],
                   "training_state.pt is damaged", "no intact weights")
    assert _fingerprint(run) == before


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_damaged_safetensors_when_sampling(run, capsys, damage):
    path = run / "model.safetensors"
    path.write_bytes(CORRUPTIONS[damage](path.read_bytes()))
    before = _fingerprint(run)
    _fails_cleanly(capsys, ["sample", str(run), "--out", str(run / "grid.png")], "model.safetensors")
    assert _fingerprint(run) == before


def test_state_of_another_model_is_refused(run, capsys):
    state = torch.load(run / "training_state.pt", weights_only=True)
    state["model"] = {"something.else": torch.zeros(3)}
    torch.save(state, run / "training_state.pt")
    (run / "checksums.json").unlink()     # an older run folder: nothing to verify, the state is loaded
    before = _fingerprint(run)
    _fails_cleanly(capsys, ["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"], "does not fit this model")
    assert _fingerprint(run) == before


def test_incompatible_format_version(run, capsys):
    cfg = json.loads((run / "config.json").read_text())
    cfg["format_version"] = 999
    (run / "config.json").write_text(json.dumps(cfg))
    before = _fingerprint(run)
    for argv in (["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"], ["sample", str(run)]):
        _fails_cleanly(capsys, argv, "incompatible", "999")
    assert _fingerprint(run) == before


def test_incompatible_state_version(run, capsys):
    state = torch.load(run / "training_state.pt", weights_only=True)
    state["format_version"] = 0
    torch.save(state, run / "training_state.pt")
    (run / "checksums.json").unlink()
    before = _fingerprint(run)
    _fails_cleanly(capsys, ["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"], "incompatible")
    assert _fingerprint(run) == before


def test_corrupt_config_json(run, capsys):
    (run / "config.json").write_text('{"format_version": 1, "conf')
    _fails_cleanly(capsys, ["sample", str(run)], "config.json")


# ------------------------------------------------------------------------------------- bad data
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _vectors(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.random((n, 4)).astype(np.float32), "b": rng.random((n, 3)).astype(np.float32)}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_data(tmp_path, capsys, value):
    arrays = _vectors()
    arrays["a"][7, 2] = value
    data = _npz(tmp_path / "d.npz", **arrays)
    _fails_cleanly(capsys, ["train", *OPTS, "--dataset", str(data), "--out", str(tmp_path / "r")],
                   "'a'", "NaN or infinite")
    assert not (tmp_path / "r" / "config.json").exists()


def test_bernoulli_data_outside_unit_interval(tmp_path, capsys):
    arrays = _vectors()
    arrays["b"] = arrays["b"] * 3.0          # a real vector: fine for normal, wrong for bernoulli
    data = _npz(tmp_path / "d.npz", **arrays)
    argv = ["train", *OPTS, "--dataset", str(data), "--set", "likelihood.b=bernoulli", "--out", str(tmp_path / "r")]
    _fails_cleanly(capsys, argv, "'b'", "bernoulli", "[0, 1]")
    assert not (tmp_path / "r" / "config.json").exists()
    # In [0, 1] it trains.
    assert main(["train", *OPTS, "--dataset", str(_npz(tmp_path / "ok.npz", **_vectors())),
                 "--set", "likelihood.b=bernoulli", "--out", str(tmp_path / "ok")]) == 0


def test_label_outside_the_class_range(tmp_path, capsys):
    arrays = _vectors()
    arrays["label"] = np.arange(40) % 3
    arrays["label"][5] = -1
    _fails_cleanly(capsys, ["train", *OPTS, "--dataset", str(_npz(tmp_path / "d.npz", **arrays)),
                            "--out", str(tmp_path / "r")], "label")
    # A dataset built in Python that declares fewer classes than its labels use.
    specs = {m: ModalitySpec(m, "vector", (4,), "normal") for m in "ab"}
    full = MultimodalDataset(specs, {m: torch.rand(40, 4) for m in "ab"}, label=torch.arange(40) % 5, num_classes=3)
    splits = DatasetSplits(full.subset(torch.arange(8, 40)), full.subset(torch.arange(8)))
    cfg = Config(model="mopoe", dataset="x", epochs=1, batch_size=8, hidden=8, latent_dim=2, device="cpu",
                 out=str(tmp_path / "p"))
    with pytest.raises(UserError, match=r"labels span \[0, 4\] but the dataset declares 3 classes"):
        Trainer(cfg, splits=splits, show_progress=False)


# --------------------------------------------------------------------------- unwritable output
@pytest.mark.parametrize("how", ["replace", "save"])
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(run, capsys, monkeypatch, how):
    before = _fingerprint(run)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if how == "replace":
        monkeypatch.setattr(checkpoint.os, "replace", full)
    else:  # torch.save reports a full disk as RuntimeError from its zip writer
        def broken(obj, f, *a, **k):
            f.write(b"partial") if hasattr(f, "write") else Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file")
        monkeypatch.setattr(checkpoint.torch, "save", broken)
    _fails_cleanly(capsys, ["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"], "cannot write")
    after = _fingerprint(run)
    # (with only torch.save failing, best.safetensors of the better epoch 2 may already be written)
    for name in ("model.safetensors", "training_state.pt", "config.json") + (("best.safetensors",) if how == "replace" else ()):
        assert after[name] == before[name], f"{name} was overwritten"
    assert not list(run.glob(".tmp-*"))
    monkeypatch.undo()
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(run), "--resume"]) == 0   # still resumable


def test_unwritable_or_invalid_output_folder(tmp_path, capsys, monkeypatch):
    # Tests may run as root, where a read-only chmod does not stop writes: make mkdir fail instead.
    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", denied)
        _fails_cleanly(capsys, ["train", *SMALL, "--out", str(tmp_path / "ro" / "run")], "cannot create run folder")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _fails_cleanly(capsys, ["train", *SMALL, "--out", str(blocker)], "is a file")
    assert blocker.read_text() == "not a folder"
    if os.geteuid() != 0:
        ro = tmp_path / "ro2"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            _fails_cleanly(capsys, ["train", *SMALL, "--out", str(ro)], "cannot write")
        finally:
            ro.chmod(0o700)


# ------------------------------------------------------------------------------- npz fuzz test
def _raw_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _huge_header(shape) -> bytes:
    """A .npy whose header claims an enormous shape, followed by almost no data."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 64


GOOD = _vectors(20)
MALFORMED = {
    "object array": {"a": np.array([{"x": 1}] * 20, dtype=object), "b": GOOD["b"]},
    "strings": {"a": np.array(["x"] * 20), "b": GOOD["b"]},
    "complex": {"a": GOOD["a"].astype(np.complex64), "b": GOOD["b"]},
    "datetime": {"a": np.arange(20).astype("datetime64[s]"), "b": GOOD["b"]},
    "structured": {"a": np.zeros(20, dtype=[("x", "f4"), ("y", "i4")]), "b": GOOD["b"]},
    "empty": {"a": np.zeros((0, 4), np.float32), "b": np.zeros((0, 3), np.float32)},
    "one row": {"a": GOOD["a"][:1], "b": GOOD["b"][:1]},
    "zero-width": {"a": np.zeros((20, 0), np.float32), "b": GOOD["b"]},
    "mismatched lengths": {"a": GOOD["a"], "b": GOOD["b"][:7]},
    "0-d array": {"a": np.float32(3.0), "b": GOOD["b"]},
    "only 0-d": {"a": np.float32(3.0)},
    "nothing but label": {"label": np.arange(20)},
    "no arrays": {},
    "float mask": {**GOOD, "mask_a": np.ones(20, np.float32)},
    "2-d mask": {**GOOD, "mask_a": np.ones((20, 2), bool)},
    "short mask": {**GOOD, "mask_a": np.ones(5, bool)},
    "string mask": {**GOOD, "mask_a": np.array(["yes"] * 20)},
    "mask of nothing": {**GOOD, "mask_zz": np.ones(20, bool)},
    "float label": {**GOOD, "label": np.linspace(0, 1, 20)},
    "2-d label": {**GOOD, "label": np.zeros((20, 2), np.int64)},
    "negative label": {**GOOD, "label": -np.ones(20, np.int64)},
    "huge label": {**GOOD, "label": np.full(20, 2**40, np.int64)},
    "huge class index": {"a": np.full(20, 2**40, np.int64), "b": GOOD["b"]},
    "uint64 class index": {"a": np.full(20, 2**63 + 5, np.uint64), "b": GOOD["b"]},
    "negative class": {"a": -np.ones(20, np.int64), "b": GOOD["b"]},
    "split values": {**GOOD, "split": np.full(20, 2)},
    "split all test": {**GOOD, "split": np.ones(20, np.int64)},
    "nan": {"a": np.full((20, 4), np.nan, np.float32), "b": GOOD["b"]},
    "inf float16": {"a": np.full((20, 4), np.inf, np.float16), "b": GOOD["b"]},
    "float128 overflow": {"a": np.full((20, 4), 1e300, np.float64), "b": GOOD["b"]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_fuzz_malformed_npz_is_always_a_user_error(tmp_path, case):
    arrays = MALFORMED[case]
    path = tmp_path / "d.npz"
    if any(a.dtype == object for a in arrays.values()):
        _raw_npz(path, {f"{k}.npy": _npy_bytes(v) for k, v in arrays.items()})
    else:
        np.savez(path, **arrays)
    with pytest.raises(UserError):
        load_arrays(path)


RAW = {
    "not a zip": b"hello, this is not an npz",
    "empty file": b"",
    "member without .npy": None,
    "huge declared shape": None,
    "huge declared dims": None,
    "truncated member": None,
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_fuzz_raw_bytes_are_always_a_user_error(tmp_path, case):
    path = tmp_path / "d.npz"
    b = _npy_bytes(GOOD["b"])
    if case == "member without .npy":
        _raw_npz(path, {"a": b"\x00\x01 raw bytes", "b.npy": b})
    elif case == "huge declared shape":
        _raw_npz(path, {"a.npy": _huge_header((10**12, 4)), "b.npy": b})
    elif case == "huge declared dims":
        _raw_npz(path, {"a.npy": _huge_header((20,) + (1000,) * 6), "b.npy": b})
    elif case == "truncated member":
        _raw_npz(path, {"a.npy": _npy_bytes(GOOD["a"])[:100], "b.npy": b})
    else:
        path.write_bytes(RAW[case])
    with pytest.raises(UserError):
        load_arrays(path)


def test_fuzz_random_byte_damage_never_escapes_as_another_exception(tmp_path):
    """Flip, cut and splice bytes of a valid file at random (seeded): it loads, or it is a UserError."""
    good = tmp_path / "good.npz"
    np.savez(good, **GOOD, label=np.arange(20) % 3, mask_a=np.arange(20) % 4 != 0)
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "user error": 0}
    for i in range(150):
        b = bytearray(data)
        how = i % 3
        if how == 0:
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[pos] = int(rng.integers(0, 256))
        elif how == 1:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            start = int(rng.integers(0, len(b)))
            b[start:start + 16] = os.urandom(16)
        path = tmp_path / f"m{i}.npz"
        path.write_bytes(bytes(b))
        try:
            load_arrays(path)
            outcomes["loaded"] += 1
        except UserError:
            outcomes["user error"] += 1
    assert outcomes["user error"] > 0


def test_values_beyond_float32_are_named_as_such(tmp_path):
    """A finite float64 array whose values overflow float32 is not reported as NaN or infinite data."""
    path = tmp_path / "d.npz"
    np.savez(path, a=np.full((20, 4), 1e300, np.float64), b=GOOD["b"])
    with pytest.raises(UserError, match="beyond float32's range"):
        load_arrays(path)
    np.savez(path, a=np.full((20, 4), np.inf, np.float64), b=GOOD["b"])
    with pytest.raises(UserError, match="NaN or infinite"):
        load_arrays(path)
