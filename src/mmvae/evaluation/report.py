"""report.md and the short console table, both read from the metrics record (metrics.json)."""
from __future__ import annotations

from pathlib import Path


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_rows(record: dict) -> list[tuple[str, str]]:
    """(metric, value) lines for the console: the headline number of each metric."""
    rows = []
    for m, v in (record.get("classifier_accuracy") or {}).items():
        rows.append((f"classifier accuracy {m}", _num(v)))
    means = record.get("cross_coherence_mean") or {}
    for key, v in (record.get("cross_coherence") or {}).items():
        rows.append((f"coherence {key}", _num(v) + (f"  (from the mean {_num(means[key])})" if key in means else "")))
    if record.get("joint_coherence") is not None:
        rows.append(("joint coherence", _num(record["joint_coherence"])))
    syn = record.get("synergy")
    if syn and syn.get("gain") is not None:
        rows.append(("synergy (coherence gain 1 -> M-1 given)", _num(syn["gain"])))
    for key, v in (record.get("latent_accuracy") or {}).items():
        rows.append((f"latent accuracy {key}", _num(v)))
    ll = record.get("log_likelihood")
    if ll:
        for m, v in ll["marginal"].items():
            rows.append((f"log p({m})", _num(v, 2)))
        if "joint" in ll:
            rows.append(("log p(all)", _num(ll["joint"], 2)))
        for key, v in ll.get("conditional", {}).items():
            rows.append((f"log p({key})", _num(v, 2)))
    rel = record.get("relatedness")
    if rel:
        for pair, s in rel["pairs"].items():
            rows.append((f"W2 {pair} paired / unpaired", f"{_num(s['paired_mean'], 2)} / {_num(s['unpaired_mean'], 2)}"))
    for key in record.get("refused", {}):
        rows.append((key, "refused (no labels)"))
    if "classifiers" in record.get("notes", {}):
        rows.append(("warning", record["notes"]["classifiers"]))
    return rows


def table(record: dict) -> str:
    rows = summary_rows(record)
    width = max((len(a) for a, _ in rows), default=10)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def _md_table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return lines + [""]


def write_report(record: dict, path: Path) -> Path:
    """A readable Markdown report: one section per metric with its definition, then the pictures."""
    pics = record.get("pictures", {})
    lines = [f"# Evaluation of `{record.get('run', '')}`", "",
             f"Model `{record.get('model', '?')}` on `{record.get('dataset', '?')}`; "
             f"{record.get('train_rows', '?')} training rows, {record.get('test_rows', '?')} test rows.", ""]
    if record.get("refused"):
        lines += ["## Refused", ""] + [f"* **{k}**: {v}" for k, v in record["refused"].items()] + [""]
    if record.get("classifier_accuracy"):
        lines += ["## Coherence", "",
                  "Classifiers (one per modality, trained on the training split) judge generations. "
                  "Their own test accuracy bounds what coherence can show:", ""]
        lines += _md_table(("modality", "classifier test accuracy"), list(record["classifier_accuracy"].items()))
    protocol = record.get("protocol") or {}
    if protocol.get("classifiers"):
        lines += [f"Classifier training: {protocol['classifiers']}.", ""]
    if record.get("cross_coherence"):
        means = record.get("cross_coherence_mean") or {}
        lines += ["Cross coherence S->t: fraction of test rows whose generation of t from S is classified as the "
                  "row's label. **coherence**: " + protocol.get("cross_coherence", "one posterior sample per row")
                  + "; **from the mean**: " + protocol.get("cross_coherence_mean", "the posterior mean decoded")
                  + ".", ""]
        lines += _md_table(("given -> generated", "coherence", "from the mean"),
                           [(k, v, means.get(k)) for k, v in record["cross_coherence"].items()])
    if record.get("joint_coherence") is not None:
        n = record.get("settings", {}).get("joint_samples", "?")
        lines += [f"Joint coherence (all classifiers agree on modalities decoded from one z ~ p(z), {n} samples): "
                  f"**{_num(record['joint_coherence'])}**", ""]
    syn = record.get("synergy")
    if syn:
        lines += ["Synergy: mean cross coherence by number of given modalities.", ""]
        lines += _md_table(("given", "mean coherence"), list(syn["coherence_by_given"].items()))
    if record.get("latent_accuracy"):
        lines += ["## Latent accuracy", "",
                  "Logistic regression on latent means (standardised), fitted on training rows, scored on test.", ""]
        lines += _md_table(("representation", "test accuracy"), list(record["latent_accuracy"].items()))
    ll = record.get("log_likelihood")
    if ll:
        lines += ["## Log-likelihoods", "",
                  f"Importance-sampled with K = {ll['k']} on {ll['rows']} test rows, in nats per sample. "
                  "**Unweighted**: every modality has λ = 1, so these are true log-densities, unlike training "
                  "objectives with likelihood rescaling. Conditionals are log p(a, b) − log p(b).", ""]
        rows = [(f"log p({m})", v) for m, v in ll["marginal"].items()]
        if "joint" in ll:
            rows.append(("log p(all)", ll["joint"]))
        rows += [(f"log p({k})", v) for k, v in ll.get("pairs", {}).items()]
        rows += [(f"log p({k})", v) for k, v in ll.get("conditional", {}).items()]
        rows += [(f"log p({k})", v) for k, v in ll.get("conditional_given_rest", {}).items()]
        lines += _md_table(("quantity", "nats"), rows)
    rel = record.get("relatedness")
    if rel:
        lines += ["## Relatedness", "",
                  "Closed-form 2-Wasserstein distances between the unimodal posteriors of paired rows (same "
                  "row) and unpaired rows (MEME §4.2). auc = P(paired distance < unpaired distance of the row).", ""]
        rows = [(p, s["paired_mean"], s["unpaired_mean"], s.get("same_class_unpaired_mean"),
                 s.get("other_class_mean"), s["auc"]) for p, s in rel["pairs"].items()]
        lines += _md_table(("pair", "paired", "unpaired", "unpaired same class", "other class", "auc"), rows)
        if rel.get("note"):
            lines += [f"Note: {rel['note']}.", ""]
    if record.get("notes"):
        lines += ["## Notes", ""] + [f"* {k}: {v}" for k, v in record["notes"].items()] + [""]
    if pics:
        lines += ["## Pictures", ""]
        for name, file in pics.items():
            lines += [f"### {name}", "", f"![{name}]({file})", ""]
    if record.get("timings"):
        lines += ["## Timings (seconds)", ""] + _md_table(("step", "s"), list(record["timings"].items()))
    Path(path).write_text("\n".join(lines))
    return Path(path)
