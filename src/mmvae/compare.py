"""`mmvae compare RUN... [--out DIR]`: one table of several runs, the one a researcher pastes into a paper.

Columns are the runs; the first rows are the configuration keys whose values differ between them, the
next rows every metric of their ``evaluation/metrics.json`` (``mmvae evaluate``) with its chance level.
Runs whose configurations differ only in ``seed`` form one column of mean ± standard deviation (ddof 1)
over the seeds. The table is printed as Markdown; with ``--out DIR`` it is also written to
DIR/compare.md and DIR/compare.html, with one bar chart per metric (DIR/bars/*.png, embedded in the
HTML; error bars: the standard deviation over seeds; dashed line: chance).
"""
from __future__ import annotations

import html
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

SKIP_RECORD = {"run", "model", "dataset", "test_rows", "train_rows", "settings", "timings", "notes", "refused",
               "pictures", "chance", "format_version"}
SKIP_LEAF = {"k", "rows", "weighted", "class_matrix", "paired_median", "unpaired_median", "posterior", "note"}
SKIP_CONFIG = {"out"}


@dataclass
class RunSummary:
    path: Path
    config: dict
    metrics: dict = field(default_factory=dict)      # flat {name: value}
    chance: dict = field(default_factory=dict)       # flat {name: chance level}
    evaluated: bool = False


def flatten(d: dict, prefix: str = "", skip: set = frozenset()) -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; only numbers (not bools) and strings/None at the leaves kept."""
    out = {}
    for k, v in d.items():
        if k in skip:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + ".", skip))
        elif isinstance(v, list):
            out[key] = "[" + ", ".join(str(x) for x in v) + "]"
        else:
            out[key] = v
    return out


def metric_values(record: dict) -> dict[str, float]:
    """The numeric leaves of a metrics record, without settings, timings, notes and counts."""
    flat = flatten({k: v for k, v in record.items() if k not in SKIP_RECORD}, skip=SKIP_LEAF)
    return {k: float(v) for k, v in flat.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def chance_levels(record: dict, names: list[str], num_classes: int | None, modalities: int) -> dict[str, float]:
    """Chance for each metric name: the record's ``chance`` block where it has one (a number per metric
    or per key), else 1/C for accuracies and coherences, (1/C)^(M-1) for joint coherence, 0.5 for the
    relatedness auc; none for likelihoods and distances."""
    given = record.get("chance") or {}
    out = {}
    for name in names:
        head, _, rest = name.partition(".")
        value = given.get(name, given.get(head))
        if isinstance(value, dict):
            value = value.get(rest, value.get("value"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
            continue
        if not num_classes:
            if name.endswith(".auc"):
                out[name] = 0.5
            continue
        if head == "joint_coherence":
            out[name] = (1.0 / num_classes) ** max(modalities - 1, 1)
        elif head in ("cross_coherence", "cross_coherence_mean", "latent_accuracy", "classifier_accuracy") or \
                head.startswith("synergy") and "coherence_by_given" in name:
            out[name] = 1.0 / num_classes
        elif name.endswith(".auc"):
            out[name] = 0.5
    return out


def read_run(path: str | Path) -> RunSummary:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"'{path}' is not a run folder (no config.json): give folders written by `mmvae train`")
    try:
        saved = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise UserError(f"cannot read {cfg_file} ({e}): is the run folder damaged?") from None
    config = flatten({k: v for k, v in saved.get("config", {}).items() if k not in SKIP_CONFIG})
    summary = RunSummary(path, config)
    mfile = path / "evaluation" / "metrics.json"
    if mfile.is_file():
        try:
            record = json.loads(mfile.read_text())
        except (json.JSONDecodeError, OSError) as e:
            raise UserError(f"cannot read {mfile} ({e}): evaluate the run again with `mmvae evaluate {path}`") from None
        summary.metrics = metric_values(record)
        summary.chance = chance_levels(record, list(summary.metrics), saved.get("num_classes"),
                                       len(saved.get("modalities", [])) or 2)
        summary.evaluated = True
    return summary


@dataclass
class Column:
    label: str
    runs: list[RunSummary]

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if metric in r.metrics]


def differing_keys(runs: list[RunSummary]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    return [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs}) > 1]


def columns(runs: list[RunSummary]) -> tuple[list[Column], list[str]]:
    """Runs grouped by their configuration without the seed; (columns, differing config keys)."""
    differ = differing_keys(runs)
    shown = [k for k in differ if k != "seed"]
    groups: dict[str, list[RunSummary]] = {}
    for r in runs:
        key = json.dumps({k: r.config.get(k) for k in shown}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    cols = []
    for members in groups.values():
        names = [m.path.name or str(m.path) for m in members]
        label = names[0] if len(members) == 1 else f"{_common_prefix(names)} ({len(members)} seeds)"
        cols.append(Column(label, members))
    return cols, differ


def _common_prefix(names: list[str]) -> str:
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    prefix = re.sub(r"[-_.]*(seed|s)?[-_.]*$", "", prefix)
    return prefix or names[0]


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    digits = 2 if max(abs(v) for v in values) >= 10 else 3
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def build_table(runs: list[RunSummary]) -> tuple[list[str], list[list[str]], list[Column], list[str]]:
    """(header, rows, columns, metric names): config rows first, then metric rows with chance."""
    cols, differ = columns(runs)
    header = ["", *[c.label for c in cols], "chance"]
    rows = []
    for k in differ:
        cells = []
        for c in cols:
            vals = sorted({str(r.config.get(k, "–")) for r in c.runs}, key=lambda x: (len(x), x))
            cells.append(", ".join(vals))
        rows.append([f"config: {k}", *cells, ""])
    if len(runs) > 1 and any(len(c.runs) > 1 for c in cols):
        rows.append(["seeds", *[str(len(c.runs)) for c in cols], ""])
    metrics = []
    for r in runs:
        metrics += [m for m in r.metrics if m not in metrics]
    for m in metrics:
        chance = next((r.chance[m] for r in runs if m in r.chance), None)
        rows.append([m, *[fmt(c.values(m)) for c in cols], "–" if chance is None else f"{chance:.3g}"])
    return header, rows, cols, metrics


def markdown(header: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def bar_chart(metric: str, cols: list[Column], chance: float | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .evaluation.pictures import _save

    means = [statistics.fmean(c.values(metric)) if c.values(metric) else float("nan") for c in cols]
    sds = [statistics.stdev(c.values(metric)) if len(c.values(metric)) > 1 else 0.0 for c in cols]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.9 * len(cols) + 1.5), 2.6))
    ax.bar(range(len(cols)), means, yerr=sds, capsize=3, color="#4C72B0")
    if chance is not None:
        ax.axhline(chance, ls="--", color="0.4", lw=1, label=f"chance {chance:.3g}")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([c.label for c in cols], rotation=20, ha="right", fontsize=7)
    ax.set_title(metric, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def compare(runs: list[str | Path], out: str | Path | None = None) -> str:
    """The Markdown table of ``runs``; with ``out``, also compare.md, compare.html and the bar charts."""
    from .evaluation.html_report import data_uri, page

    seen, summaries = set(), []
    for r in runs:
        key = str(Path(r).resolve())
        if key not in seen:
            seen.add(key)
            summaries.append(read_run(r))
    header, rows, cols, metrics = build_table(summaries)
    missing = [str(s.path) for s in summaries if not s.evaluated]
    note = (f"not evaluated (no evaluation/metrics.json; run `mmvae evaluate RUN`): {', '.join(missing)}"
            if missing else "")
    text = markdown(header, rows) + (f"\n\n{note}" if note else "")
    if out is None:
        return text
    out = Path(out)
    try:
        (out / "bars").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out} ({e.strerror}): choose a writable --out") from None
    charts = []
    for m in metrics:
        chance = next((s.chance[m] for s in summaries if m in s.chance), None)
        png = bar_chart(m, cols, chance, out / "bars" / (re.sub(r"[^A-Za-z0-9_.+-]", "_", m) + ".png"))
        charts.append((m, png))
    md = text + "\n\n" + "\n".join(f"![{m}]({p.relative_to(out)})" for m, p in charts) + "\n"
    (out / "compare.md").write_text(md)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    body = [f"<h1>Comparison of {len(summaries)} runs</h1>",
            "<p>Columns: runs (runs that differ only in seed: mean ± sd over the seeds). Rows: the configuration "
            "keys that differ, then every metric of <code>evaluation/metrics.json</code> with its chance level.</p>",
            table]
    if note:
        body.append(f"<p class='note'>{html.escape(note)}</p>")
    body.append("<h2>Bar charts</h2><div class='grid'>")
    body += [f"<figure><img src='{data_uri(p)}' alt='{html.escape(m)}'></figure>" for m, p in charts]
    body.append("</div>")
    (out / "compare.html").write_text(page("mmvae compare", "\n".join(body)))
    return text


def _compare_command(args) -> int:
    print(compare(args.runs, args.out))
    if args.out:
        print(f"written: {Path(args.out) / 'compare.md'}, {Path(args.out) / 'compare.html'}")
    return 0


def add_command(subparsers) -> None:
    c = subparsers.add_parser("compare", help="one table of several runs' configs and metrics (mean ± sd over seeds)")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders (evaluated with `mmvae evaluate`)")
    c.add_argument("--out", metavar="DIR", help="also write DIR/compare.md, DIR/compare.html and bar charts")
    c.set_defaults(func=_compare_command)
