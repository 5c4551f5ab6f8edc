"""Seeded fuzz cases over the .npz reader and every run-folder loader (config.json, metrics.jsonl,
weights and training state, checksums.json, classifier cache), shared by tests/test_robustness_fuzz.py
and bench/robustness.py.

Each case damages one input (byte flips, cuts, splices, random JSON edits, hostile names), runs one CLI
command in-process with the working directory, $HOME, $XDG_CACHE_HOME and $MMVAE_DATA inside a
temporary tree, and reports the exit code, whether an exception escaped (a traceback), and whether
anything outside the run folder changed.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmvae.cli import main

OPTS = ["--epochs", "1", "--batch-size", "16", "--set", "hidden=8", "--latent-dim", "2", "--device", "cpu"]
EVAL = ["--k", "2", "--rows", "5", "--classifier-epochs", "1", "--joint-samples", "20", "--quiet"]
KINDS = {"npz": 30, "config.json": 20, "metrics.jsonl": 10, "weights": 15, "checksums.json": 10,
         "classifier cache": 15}
POOL = [None, -1, 0, 1.5, 1e308, -1e308, "abc", "", "../x", "/abs/path", "keys", "é", [], {}, [1, "a"], True,
        2 ** 70, {"a": None}, "a.b", [[[[]]]]]
HOSTILE = ["/abs/pkg", "../up", "a.b", "", "keys", "train", "forward", "é", "a/b", "x" * 70]


@dataclass
class Case:
    index: int
    kind: str
    seed: int
    argv: list[str] = field(default_factory=list)
    what: str = ""


@dataclass
class Outcome:
    case: Case
    code: int | None
    error: str = ""              # a traceback when an exception escaped main()
    changed_outside: list[str] = field(default_factory=list)
    stderr: str = ""

    @property
    def one_line(self) -> bool:
        """Exit 2 came with exactly one error line (notes before it aside)."""
        lines = [x for x in self.stderr.strip().splitlines() if not x.startswith("note: ")]
        return len(lines) == 1 and lines[0].startswith("mmvae: error: ")


def base_arrays(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.random((n, 4)).astype(np.float32), "b": rng.random((n, 3)).astype(np.float32),
            "label": np.arange(n) % 3, "mask_a": np.arange(n) % 7 != 3}


def make_base(root: Path) -> Path:
    """The tree every case runs in: inputs/d.npz, runs/base (trained and evaluated once), home, data, cwd."""
    for d in ("inputs", "runs", "home", "data", "cwd"):
        (root / d).mkdir(parents=True, exist_ok=True)
    np.savez(root / "inputs" / "d.npz", **base_arrays())
    with _isolated(root):
        base = root / "runs" / "base"
        assert main(["train", *OPTS, "--dataset", str(root / "inputs" / "d.npz"), "--out", str(base)]) == 0
        assert main(["evaluate", str(base), "--metrics", "coherence,likelihood", *EVAL]) == 0
    return base


def make_cases(seed: int = 0, kinds: dict[str, int] | None = None) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for kind, count in (kinds or KINDS).items():
        for _ in range(count):
            cases.append(Case(len(cases), kind, int(rng.integers(2 ** 31))))
    return cases


@contextlib.contextmanager
def _isolated(root: Path):
    keys = ("HOME", "XDG_CACHE_HOME", "MMVAE_DATA")
    old_env, old_cwd = {k: os.environ.get(k) for k in keys}, os.getcwd()
    os.environ.update(HOME=str(root / "home"), XDG_CACHE_HOME=str(root / "home" / ".cache"),
                      MMVAE_DATA=str(root / "data"))
    os.chdir(root / "cwd")
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            yield err
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p == skip or skip in p.parents:
            continue
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# ----------------------------------------------------------------------------------- damage
def damage_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    how = int(rng.integers(4))
    if how == 0 and b:                                   # flip a few bytes
        for pos in rng.integers(0, len(b), size=int(rng.integers(1, 65))):
            b[pos] ^= int(rng.integers(1, 256))
    elif how == 1:                                       # cut
        b = b[: int(rng.integers(0, max(len(b), 1)))]
    elif how == 2 and b:                                 # splice random bytes
        start = int(rng.integers(0, len(b)))
        b[start:start + 32] = rng.integers(0, 256, 32, dtype=np.uint8).tobytes()
    else:                                                # replace by random bytes
        b = bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
    return bytes(b)


def mutate_json(obj, rng: np.random.Generator):
    """Delete or replace one random node of a JSON document (or the whole document)."""
    obj = copy.deepcopy(obj)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])

    walk(obj, [])
    path = paths[int(rng.integers(len(paths)))]
    value = copy.deepcopy(POOL[int(rng.integers(len(POOL)))])
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    if rng.random() < 0.25 and isinstance(parent, dict):
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return obj


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _npz_case(case: Case, root: Path, rng: np.random.Generator) -> None:
    path = root / "inputs" / f"case{case.index}.npz"
    arrays = base_arrays()
    how = int(rng.integers(6))
    if how == 0:
        path.write_bytes(damage_bytes((root / "inputs" / "d.npz").read_bytes(), rng))
        case.what = "npz bytes damaged"
    elif how == 1:                                       # a hostile member name
        name = HOSTILE[int(rng.integers(len(HOSTILE)))]
        arrays[name] = arrays.pop("a")
        arrays.pop("mask_a")
        with zipfile.ZipFile(path, "w") as z:
            for k, v in arrays.items():
                z.writestr(f"{k}.npy", _npy(v))
        case.what = f"member named {name!r}"
    elif how == 2:                                       # a random value in one array
        key = ["a", "b", "label", "mask_a"][int(rng.integers(4))]
        a = arrays[key].astype(np.float64)
        a.flat[int(rng.integers(a.size))] = [np.nan, np.inf, 1e30, -5, 2 ** 64][int(rng.integers(5))]
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[key] = a.astype(arrays[key].dtype) if key != "a" else a
        np.savez(path, **arrays)
        case.what = f"odd value in {key}"
    elif how == 3:                                       # a wrong shape or dtype
        key = ["a", "b", "label", "mask_a"][int(rng.integers(4))]
        arrays[key] = [np.zeros((0,)), np.zeros((40, 0)), np.array(["x"] * 40), np.zeros(7),
                       np.zeros((40, 2, 2, 2, 2, 2)), np.array(3.0)][int(rng.integers(6))]
        np.savez(path, **arrays)
        case.what = f"odd shape/dtype of {key}"
    elif how == 4:                                       # split / mask extremes
        arrays["split"] = [np.ones(40, np.int64), np.zeros(40, np.int64), (np.arange(40) % 2),
                           np.full(40, 3)][int(rng.integers(4))]
        arrays["mask_a"] = [np.zeros(40, bool), arrays["split"] == 0, np.ones(40, bool)][int(rng.integers(3))]
        np.savez(path, **arrays)
        case.what = "split / mask extremes"
    else:                                                # not an npz at all
        path.write_bytes([b"a,b\n1,2\n", b"", _npy(arrays["a"]), b"PK\x03\x04junk"][int(rng.integers(4))])
        case.what = "not an npz"
    case.argv = ["train", *OPTS, "--dataset", str(path), "--out", str(root / "runs" / f"case{case.index}")]


def _run_folder_case(case: Case, run: Path, rng: np.random.Generator) -> None:
    ev = run / "evaluation" / "classifiers"
    if case.kind == "config.json":
        if rng.random() < 0.2:
            (run / "config.json").write_bytes(damage_bytes((run / "config.json").read_bytes(), rng))
            case.what = "config.json bytes damaged"
        else:
            saved = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps(mutate_json(saved, rng)))
            case.what = "config.json node changed"
        commands = [["sample", str(run)], ["evaluate", str(run), "--metrics", "likelihood", *EVAL],
                    ["train", "--resume", "--out", str(run)]]
    elif case.kind == "metrics.jsonl":
        path = run / "metrics.jsonl"
        path.write_bytes(damage_bytes(path.read_bytes(), rng) + (b"\n" if rng.random() < 0.5 else b""))
        case.what = "metrics.jsonl damaged"
        commands = [["train", "--resume", "--out", str(run), "--epochs", "2"]]
    elif case.kind == "weights":
        name = ["model.safetensors", "best.safetensors", "training_state.pt"][int(rng.integers(3))]
        (run / name).write_bytes(damage_bytes((run / name).read_bytes(), rng))
        case.what = f"{name} damaged"
        commands = [["train", "--resume", "--out", str(run), "--epochs", "2"], ["sample", str(run)],
                    ["evaluate", str(run), "--metrics", "likelihood", "--which", "best", *EVAL]]
    elif case.kind == "checksums.json":
        path = run / "checksums.json"
        if rng.random() < 0.5:
            path.write_bytes(damage_bytes(path.read_bytes(), rng))
        else:
            path.write_text(json.dumps(mutate_json(json.loads(path.read_text()), rng)))
        case.what = "checksums.json damaged"
        commands = [["train", "--resume", "--out", str(run), "--epochs", "2"], ["sample", str(run)]]
    else:
        name = ["a.json", "b.json", "a.safetensors", "b.safetensors"][int(rng.integers(4))]
        if name.endswith(".json") and rng.random() < 0.5:
            (ev / name).write_text(json.dumps(mutate_json(json.loads((ev / name).read_text()), rng)))
        else:
            (ev / name).write_bytes(damage_bytes((ev / name).read_bytes(), rng))
        case.what = f"classifier cache {name} damaged"
        commands = [["evaluate", str(run), "--metrics", "coherence", *EVAL]]
    case.argv = commands[int(rng.integers(len(commands)))]


def run_case(case: Case, root: Path, base: Path) -> Outcome:
    """Prepare the case's damaged input, run its command, and judge the outcome."""
    rng = np.random.default_rng(case.seed)
    run = root / "runs" / f"case{case.index}"
    if case.kind == "npz":
        _npz_case(case, root, rng)
    else:
        shutil.copytree(base, run)
        _run_folder_case(case, run, rng)
    before = _snapshot(root, run)
    code, error = None, ""
    with _isolated(root) as err:
        try:
            code = main(case.argv)
        except SystemExit as e:      # argparse: bad arguments exit 2 by itself
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the point: nothing but exit codes may come out
            error = traceback.format_exc()
    after = _snapshot(root, run)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    shutil.rmtree(run, ignore_errors=True)               # keep the tree (and the next snapshot) small
    (root / "inputs" / f"case{case.index}.npz").unlink(missing_ok=True)
    return Outcome(case, code, error, changed, err.getvalue())
