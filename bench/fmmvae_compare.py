"""MMVAE (naive ELBO) against the factorised MMVAE with InfoNCE on PolyMNIST with two modalities (issue 6,
item 4): the same data, seed, networks, optimiser and number of epochs for both; cross and joint
coherence and the latent accuracy of every representation each model exposes (MMVAE: the unimodal and
joint posterior means; fmmvae: the shared and the private means per modality).

Training goes through ``mmvae.train.train`` (exactly what ``mmvae train`` does) and scoring through
``mmvae.evaluation.evaluate`` (what ``mmvae evaluate --metrics coherence,latent`` does), with one set of
coherence classifiers trained once and shared by both runs, so the two models are judged by the same
classifiers.

Run (about 15 minutes on one shared CPU thread; writes docs/results/fmmvae.md)::

    OMP_NUM_THREADS=1 python bench/fmmvae_compare.py                 # warm-up 3 epochs, 3 variants
    OMP_NUM_THREADS=1 python bench/fmmvae_compare.py --set warmup=0  # no KL warm-up

Each variant is ``model[:key=value,...]`` (``--set`` options of that model); ``--set key=value`` applies
to every variant.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from mmvae.config import Config, apply_overrides
from mmvae.data.registry import load_dataset
from mmvae.evaluation.classifiers import coherence_classifiers
from mmvae.evaluation.evaluate import Options, evaluate
from mmvae.runs import load_run
from mmvae.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> tuple[str, list[str]]:
    model, _, rest = text.partition(":")
    return model, [s for s in rest.split(",") if s]


def run_variant(text: str, args, out: Path, classifiers) -> dict:
    model, sets = parse_variant(text)
    folder = out / text.replace(":", "_").replace(",", "_").replace("=", "")
    if folder.exists():
        shutil.rmtree(folder)
    cfg = Config(model=model, dataset="polymnist", epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                 out=str(folder))
    apply_overrides(cfg, ["data.modalities=2", *args.set, *sets])
    start = time.perf_counter()
    train(cfg, show_progress=False)
    seconds = time.perf_counter() - start
    record = evaluate(load_run(folder), ["coherence", "latent"],
                      Options(classifier_epochs=args.classifier_epochs, joint_samples=args.joint_samples,
                              seed=args.seed), classifiers=classifiers, log=lambda *a: None)
    log = folder / "metrics.jsonl"
    metrics = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    last = ([m for m in metrics if "epoch" in m and "event" not in m] or [{}])[-1]
    return {"variant": text, "train_seconds": round(seconds, 1), "val_loss": last.get("val_loss"),
            "cross": record["cross_coherence"], "joint": record["joint_coherence"],
            "latent": record["latent_accuracy"]}


def markdown(results: list[dict], classifier_accuracy: dict, args, command: str) -> str:
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["# Factorised MMVAE vs MMVAE on PolyMNIST (2 modalities)", "",
             f"Command (seed {args.seed}, {args.epochs} epochs each, batch {args.batch_size}, Adam 1e-3, latent 20, Laplace "
             "posteriors and likelihoods with scale 0.75, the models' default settings, and "
             f"{' '.join(args.set) or 'nothing else'} for every model):", "",
             f"    {command}", "",
             "Data: the offline PolyMNIST stand-in (`--dataset polymnist --set data.modalities=2`): 4,500 training "
             "tuples (10% held out for validation) and 500 test tuples built from the 5,000-digit MNIST sample. "
             f"Coherence classifiers: the evaluation module's CNNs, {args.classifier_epochs} epochs, trained once and "
             "used for both models (test accuracy "
             + ", ".join(f"{m} {pct(v)}%" for m, v in classifier_accuracy.items()) + "). "
             f"Joint coherence from {args.joint_samples} prior samples. Latent accuracy: logistic regression on "
             "posterior means (training rows), scored on the test rows; chance is 10%.", "",
             "| model | train s | cross m0→m1 | cross m1→m0 | joint | latent m0 | latent m1 | latent m0 shared | "
             "latent m0 private | latent m1 shared | latent m1 private |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lat = r["latent"]
        lines.append(f"| {r['variant']} | {r['train_seconds']:.0f} | {pct(r['cross'].get('m0->m1'))} | "
                     f"{pct(r['cross'].get('m1->m0'))} | {pct(r['joint'])} | {pct(lat.get('m0'))} | "
                     f"{pct(lat.get('m1'))} | {pct(lat.get('m0/shared'))} | {pct(lat.get('m0/private'))} | "
                     f"{pct(lat.get('m1/shared'))} | {pct(lat.get('m1/private'))} |")
    lines += ["", "All numbers in %. `mmvae` has one latent (its unimodal posterior means are 'latent m0/m1'); "
              "`fmmvae` has a shared latent of 20 dimensions and a private latent of 20 per modality. "
              f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s); training seconds include validation and checkpoints.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32, help="32: four times the updates of the usual 128 "
                   "for the same number of epochs, which this small budget needs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["mmvae", "fmmvae", "fmmvae:infonce_weight=100"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a training option for every variant; repeatable (default: warmup=3, a linear KL warm-up "
                        "over the first 3 epochs; --set warmup=0 switches it off)")
    p.add_argument("--classifier-epochs", type=int, default=5)
    p.add_argument("--joint-samples", type=int, default=10000)
    p.add_argument("--out", default="runs/fmmvae_compare", help="folder for the run folders")
    p.add_argument("--write", default=str(ROOT / "docs/results/fmmvae.md"), help="markdown file ('' = none)")
    args = p.parse_args(argv)
    args.set = ["warmup=3"] if args.set is None else args.set
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    splits = load_dataset("polymnist", seed=args.seed, modalities=2)
    classifiers, acc = coherence_classifiers(splits.train, splits.test, out / "classifiers", args.classifier_epochs,
                                             args.seed, "cpu", log=lambda *a: print(*a, file=sys.stderr))
    print(f"classifier accuracy: {acc}", file=sys.stderr)
    results = []
    for text in args.variants:
        r = run_variant(text, args, out, classifiers)
        print(json.dumps(r), flush=True)
        results.append(r)
    command = "OMP_NUM_THREADS=1 python bench/fmmvae_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(results, acc, args, command.strip())
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
