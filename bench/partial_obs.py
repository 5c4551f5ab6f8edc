"""Learning from partially observed pairs: MEME, MVAE and MMVAE at paired fractions f (MEME, Joy et al.
2022, Tables 3 and 4, on our offline stand-in data).

For each paired fraction f and scheme (unpaired rows keep one named modality, or ``split`` between the
two), every model is trained for the same number of optimiser steps on the same masked training rows,
then scored on the complete test rows: cross coherence in both directions (classifiers from
``mmvae.evaluation``, trained once on the training split and cached) and latent accuracy (a linear probe
on each modality's posterior mean). The markdown tables go to ``--out`` with the command that made them.

    # PolyMNIST, 2 modalities (the default dataset): needs a GPU-scale budget, see docs/results/partial.md
    OMP_NUM_THREADS=1 python bench/partial_obs.py --steps 2000 --out partial-polymnist.md
    # what docs/results/partial.md holds (toy data; the second command appends the c ablation)
    OMP_NUM_THREADS=1 python bench/partial_obs.py --dataset toy --data classes=10 --data n=3000 --steps 40 \
        --seeds 0,1 --out docs/results/partial.md
    OMP_NUM_THREADS=1 python bench/partial_obs.py --dataset toy --data classes=10 --steps 60 --seeds 0,1,2 \
        --models "meme:classifier_weight=1,meme:classifier_weight=10" --fractions 1,0.25,0.125 --schemes split \
        --append --out docs/results/partial.md

A model entry ``name:key=value;key=value`` passes ``--set`` style options to that model only.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from mmvae.config import Config, apply_overrides
from mmvae.data import builtin  # noqa: F401  (registers the datasets)
from mmvae.data.registry import load_dataset
from mmvae.evaluation.classifiers import coherence_classifiers
from mmvae.evaluation.coherence import cross_coherence
from mmvae.evaluation.latent import latent_accuracy
from mmvae.train.trainer import Trainer


def parse_models(text: str) -> list[tuple[str, str, list[str]]]:
    """"meme:classifier_weight=1;k=5,mvae" -> [(label, model, overrides), ...]."""
    out = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, opts = entry.partition(":")
        items = [o for o in opts.split(";") if o]
        out.append((entry, name, items))
    return out


def configurations(fractions: list[float], schemes: list[str], names: list[str]) -> list[tuple[float, str]]:
    """(f, observed) pairs; f = 1 has no unpaired rows, so one run serves every scheme."""
    expanded = [s for sch in schemes for s in (names if sch == "each" else [sch])]
    return [(f, "all") if f >= 1.0 else (f, s) for f in fractions for s in (["all"] if f >= 1.0 else expanded)]


def run_one(model: str, overrides: list[str], args, f: float, observed: str, seed: int, splits, classifiers,
            root: Path) -> dict:
    cfg = Config(model=model, dataset=args.dataset, data=dict(args.data), epochs=10**6, max_steps=args.steps,
                 batch_size=args.batch_size, lr=args.lr, seed=seed, val_fraction=0.0, latent_dim=args.latent_dim,
                 paired_fraction=f, observed="split" if observed == "all" else observed,
                 out=str(root / f"{model}-{'-'.join(overrides)}-{f}-{observed}-{seed}".replace("=", "")))
    apply_overrides(cfg, list(args.set) + overrides)
    t0 = time.time()
    trainer = Trainer(cfg, splits=splits, show_progress=False)
    trainer.fit()
    seconds = time.time() - t0
    model_ = trainer.model.cpu().eval()          # the classifiers and probes live on the CPU
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cross, _ = cross_coherence(model_, splits.test, classifiers, "cpu")
        latent = latent_accuracy(model_, splits.train, splits.test, "cpu", max_train=args.probe_rows, seed=seed)
    return {"cross": cross, "latent": latent, "seconds": seconds, "counts": trainer.train_data.counts()}


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {sd:.3f}"


def tables(results: dict, labels: list[str], configs: list[tuple[float, str]], names: list[str],
           fractions: list[float]) -> str:
    s, t = names
    metrics = [(f"Cross coherence {s} → {t}", "cross", f"{s}->{t}"),
               (f"Cross coherence {t} → {s}", "cross", f"{t}->{s}"),
               (f"Latent accuracy {s} (linear probe on q(z|{s}) means)", "latent", s),
               (f"Latent accuracy {t} (linear probe on q(z|{t}) means)", "latent", t)]
    schemes = list(dict.fromkeys(o for _, o in configs if o != "all")) or ["all"]
    lines = []
    for title, kind, key in metrics:
        header = " | ".join(f"f = {f:g}" for f in fractions)
        lines += [f"**{title}**", "", f"| model | unpaired rows keep | {header} |",
                  "|---|---|" + "---|" * len(fractions)]
        for label in labels:
            for scheme in schemes:
                cells = []
                for f in fractions:
                    runs = results.get((label, f, "all" if f >= 1.0 else scheme), [])
                    cells.append(fmt([r[kind][key] for r in runs if key in r[kind]]))
                lines.append(f"| {label} | {scheme if scheme != 'all' else '–'} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Wall seconds per run (training only; equal steps, not equal compute)**", "",
              "| model | " + " | ".join(f"f = {f:g}" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
    for label in labels:
        secs = [[r["seconds"] for (lb, f2, _), runs in results.items() if lb == label and f2 == f for r in runs]
                for f in fractions]
        lines.append(f"| {label} | " + " | ".join(f"{sum(v) / len(v):.1f}" if v else "–" for v in secs) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="polymnist")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset options (default for polymnist: modalities=2)")
    p.add_argument("--models", default="meme,mvae,mmvae")
    p.add_argument("--fractions", default="1.0,0.5,0.25,0.125")
    p.add_argument("--schemes", default="each,split", help="'each' = every modality name in turn, and/or split")
    p.add_argument("--steps", type=int, default=50, help="optimiser steps per run (the fixed budget)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--seeds", default="0")
    p.add_argument("--classifier-epochs", type=int, default=3)
    p.add_argument("--probe-rows", type=int, default=2000, help="training rows for the latent probe")
    p.add_argument("--set", action="append", default=[], help="--set KEY=VALUE for every model")
    p.add_argument("--out", default=None, help="markdown file (printed when omitted)")
    p.add_argument("--append", action="store_true", help="append a section to --out instead of replacing it")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    data = dict(d.split("=", 1) for d in args.data)
    if args.dataset == "polymnist":
        data.setdefault("modalities", "2")
    args.data = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in data.items()}
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    models = parse_models(args.models)
    started = time.time()
    splits = load_dataset(args.dataset, seed=0, **args.data)
    names = list(splits.specs)
    if len(names) != 2:
        raise SystemExit(f"the benchmark compares two-modality runs; {args.dataset} has {names}")
    configs = configurations(fractions, args.schemes.split(","), names)
    with tempfile.TemporaryDirectory(prefix="partial-obs-") as tmp:
        root = Path(tmp)
        classifiers, clf_acc = coherence_classifiers(splits.train, splits.test, root / "classifiers",
                                                     epochs=args.classifier_epochs, seed=0, log=lambda *_: None)
        print(f"classifier test accuracy: {clf_acc}", file=sys.stderr, flush=True)
        results: dict = {}
        for f, observed in configs:
            for label, model, overrides in models:
                for seed in seeds:
                    r = run_one(model, overrides, args, f, observed, seed, splits, classifiers, root)
                    results.setdefault((label, f, observed), []).append(r)
                    print(f"{label:28s} f={f:<6g} {observed:6s} seed={seed} {r['seconds']:6.1f}s "
                          f"cross={ {k: round(v, 3) for k, v in r['cross'].items()} } "
                          f"latent={ {k: round(v, 3) for k, v in r['latent'].items()} } rows={r['counts']}",
                          file=sys.stderr, flush=True)
    total = time.time() - started
    given = argv if argv is not None else sys.argv[1:]
    command = "OMP_NUM_THREADS=1 python bench/partial_obs.py " + " ".join(shlex.quote(a) for a in given)
    title = args.title or f"Partial observation on {args.dataset} ({', '.join(names)})"
    text = "\n".join([
        f"## {title}", "",
        f"Command: `{command}`", "",
        f"Budget: {args.steps} optimiser steps of batch {args.batch_size} per run (lr {args.lr:g}, latent "
        f"{args.latent_dim}, seeds {args.seeds}; library defaults otherwise), "
        f"{len(splits.train)} training rows, {len(splits.test)} complete test rows. Coherence classifiers: "
        f"{args.classifier_epochs} epochs on the training split, test accuracy "
        + ", ".join(f"{m} {a:.3f}" for m, a in clf_acc.items()) + f". Wall time {total / 60:.1f} min "
        f"(torch {torch.__version__}, {torch.get_num_threads()} thread(s)).", "",
        "Values are means (± sample standard deviation over seeds where there are several). f = 1 has no "
        "unpaired rows, so one run fills that column for every scheme.", "",
        tables(results, [label for label, _, _ in models], configs, names, fractions)])
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and out.exists():
            out.write_text(out.read_text().rstrip("\n") + "\n\n" + text)
        else:
            out.write_text(text)
        print(f"wrote {out} ({total / 60:.1f} min)", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
