"""Evaluate a trained run: every metric is one registered step that reads the run and writes its keys.

``evaluate(run, metrics=None, k=1000, ...)`` fills RUN/evaluation/metrics.json (JSON, NaN as null),
report.md and the pictures. Metrics that need labels (coherence, latent accuracy, the class parts of
relatedness) are refused with a message in ``refused`` when the dataset has none; the others still run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..data.names import child_path
from ..data.partial import rows_observing
from ..errors import UserError
from ..train.checkpoint import atomic_write
from . import chance as ch
from . import coherence as coh
from . import likelihood as ll
from . import pictures
from .classifiers import coherence_classifiers, protocol_text
from .folder import evaluation_folder
from .latent import latent_accuracy, representations
from .relatedness import relatedness

NO_LABELS = ("the dataset has no labels (no 'label' array): {what} needs a class per row and was not "
             "computed; add an integer 'label' array to the data to get it")


@dataclass
class Options:
    k: int = 1000                    # importance samples per row for the likelihoods
    likelihood_rows: int = 1000      # test rows for the likelihoods (0: all)
    row_chunk: int = 16              # rows per likelihood pass
    sample_chunk: int | None = None  # samples per likelihood pass (None: likelihood.default_sample_chunk)
    classifier_epochs: int = 30      # most epochs of the coherence classifiers (official protocol: 30)
    classifier_patience: int = 3     # stop after this many epochs without validation gain (0: all epochs)
    joint_samples: int = 10000       # prior samples for joint coherence
    probe_rows: int = 5000           # training rows for the linear probe
    relatedness_rows: int = 1000
    tsne_rows: int = 300             # test rows per modality in the t-SNE picture
    cca_rows: int = 5000             # training pairs the image-text CCA is fitted on
    cca_test_rows: int = 1000        # test pairs it scores (joint pairs: as many prior samples)
    seed: int = 0


@dataclass
class Context:
    model: torch.nn.Module
    train: object
    test: object
    out: Path
    device: torch.device
    options: Options
    classifiers: Mapping[str, Callable] | None = None
    log: Callable = print
    results: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)
    pictures: dict = field(default_factory=dict)
    chance: dict = field(default_factory=dict)   # chance levels of the figures computed (metrics.json "chance")

    @property
    def labelled(self) -> bool:
        return self.train.label is not None and self.test.label is not None

    def picture(self, name: str) -> Path:
        path = child_path(self.out, name, ".png")   # built from checked modality names: stays in out
        self.pictures[name] = path.name
        return path


METRICS: dict[str, Callable[[Context], None]] = {}


def seeded_rows(data, n: int, seed: int):
    """At most n rows picked by a seeded permutation, in their original order (test sets may be sorted
    by class, so the first n rows would not do)."""
    if len(data) <= n:
        return data
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(pick.sort().values)


def register_metric(name: str):
    def deco(fn):
        METRICS[name] = fn
        return fn

    return deco


def _classifiers(ctx: Context):
    """The user's classifiers where given, cached or newly trained ones otherwise; all scored on test."""
    nets, acc = coherence_classifiers(ctx.train, ctx.test, ctx.out / "classifiers", ctx.options.classifier_epochs,
                                      ctx.options.seed, ctx.device, given=ctx.classifiers, log=ctx.log,
                                      patience=ctx.options.classifier_patience)
    ctx.classifiers = nets
    ctx.results["classifier_accuracy"] = acc
    return nets


@register_metric("coherence")
def _coherence(ctx: Context) -> None:
    if not ctx.labelled:
        for key in ("cross_coherence", "cross_coherence_mean", "joint_coherence", "classifier_accuracy", "synergy"):
            ctx.results[key] = None
            ctx.refused[key] = NO_LABELS.format(what=key.replace("_", " "))
        return
    user_given = set(ctx.classifiers or {})
    nets = _classifiers(ctx)
    classes = int(ctx.test.num_classes or 2)
    weak = [m for m, a in (ctx.results.get("classifier_accuracy") or {}).items()
            if a is not None and a < min(1.0, 2.0 / classes)]
    if weak:
        ctx.notes["classifiers"] = (f"classifier(s) {', '.join(weak)} score below twice chance on the test split: "
                                    f"coherence judged by them is not meaningful (train them longer with "
                                    f"--classifier-epochs, or pass your own)")
    else:
        ctx.notes["classifiers"] = None  # clears a warning left by an earlier evaluation
    cross, notes = coh.cross_coherence(ctx.model, ctx.test, nets, ctx.device, sample=True, seed=ctx.options.seed)
    ctx.results["cross_coherence"] = cross
    ctx.results["cross_coherence_mean"], _ = coh.cross_coherence(ctx.model, ctx.test, nets, ctx.device, sample=False)
    ctx.notes.update({f"cross_coherence {k}": v for k, v in notes.items()})
    given = sorted(user_given & set(nets))
    ctx.results["protocol"] = {**coh.PROTOCOL, "classifiers": (
        protocol_text(ctx.options.classifier_epochs, ctx.options.classifier_patience)
        + ("" if not given else f"; user-given classifiers for {', '.join(given)}"))}
    ctx.chance["accuracy"] = ch.label_chance(ctx.test.label, classes)
    predictions: dict = {}
    ctx.results["joint_coherence"] = coh.joint_coherence(ctx.model, nets, ctx.options.joint_samples,
                                                         seed=ctx.options.seed, predictions=predictions)
    ctx.chance["joint_coherence"] = ch.joint_chance(predictions, classes)
    syn = coh.synergy(cross, ctx.test.modalities)
    ctx.results["synergy"] = syn
    if syn is None:
        ctx.notes["synergy"] = "needs three or more modalities (coherence given 1 .. M-1 modalities)"


@register_metric("latent")
def _latent(ctx: Context) -> None:
    if not ctx.labelled:
        ctx.results["latent_accuracy"] = None
        ctx.refused["latent_accuracy"] = NO_LABELS.format(what="latent accuracy")
        return
    ctx.results["latent_accuracy"] = latent_accuracy(ctx.model, ctx.train, ctx.test, ctx.device,
                                                     ctx.options.probe_rows, ctx.options.seed)
    ctx.chance["accuracy"] = ch.label_chance(ctx.test.label, int(ctx.test.num_classes or int(ctx.test.label.max()) + 1))


@register_metric("likelihood")
def _likelihood(ctx: Context) -> None:
    model, opts = ctx.model, ctx.options
    if getattr(model, "likelihood_note", None):      # a model that defines no likelihood says why (Nexus)
        ctx.results["log_likelihood"] = None
        ctx.notes["log_likelihood"] = f"not computed: {model.likelihood_note}"
        return
    if not (ll.supports_importance_sampling(model) or callable(getattr(model, "log_likelihood", None))):
        ctx.results["log_likelihood"] = None
        ctx.notes["log_likelihood"] = (f"{type(model).__name__} has neither a fused posterior (posterior, "
                                       f"reconstruction, prior) nor its own log_likelihood: skipped")
        return
    test = ctx.test
    if opts.likelihood_rows:
        test = seeded_rows(test, opts.likelihood_rows, opts.seed)
    per_row = ll.log_likelihoods(model, test, opts.k, opts.row_chunk, opts.sample_chunk, opts.seed, ctx.device)
    summary = ll.summarise(per_row, test.modalities, opts.k)
    ctx.results["log_likelihood"] = summary
    uniform = {m: ch.uniform_log_likelihood(spec, test.data[m][test.mask[m]] if spec.kind == "text" else None)
               for m, spec in test.specs.items()}
    ctx.chance["log_likelihood"] = {m: u for m, u in uniform.items() if u is not None}
    own = callable(getattr(model, "log_likelihood", None))
    how = (f"the model's own estimator ({type(model).__name__}.log_likelihood) with K = {opts.k}" if own else
           f"importance sampling with K = {opts.k} samples of the fused posterior given the conditioning modalities")
    subset = " (a seeded subset)" if len(test) < len(ctx.test) else ""
    ctx.notes["log_likelihood"] = (f"{how}, on {len(test)} test rows{subset}; unweighted (λ = 1 for every "
                                   f"modality); conditional log p(a|b) = log p(a, b) − log p(b)")
    joint = summary.get("joint")
    if len(test.modalities) > 1 and (joint is None or not math.isfinite(joint)):
        ctx.notes["log_likelihood"] += (f"; {type(model).__name__} gives no joint log p(X), so the joint and the "
                                        f"conditionals are null")


@register_metric("cca")
def _cca(ctx: Context) -> None:
    from .cca import image_text_cca

    opts = ctx.options
    result = image_text_cca(ctx.model, ctx.train, ctx.test, ctx.device, opts.cca_rows, opts.cca_test_rows,
                            opts.cca_test_rows, opts.seed)
    ctx.results["cca"] = result
    if result is None:
        kinds = ", ".join(f"{m} ({s.kind})" for m, s in ctx.test.specs.items())
        ctx.notes["cca"] = f"needs an image-like (image or vector) and a text modality; this run has {kinds}"
        return
    ctx.notes["cca"] = None
    ctx.chance["cca"] = {"value": result["shuffled"],
                         "rule": "the score of real test images with the captions of other rows (seeded permutation)"}


@register_metric("relatedness")
def _relatedness(ctx: Context) -> None:
    if len(ctx.test.modalities) < 2:
        ctx.results["relatedness"] = None
        ctx.notes["relatedness"] = "needs two modalities"
        return
    summary, matrices, labels = relatedness(ctx.model, ctx.test, ctx.device, ctx.options.relatedness_rows,
                                            ctx.options.seed)
    ctx.results["relatedness"] = summary
    if summary.get("note"):
        ctx.notes["relatedness"] = summary["note"]
    if not ctx.labelled:
        ctx.refused["relatedness class matrix"] = NO_LABELS.format(what="the class x class distance matrix")
    for pair, d in matrices.items():
        tag = pair.replace("~", "_")
        pictures.distance_histogram(d, pair, ctx.picture(f"w2_histogram_{tag}"))
        cm = summary["pairs"][pair].get("class_matrix")
        if cm is not None:
            pictures.class_distance_heatmap(cm, pair, ctx.picture(f"w2_classes_{tag}"))
            pictures.class_dendrogram(cm, pair, ctx.picture(f"w2_dendrogram_{tag}"))


@register_metric("pictures")
def _pictures(ctx: Context) -> None:
    names = ctx.test.modalities
    pictures.sample_grid(ctx.model, ctx.test, ctx.picture("samples"))
    for s in names:
        for t in names:
            if s != t:
                try:
                    pictures.cross_generation_grid(ctx.model, ctx.test, s, t, ctx.picture(f"cross_{s}_to_{t}"))
                except (NotImplementedError, ValueError, KeyError) as e:
                    ctx.pictures.pop(f"cross_{s}_to_{t}", None)
                    ctx.notes[f"cross_{s}_to_{t}"] = f"not drawn: {e}"
    complete = rows_observing(ctx.test)   # a partially observed test split: the t-SNE of complete rows
    part = seeded_rows(ctx.test.subset(complete) if len(complete) else ctx.test, ctx.options.tsne_rows,
                       ctx.options.seed)
    reps = representations(ctx.model, part, ctx.device)
    unimodal = {m: reps[m] for m in names if m in reps} or \
        {k: v for k, v in reps.items() if k.endswith("/shared")} or reps  # fmmvae: one t-SNE, shared codes
    pictures.latent_embedding(unimodal, part.label, ctx.picture("latent_tsne"), ctx.options.seed)
    if not ctx.labelled:
        ctx.notes["latent_tsne"] = "no labels: points are marked by modality only"


def parse_metrics(text: str | list[str] | None) -> list[str]:
    """"coherence,likelihood" (or a list) -> ["coherence", "likelihood"]; None or "all" -> every metric."""
    if text is None or (isinstance(text, str) and text.strip() in ("", "all")):
        return list(METRICS)
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}: use a comma-separated list of "
                        f"{', '.join(METRICS)} (or all)")
    return names


def _clean(value):
    """JSON-safe: NaN/inf -> None, tensors and numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_model(model, train, test, out: Path, metrics: list[str] | None = None, options: Options | None = None,
                   classifiers: Mapping[str, Callable] | None = None, device=None, info: dict | None = None,
                   log: Callable = print) -> dict:
    """Run the chosen metrics on a model and its data splits; write metrics.json and report.md in ``out``
    (locked against a second evaluation meanwhile; a damaged metrics.json is set aside, see folder.py)."""
    options = options or Options()
    if options.k < 1:
        raise UserError(f"--k must be at least 1, got {options.k}")
    out = Path(out)
    with evaluation_folder(out, log) as previous_record:
        return _evaluate_into(model, train, test, out, metrics, options, classifiers, device, info, log,
                              previous_record)


def _evaluate_into(model, train, test, out, metrics, options, classifiers, device, info, log, record) -> dict:
    from .report import write_report

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    ctx = Context(model, train, test, out, device, options, dict(classifiers) if classifiers else None, log)
    previous = out / "metrics.json"
    timings = dict(record.get("timings", {}))
    for name in parse_metrics(metrics):
        log(f"evaluating {name} ...")
        start = time.perf_counter()
        METRICS[name](ctx)
        timings[name] = round(time.perf_counter() - start, 3)
    record.update(info or {})
    record.setdefault("test_rows", len(test))    # the n of the chance flags' standard errors
    record.setdefault("train_rows", len(train))
    record.update(ctx.results)
    for key in ("notes", "refused", "pictures", "chance"):
        merged = dict(record.get(key, {}))
        merged.update(getattr(ctx, key))
        record[key] = {k: v for k, v in merged.items() if v is not None}
    record["settings"] = _clean(vars(options))
    record["timings"] = timings
    record = _clean(record)
    text = json.dumps(record, indent=1, allow_nan=False)
    atomic_write(previous, lambda tmp: Path(tmp).write_text(text))
    atomic_write(out / "report.md", lambda tmp: write_report(record, Path(tmp)))
    return record


def evaluate(run, metrics: list[str] | str | None = None, options: Options | None = None,
             classifiers: Mapping[str, Callable] | None = None, log: Callable = print) -> dict:
    """Evaluate a run folder (path or :class:`mmvae.runs.Run`) into RUN/evaluation/.

    ``classifiers``: optional ``{modality: callable x -> logits}`` used instead of trained ones."""
    from ..runs import load_run

    if not hasattr(run, "model"):
        path = Path(run)
        if not (path / "config.json").exists():
            raise UserError(f"'{path}' is not a run folder (no config.json): give the folder `mmvae train` wrote")
        run = load_run(path, device="cuda" if torch.cuda.is_available() else "cpu")
    metrics = parse_metrics(metrics)
    splits = run.dataset()
    info = {"run": str(run.path), "model": run.config.model, "dataset": run.config.dataset,
            "test_rows": len(splits.test), "train_rows": len(splits.train)}
    record = evaluate_model(run.model, splits.train, splits.test, Path(run.path) / "evaluation", metrics, options,
                            classifiers, info=info, log=log)
    from .html_report import write_html_report

    write_html_report(run.path, record)   # RUN/report.html: the whole run in one page
    return record
