"""A new user's first day (issue 14): the help states the real defaults, --version, --threads,
`mmvae sample` keeps the training-time picture, a run cut by --max-steps still draws samples.png (and
on an epoch boundary writes that epoch's record), --resume says where it resumed, partially observed
.npz test rows are kept and evaluated per metric, `mmvae datasets` lines up, docs name no machine path."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import mmvae
from mmvae.cli import build_parser, main
from mmvae.config import Config
from mmvae.threads import default_threads

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "toy", "--set", "data.n=400", "--batch-size", "32", "--latent-dim", "4", "--set", "hidden=16"]


def test_train_help_states_configs_defaults_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = Config()
    for flag, value in (("--model", d.model), ("--dataset", d.dataset), ("--epochs", d.epochs),
                        ("--batch-size", d.batch_size), ("--latent-dim", d.latent_dim), ("--device", d.device)):
        assert re.search(rf"{flag} \S+ .*?default {re.escape(str(value))}", text), flag
    assert f"hidden={d.hidden}" in text and f"beta={d.beta}" in text and "--threads" in text
    for other in ("mvae", "mopoe", "mmvae"):           # no model named as default but the real one
        if other != d.model:
            assert f"default {other}" not in text
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"mmvae {mmvae.__version__} (torch ")


def test_threads_option_and_default(tmp_path, capsys):
    assert default_threads(cores=2, environ={}) == 1 and default_threads(cores=8, environ={}) == 4
    assert default_threads(cores=64, environ={}) == 4 and default_threads(cores=1, environ={}) == 1
    assert default_threads(cores=2, environ={"OMP_NUM_THREADS": "3"}) == 3
    for cmd in ("train", "evaluate", "sample"):
        assert build_parser().parse_args([cmd, *(["x"] if cmd != "train" else []), "--threads", "2"]).threads == 2
    before = torch.get_num_threads()
    try:
        assert main(["train", *FAST, "--epochs", "1", "--threads", "2", "--out", str(tmp_path / "r")]) == 0
        assert torch.get_num_threads() == 2
        assert main(["train", *FAST, "--threads", "0", "--out", str(tmp_path / "r0")]) == 2
        assert "--threads must be at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def _records(run: Path) -> list[dict]:
    """The epoch records of metrics.jsonl (events such as "resume" are skipped)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "event" not in r]


def test_max_steps_on_an_epoch_boundary_and_resume_message(tmp_path, capsys):
    run = tmp_path / "run"
    # toy n=400: 288 training rows, batch 32 -> 9 steps an epoch; stop exactly at the end of epoch 1
    assert main(["train", *FAST, "--epochs", "3", "--max-steps", "9", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "stopped at step 9 (end of epoch 1)" in err
    assert [r["epoch"] for r in _records(run)] == [1] and "val_loss" in _records(run)[0]
    assert (run / "samples.png").stat().st_size > 0
    assert main(["train", "--resume", "--out", str(run), "--max-steps", "14"]) == 0
    said = capsys.readouterr()
    assert f"resuming {run} from epoch 2/3, step 0/9 of that epoch (global step 9)" in said.out
    assert "stopped at step 14 (epoch 2, step 5)" in said.err
    assert main(["train", "--resume", "--out", str(run)]) == 0
    assert "from epoch 2/3, step 5/9 of that epoch (global step 14)" in capsys.readouterr().out
    assert [r["epoch"] for r in _records(run)] == [1, 2, 3]


def test_sample_writes_a_new_file_and_keeps_the_training_picture(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(run)]) == 0
    before = (run / "samples.png").read_bytes()
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "4", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "samples-seed3.png")
    assert (run / "samples-seed3.png").stat().st_size > 0 and (run / "samples.png").read_bytes() == before


def test_datasets_table_columns_line_up(capsys):
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [ln.split()[0] for ln in lines[1:]]
    assert "fashion-label" in names and "mnist" in names
    starts = {re.search(r"\s(ready|missing|status)\s", ln).start() for ln in lines}
    assert len(starts) == 1, lines


def _partial_npz(path: Path) -> tuple[Path, np.ndarray]:
    """Two modalities sharing a class; a third of the test rows miss modality b, a sixth miss a."""
    rng = np.random.default_rng(0)
    n, n_test = 360, 60
    y = rng.integers(0, 3, n)
    centres = rng.normal(0, 3, (3, 8))
    a = (centres[y] + rng.normal(0, 0.5, (n, 8))).astype(np.float32)
    b = (centres[y][:, ::-1] + rng.normal(0, 0.5, (n, 8))).astype(np.float32)
    split = (np.arange(n) >= n - n_test).astype(np.int64)
    mask_b = np.ones(n, bool)
    mask_b[n - n_test::3] = False
    mask_a = np.ones(n, bool)
    mask_a[n - n_test + 1::6] = False
    np.savez(path, a=a, b=b, label=y, split=split, mask_a=mask_a, mask_b=mask_b)
    return path, np.stack([mask_a[split == 1], mask_b[split == 1]], 1)


def test_partially_observed_test_rows_are_kept_and_evaluated_per_metric(tmp_path):
    from mmvae.data.registry import load_dataset

    path, masks = _partial_npz(tmp_path / "partial.npz")
    splits = load_dataset(str(path))
    assert len(splits.test) == 60                                   # none dropped (it was 30 before)
    assert torch.equal(splits.test.mask["b"], torch.from_numpy(masks[:, 1]))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(path), "--model", "mvae", "--epochs", "2", "--latent-dim", "4",
                 "--set", "hidden=16", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--k", "3", "--classifier-epochs", "1", "--joint-samples", "100"]) == 0
    rec = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert rec["test_rows"] == 60
    assert rec["log_likelihood"]["rows"] == int(masks[:, 0].sum())          # log p(a): rows observing a
    assert set(rec["cross_coherence"]) == {"a->b", "b->a"}
    for key in ("cross_coherence", "latent_accuracy", "classifier_accuracy"):
        assert all(0 <= v <= 1 for v in rec[key].values()), key
    assert rec["relatedness"]["pairs"]["a~b"]["rows"] == int(masks.all(1).sum())


def test_cross_coherence_counts_the_rows_observing_the_sources():
    from mmvae.data.dataset import ModalitySpec, MultimodalDataset
    from mmvae.evaluation.coherence import cross_coherence

    specs = {m: ModalitySpec(m, "vector", (1,), "normal") for m in ("a", "b")}
    data = {"a": torch.arange(6.0)[:, None], "b": torch.arange(6.0)[:, None]}
    mask = {"a": torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool), "b": torch.ones(6, dtype=torch.bool)}
    test = MultimodalDataset(specs, data, mask, torch.tensor([0, 1, 0, 1, 0, 1]))

    class Copy(torch.nn.Module):   # translate copies the source; the classifier reads x mod 2
        def translate(self, x, targets, sample=False):
            return {t: next(iter(x.values())) for t in targets}

    parity = {m: (lambda x: x[:, 0].long() % 2) for m in ("a", "b")}
    cross, _ = cross_coherence(Copy(), test, parity, "cpu")
    assert cross == {"a->b": 1.0, "b->a": 1.0}            # a->b over the 4 rows observing a


def test_docs_and_benches_name_no_machine_path_and_readme_lists_offline_datasets():
    from mmvae.data import builtin  # noqa: F401
    from mmvae.data.registry import DATASETS

    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "bench").rglob("*.py"))]
    machine = re.compile(r"(?<![\w.])(/work/|/tmp/|/root/|/home/\w|/Users/\w|[A-Z]:\\\\Users)")
    hits = [f"{f.relative_to(ROOT)}:{i + 1}" for f in files for i, ln in enumerate(f.read_text().splitlines())
            if machine.search(ln)]
    assert not hits, hits
    readme = (ROOT / "README.md").read_text()
    offline = readme.split("Offline, always:")[1].split("With the real files")[0]
    for name, entry in DATASETS.items():
        if entry.available()[1].startswith("offline"):
            assert f"`{name}`" in offline, name


def test_every_mmvae_command_in_the_readme_and_docs_parses():
    """The shell examples use options that exist (they run as written; this catches a renamed flag)."""
    import shlex

    parser = build_parser()
    commands = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", f.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;", line.split("#")[0]):
                    words = shlex.split(part)
                    if words[:1] == ["mmvae"]:
                        commands.append((f.name, words[1:]))
                    elif "-m" in words and words[words.index("-m") + 1:][:1] == ["mmvae"]:   # torchrun ... -m mmvae
                        commands.append((f.name, words[words.index("-m") + 2:]))
    assert len(commands) >= 5
    for name, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            assert e.code == 0, (name, argv)
