"""report.md and the short console table, both read from the metrics record (metrics.json).

Every coherence, accuracy and categorical log-likelihood is printed beside its chance level (the
``chance`` block of metrics.json, rules in ``evaluation/chance.py``), with a visible flag when the figure
is at or below chance (report: **≤ chance**; console: ``<= CHANCE``) or within two standard errors above
it (report: ≈ chance; console: ``~ chance``).
"""
from __future__ import annotations

from pathlib import Path

from .chance import flag

FLAGS_MD = {"below": "**≤ chance**", "near": "≈ chance"}
FLAGS_TEXT = {"below": "<= CHANCE", "near": "~ chance"}


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _chance(record: dict, key: str):
    entry = (record.get("chance") or {}).get(key)
    return entry.get("value") if isinstance(entry, dict) else None


def _uniform(record: dict, modalities) -> float | None:
    """The uniform log-likelihood of a set of modalities (a sum), None unless every one is categorical."""
    table = (record.get("chance") or {}).get("log_likelihood") or {}
    values = [table.get(m, {}).get("value") for m in modalities]
    return sum(values) if values and all(v is not None for v in values) else None


def _marked(v, chance, n=None, accuracy=True, fmt=_num, flags=FLAGS_MD) -> str:
    """The figure with its flag appended when it is at, below or (accuracy) near chance."""
    f = flag(v, chance, n, accuracy)
    return fmt(v) + (f" {flags[f]}" if f else "")


def _text_row(name: str, v, chance, n=None, accuracy=True, digits: int = 3, extra: str = "") -> tuple[str, str]:
    value = _marked(v, chance, n, accuracy, lambda x: _num(x, digits), FLAGS_TEXT)
    if chance is not None:
        value += f"  (chance {_num(chance, digits)})"
    return name, value + extra


def _ll_targets(key: str, modalities: list[str]) -> list[str]:
    """"a|b" -> [a]; "a+b" -> [a, b]; "all" -> every modality."""
    head = key.split("|")[0]
    return modalities if head == "all" else head.split("+")


def summary_rows(record: dict) -> list[tuple[str, str]]:
    """(metric, value) lines for the console: the headline number of each metric beside its chance level."""
    rows = []
    acc = _chance(record, "accuracy")
    n = record.get("test_rows")
    for m, v in (record.get("classifier_accuracy") or {}).items():
        rows.append(_text_row(f"classifier accuracy {m}", v, acc, n))
    means = record.get("cross_coherence_mean") or {}
    for key, v in (record.get("cross_coherence") or {}).items():
        extra = f"  from the mean {_marked(means[key], acc, n, flags=FLAGS_TEXT)}" if key in means else ""
        rows.append(_text_row(f"coherence {key}", v, acc, n, extra=extra))
    if record.get("joint_coherence") is not None:
        rows.append(_text_row("joint coherence", record["joint_coherence"], _chance(record, "joint_coherence"),
                              (record.get("settings") or {}).get("joint_samples")))
    syn = record.get("synergy")
    if syn and syn.get("gain") is not None:
        rows.append(("synergy (coherence gain 1 -> M-1 given)", _num(syn["gain"])))
    for key, v in (record.get("latent_accuracy") or {}).items():
        rows.append(_text_row(f"latent accuracy {key}", v, acc, n))
    ll = record.get("log_likelihood")
    if ll:
        names = list(ll["marginal"])
        quantities = [(m, v) for m, v in ll["marginal"].items()]
        if "joint" in ll:
            quantities.append(("all", ll["joint"]))
        quantities += list(ll.get("conditional", {}).items())
        for key, v in quantities:
            rows.append(_text_row(f"log p({key})", v, _uniform(record, _ll_targets(key, names)), accuracy=False,
                                  digits=2))
    cca = record.get("cca")
    if cca:
        for key in ("real", "image_to_text", "text_to_image", "joint"):
            if cca.get(key) is not None:
                rows.append(_text_row(f"CCA correlation {key.replace('_', ' ')}", cca[key], _chance(record, "cca"),
                                      accuracy=False))
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


def _chance_section(record: dict) -> list[str]:
    chance = record.get("chance") or {}
    if not chance:
        return []
    lines = ["## Chance levels", "",
             "Every figure below stands beside what a model that learnt nothing would score; **≤ chance** marks a "
             "figure at or below it, ≈ chance an accuracy within two binomial standard errors above it.", ""]
    if "accuracy" in chance:
        lines.append(f"* classifier accuracy, cross coherence, latent accuracy: {_num(chance['accuracy']['value'])}, "
                     f"{chance['accuracy']['rule']}")
    if "joint_coherence" in chance:
        lines.append(f"* joint coherence: {_num(chance['joint_coherence']['value'])}, {chance['joint_coherence']['rule']}")
    for m, u in (chance.get("log_likelihood") or {}).items():
        lines.append(f"* log p({m}) and log p({m} | ·): {_num(u['value'], 2)} nats, {u['rule']}")
    if "cca" in chance:
        lines.append(f"* CCA correlation: {_num(chance['cca']['value'])}, {chance['cca']['rule']}")
    return lines + [""]


def write_report(record: dict, path: Path) -> Path:
    """A readable Markdown report: one section per metric with its definition, then the pictures."""
    pics = record.get("pictures", {})
    acc, n = _chance(record, "accuracy"), record.get("test_rows")
    lines = [f"# Evaluation of `{record.get('run', '')}`", "",
             f"Model `{record.get('model', '?')}` on `{record.get('dataset', '?')}`; "
             f"{record.get('train_rows', '?')} training rows, {record.get('test_rows', '?')} test rows.", ""]
    if record.get("refused"):
        lines += ["## Refused", ""] + [f"* **{k}**: {v}" for k, v in record["refused"].items()] + [""]
    lines += _chance_section(record)
    if record.get("classifier_accuracy"):
        lines += ["## Coherence", "",
                  "Classifiers (one per modality, trained on the training split) judge generations. "
                  "Their own test accuracy bounds what coherence can show:", ""]
        lines += _md_table(("modality", "classifier test accuracy", "chance"),
                           [(m, _marked(v, acc, n), acc) for m, v in record["classifier_accuracy"].items()])
    protocol = record.get("protocol") or {}
    if protocol.get("classifiers"):
        lines += [f"Classifier training: {protocol['classifiers']}.", ""]
    if record.get("cross_coherence"):
        means = record.get("cross_coherence_mean") or {}
        lines += ["Cross coherence S->t: fraction of test rows whose generation of t from S is classified as the "
                  "row's label. **coherence**: " + protocol.get("cross_coherence", "one posterior sample per row")
                  + "; **from the mean**: " + protocol.get("cross_coherence_mean", "the posterior mean decoded")
                  + ".", ""]
        lines += _md_table(("given -> generated", "coherence", "from the mean", "chance"),
                           [(k, _marked(v, acc, n), _marked(means.get(k), acc, n), acc)
                            for k, v in record["cross_coherence"].items()])
    if record.get("joint_coherence") is not None:
        samples = record.get("settings", {}).get("joint_samples")
        joint_chance = _chance(record, "joint_coherence")
        lines += [f"Joint coherence (all classifiers agree on modalities decoded from one z ~ p(z), "
                  f"{samples or '?'} samples): **{_marked(record['joint_coherence'], joint_chance, samples)}** "
                  f"(chance {_num(joint_chance)})", ""]
    syn = record.get("synergy")
    if syn:
        lines += ["Synergy: mean cross coherence by number of given modalities.", ""]
        lines += _md_table(("given", "mean coherence", "chance"),
                           [(k, _marked(v, acc, n), acc) for k, v in syn["coherence_by_given"].items()])
    if record.get("latent_accuracy"):
        lines += ["## Latent accuracy", "",
                  "Logistic regression on latent means (standardised), fitted on training rows, scored on test.", ""]
        lines += _md_table(("representation", "test accuracy", "chance"),
                           [(k, _marked(v, acc, n), acc) for k, v in record["latent_accuracy"].items()])
    ll = record.get("log_likelihood")
    if ll:
        names = list(ll["marginal"])
        lines += ["## Log-likelihoods", "",
                  f"Importance-sampled with K = {ll['k']} on {ll['rows']} test rows, in nats per sample. "
                  "**Unweighted**: every modality has λ = 1, so these are true log-densities, unlike training "
                  "objectives with likelihood rescaling. Conditionals are log p(a, b) − log p(b). The uniform "
                  "column is the log-likelihood of the uniform distribution, for categorical and text modalities.", ""]
        keys = [(m, v) for m, v in ll["marginal"].items()]
        if "joint" in ll:
            keys.append(("all", ll["joint"]))
        for part in ("pairs", "conditional", "conditional_given_rest"):
            keys += list(ll.get(part, {}).items())
        rows = []
        for key, v in keys:
            uniform = _uniform(record, _ll_targets(key, names))
            rows.append((f"log p({key})", _marked(v, uniform, accuracy=False, fmt=lambda x: _num(x, 2)),
                         _num(uniform, 2)))
        lines += _md_table(("quantity", "nats", "uniform"), rows)
    cca = record.get("cca")
    if cca:
        chance = _chance(record, "cca")
        lines += ["## CCA correlation (image–text)", "", cca.get("definition", ""), ""]
        names = {"real": "real test pairs", "image_to_text": "image → generated text",
                 "text_to_image": "generated image → text", "joint": "joint generation from p(z)",
                 "shuffled": "real images with shuffled captions"}
        lines += _md_table(("pairs", "correlation", "chance"),
                           [(names[k], _marked(cca[k], chance, accuracy=False) if k != "shuffled" else _num(cca[k]),
                             chance) for k in names if cca.get(k) is not None])
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
