"""RUN/report.html: the whole run in one self-contained page (written by ``mmvae evaluate``).

Configuration, training curves plotted from metrics.jsonl (train and validation loss, β and learning
rate against steps), every metric of evaluation/metrics.json beside its chance level, notes, then the
pictures: sample grids (with what to expect of prior samples), cross-generation grids, latent
pictures and relatedness. Pictures are embedded as ``data:`` URIs and the page loads nothing else (no
script, no font, no stylesheet from outside), so the file can be mailed or archived alone.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

CSS = """
body { font-family: sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #444; max-width: 900px; }
img { max-width: 100%; border: 1px solid #eee; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { max-width: 48%; }
.note { color: #8a4b00; } code { background: #f5f5f5; padding: 0 3px; }
"""

SECTIONS = [("classifier_accuracy", "Coherence classifiers (test accuracy)"),
            ("cross_coherence", "Cross coherence"), ("cross_coherence_mean", "Cross coherence (posterior mean)"),
            ("joint_coherence", "Joint coherence"), ("synergy", "Synergy"),
            ("latent_accuracy", "Latent accuracy (linear probe)"), ("log_likelihood", "Log-likelihoods (nats)"),
            ("relatedness", "Relatedness (2-Wasserstein)")]

PRIOR_NOTE = ("The last rows decode z drawn from the prior p(z), with no input. Expect recognisable samples "
              "with the same class in every modality of a column only from a model whose posteriors cover "
              "the prior well; after a short run, or with a small KL weight, most are blurry blends of "
              "classes. The rows above translate the test inputs of the first rows.")


def data_uri(path: Path | bytes, mime: str = "image/png") -> str:
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = " class='num'" if i >= numeric_from else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _data_counts(data: dict) -> str:
    parts = [f"{data[k]} {k.replace('_', ' ')}" for k in ("train_rows", "validation_rows", "test_rows") if k in data]
    patterns = data.get("observed_patterns") or {}
    if len(patterns) > 1:
        parts.append("training rows by observed modalities " + ", ".join(f"{k}: {v}" for k, v in patterns.items()))
    return "; ".join(parts) or "?"


def _figure(path: Path, caption: str = "", alt: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='{data_uri(path)}' alt='{html.escape(alt or path.stem)}'>{cap}</figure>"


def read_metrics_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(epoch records, events) of metrics.jsonl; torn or foreign lines are skipped."""
    epochs, events = [], []
    if not path.exists():
        return epochs, events
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        (events if "event" in rec else epochs).append(rec)
    return epochs, events


def training_curves(epochs: list[dict], events: list[dict]) -> bytes | None:
    """PNG bytes: loss (train, validation), β and learning rate against the global step."""
    rows = [r for r in epochs if isinstance(r.get("step"), (int, float))]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(s, r[key]) for s, r in zip(steps, rows) if isinstance(r.get(key), (int, float))]
        if pts:
            axes[0].plot(*zip(*pts), marker="o", ms=3, label=label)
    axes[0].set_title("loss (negative bound per row)", fontsize=9)
    axes[0].legend(fontsize=8)
    for ax, key, title in ((axes[1], "beta", "β (KL weight at epoch end)"), (axes[2], "lr", "learning rate")):
        pts = [(s, r[key]) for s, r in zip(steps, rows) if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, color="C2")
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        for e in events:
            if isinstance(e.get("step"), (int, float)):
                ax.axvline(e["step"], color="C3", ls=":", lw=1)
    if events:
        fig.text(0.01, 0.01, "dotted red lines: rollbacks / divergence events", fontsize=7, color="C3")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def metric_sections(record: dict, num_classes: int | None, modalities: int) -> list[str]:
    """One table per metric family: name, value, chance (from the record's chance block, else 1/C)."""
    from ..compare import chance_levels, metric_values

    values = metric_values(record)
    chance = chance_levels(record, list(values), num_classes, modalities)
    known = [k for k, _ in SECTIONS]
    out = []
    for head, title in SECTIONS + [(None, "Other metrics")]:
        names = [n for n in values if (n.partition(".")[0] == head if head else n.partition(".")[0] not in known)]
        if not names:
            continue
        rows = [[n.partition(".")[2] or n, values[n], chance.get(n)] for n in names]
        out.append(f"<h3>{html.escape(title)}</h3>" + _table(["metric", "value", "chance"], rows))
    return out


def _picture_groups(record: dict, evaluation: Path) -> dict[str, list[tuple[str, Path]]]:
    groups: dict[str, list[tuple[str, Path]]] = {"cross": [], "latent": [], "relatedness": [], "other": []}
    for name, file in (record.get("pictures") or {}).items():
        path = evaluation / str(file)
        if name == "samples" or not path.is_file():
            continue
        key = ("cross" if name.startswith("cross_") else "latent" if name.startswith("latent") else
               "relatedness" if name.startswith("w2_") else "other")
        groups[key].append((name, path))
    return groups


def write_html_report(run: str | Path, record: dict | None = None, out: str | Path | None = None) -> Path:
    """Write RUN/report.html (or ``out``) from the run folder and its evaluation/metrics.json."""
    run = Path(run)
    evaluation = run / "evaluation"
    if record is None:
        mfile = evaluation / "metrics.json"
        record = json.loads(mfile.read_text()) if mfile.exists() else {}
    cfg_file = run / "config.json"
    saved = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    config = saved.get("config", {})
    num_classes = saved.get("num_classes")
    modalities = [m.get("name") for m in saved.get("modalities", [])]
    body = [f"<h1>Run <code>{html.escape(run.resolve().name)}</code></h1>",
            f"<p>Model <b>{html.escape(str(config.get('model', record.get('model', '?'))))}</b> on "
            f"<b>{html.escape(str(config.get('dataset', record.get('dataset', '?'))))}</b>; modalities "
            f"{html.escape(', '.join(map(str, modalities)) or '?')}; mmvae {html.escape(str(saved.get('mmvae_version', '?')))}."
            f" Data: {html.escape(_data_counts(saved.get('data', {})))}.</p>"]
    # --- configuration
    from ..compare import flatten

    # (the run folder's own path is left out: the page is about the run, wherever it is copied)
    items = [(k, ("all" if k == "modalities" else "model default") if v is None else str(v))
             for k, v in flatten(config).items() if k != "out"]
    per_row = 3
    rows = [sum(([k, v] for k, v in items[i:i + per_row]), []) for i in range(0, len(items), per_row)]
    body.append("<h2>Configuration</h2>" + _table(["key", "value"] * per_row, rows, numeric_from=99))
    # --- training curves
    epochs, events = read_metrics_log(run / "metrics.jsonl")
    body.append("<h2>Training</h2>")
    png = training_curves(epochs, events)
    if png:
        last = epochs[-1]
        body.append(f"<figure><img src='{data_uri(png)}' alt='training curves'><figcaption>{len(epochs)} epochs, "
                    f"{last.get('step', '?')} steps; from metrics.jsonl.</figcaption></figure>")
    else:
        body.append("<p class='note'>No epoch record in metrics.jsonl yet.</p>")
    if events:
        body.append(_table(["event", "epoch", "step", "what", "lr"],
                           [[e.get("event"), e.get("epoch"), e.get("step"), e.get("what"), e.get("lr")] for e in events],
                           numeric_from=99))
    # --- metrics
    body.append("<h2>Metrics</h2>")
    if record:
        counts = f"{record.get('train_rows', '?')} training rows, {record.get('test_rows', '?')} test rows"
        chance_src = "the evaluation's chance block" if record.get("chance") else (
            f"1/C = 1/{num_classes} per class decision" if num_classes else "not known (no classes)")
        body.append(f"<p>{html.escape(counts)}. Chance levels: {html.escape(chance_src)}; joint coherence "
                    f"(all {len(modalities)} classifiers agree by chance): (1/C)^(M−1); relatedness auc: 0.5.</p>")
        body += metric_sections(record, num_classes, len(modalities) or 2)
        for key, title in (("refused", "Refused"), ("notes", "Notes")):
            if record.get(key):
                body.append(f"<h3>{title}</h3><ul>" + "".join(
                    f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in record[key].items())
                    + "</ul>")
    else:
        body.append("<p class='note'>Not evaluated yet: run <code>mmvae evaluate RUN</code>.</p>")
    # --- pictures
    body.append("<h2>Samples</h2>")
    # the grid drawn at evaluation (from the evaluated weights) where there is one, else the training-time one
    for path, what in ((evaluation / "samples.png", "at evaluation"), (run / "samples.png", "at the end of training")):
        if path.is_file():
            body.append(_figure(path, f"Sample grid {what}: test inputs, every translation (recon: source = "
                                      f"target), prior samples. {PRIOR_NOTE}", "samples"))
            break
    groups = _picture_groups(record, evaluation)
    captions = {"cross": ("Cross-generation", "Rows: source inputs, their true partners, the translation of the "
                          "posterior mean, then translations of posterior samples."),
                "latent": ("Latent space", "t-SNE of test latent means (colour: label, marker: modality)."),
                "relatedness": ("Relatedness", "2-Wasserstein distances between unimodal posteriors: paired vs "
                                "unpaired rows, the class × class matrix and its dendrogram."),
                "other": ("Other pictures", "")}
    for key, (title, caption) in captions.items():
        if groups[key]:
            body.append(f"<h2>{title}</h2><p>{html.escape(caption)}</p><div class='grid'>"
                        + "".join(_figure(p, name.replace("_", " "), name) for name, p in groups[key]) + "</div>")
    if record.get("timings"):
        body.append("<h2>Evaluation timings (s)</h2>" + _table(["step", "seconds"], list(map(list, record["timings"].items()))))
    out = Path(out) if out else run / "report.html"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page(f"mmvae report: {run.resolve().name}", "\n".join(body)), encoding="utf-8")
    tmp.replace(out)
    return out
