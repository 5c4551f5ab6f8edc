"""`mmvae compare RUN... [--out DIR]` (issue 14): the configs that differ and every metric, mean ± sd
over runs that differ only in seed, a bar chart per metric, Markdown and HTML."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from mmvae.cli import main
from mmvae.compare import compare


def _fake_run(root: Path, name: str, seed: int, beta: float, cross: float, ll: float | None = -10.0) -> Path:
    """A run folder as `mmvae train` + `mmvae evaluate` leave it (only the files compare reads)."""
    run = root / name
    (run / "evaluation").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "config": {"model": "mvae", "dataset": "toy", "seed": seed, "beta": beta, "out": str(run),
                   "data": {"n": 400}, "likelihood": {}}, "num_classes": 4,
        "modalities": [{"name": "a"}, {"name": "b"}]}))
    record = {"run": str(run), "test_rows": 40, "cross_coherence": {"a->b": cross, "b->a": cross / 2},
              "joint_coherence": 0.3, "log_likelihood": {"k": 10, "rows": 40, "marginal": {"a": ll}},
              "settings": {"k": 10}, "timings": {"coherence": 1.0}, "notes": {"x": "y"}}
    (run / "evaluation" / "metrics.json").write_text(json.dumps(record))
    return run


def test_seeds_become_mean_and_sd_and_differing_configs_become_columns(tmp_path):
    runs = [_fake_run(tmp_path, f"b1-seed{s}", s, 1.0, c) for s, c in ((0, 0.5), (1, 0.7), (2, 0.9))]
    runs.append(_fake_run(tmp_path, "b2-seed0", 0, 2.0, 0.4))
    text = compare(runs)
    lines = text.splitlines()
    assert lines[0] == "|  | b1 (3 seeds) | b2-seed0 | chance |"
    assert "| config: beta | 1.0 | 2.0 |  |" in lines and "| config: seed | 0, 1, 2 | 0 |  |" in lines
    assert not any("config: out" in ln or "config: model" in ln for ln in lines)   # equal or irrelevant keys
    sd = statistics.stdev([0.5, 0.7, 0.9])
    assert f"| cross_coherence.a->b | 0.700 ± {sd:.3f} | 0.400 | 0.25 |" in lines
    assert "| joint_coherence | 0.300 ± 0.000 | 0.300 | 0.25 |" in lines             # (1/C)^(M-1), M = 2
    assert "| log_likelihood.marginal.a | -10.00 ± 0.00 | -10.00 | – |" in lines
    assert not any(re.match(r"\| (settings|timings|notes|log_likelihood\.k|log_likelihood\.rows)", ln) for ln in lines)


def test_compare_command_writes_markdown_html_and_a_bar_chart_per_metric(tmp_path, capsys):
    a = _fake_run(tmp_path, "a", 0, 1.0, 0.5)
    b = _fake_run(tmp_path, "b", 0, 3.0, 0.8)
    c = tmp_path / "not-evaluated"
    (c).mkdir()
    (c / "config.json").write_text(json.dumps({"config": {"model": "mmvae", "seed": 0}}))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), str(c), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| cross_coherence.b->a | 0.250 | 0.400 | – | 0.25 |" in printed
    assert "not evaluated" in printed and str(c) in printed
    md = (out / "compare.md").read_text()
    bars = sorted(p.name for p in (out / "bars").glob("*.png"))
    assert bars == sorted(["cross_coherence.a-_b.png", "cross_coherence.b-_a.png", "joint_coherence.png",
                           "log_likelihood.marginal.a.png"])
    assert all(f"(bars/{name})" in md for name in bars)
    html = (out / "compare.html").read_text()
    assert html.count("<img src='data:image/png;base64,") == 4 and "<table>" in html and "b-&gt;a" in html


def test_compare_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    a = _fake_run(tmp_path, "a", 0, 1.0, 0.5)
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("values,text", [([0.5], "0.500"), ([1.0, 2.0], "1.500 ± 0.707"), ([100.0, 120.0], "110.00 ± 14.14")])
def test_number_format(values, text):
    from mmvae.compare import fmt

    assert fmt(values) == text
