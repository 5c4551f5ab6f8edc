"""The factorizing-mmvae study's comparison, in its layout: naive-ELBO MMVAE against the factorised model
(FUMMVAE trained with m_infoNCE_naive: `fmmvae`), reporting cross and joint coherence and the latent
accuracy of the MMVAE's latent, the factorised model's shared latent and its unimodal (private) latents,
each beside its chance level.

Both models get the same data, seed, optimiser, epochs and batches; the naive ELBO for both (`mmvae
--set objective=elbo --set kl=analytic`, the source's `elbo_naive`; `fmmvae` defaults to the source's
`m_infoNCE_naive`). Training goes through ``mmvae.train.train`` (what ``mmvae train`` does) and scoring
through ``mmvae.evaluation.evaluate`` (what ``mmvae evaluate --metrics coherence,latent`` does) with one
set of coherence classifiers trained once, so both models are judged by the same classifiers.

Run (writes docs/results/fmmvae.md; about 15 minutes on one shared CPU thread)::

    OMP_NUM_THREADS=1 python bench/fmmvae_compare.py
    OMP_NUM_THREADS=1 python bench/fmmvae_compare.py --dataset polymnist --set data.modalities=2
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
from mmvae.evaluation.classifiers import PROTOCOL, coherence_classifiers, protocol_text
from mmvae.evaluation.evaluate import Options, evaluate
from mmvae.runs import load_run
from mmvae.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ["objective=elbo", "kl=analytic"]      # mmvae with the source's elbo_naive (fmmvae's default)
STUDY = ["posterior=laplace", "weights=rescale"]  # the source's posteriors and llik_scaling, for both models
                                                  # (the library's defaults are Gaussian and uniform since)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """"fmmvae:contrast_weight=128,private_dim=20" -> ("fmmvae", ["contrast_weight=128", "private_dim=20"])."""
    model, _, rest = text.partition(":")
    return model, [s for s in rest.split(",") if s]


def run_variant(text: str, args, out: Path, classifiers) -> dict:
    model, sets = parse_variant(text)
    folder = out / text.replace(":", "_").replace(",", "_").replace("=", "")
    if folder.exists():
        shutil.rmtree(folder)
    cfg = Config(model=model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                 out=str(folder))
    apply_overrides(cfg, [*STUDY, *args.set, *(BASELINE if model == "mmvae" else []), *sets])
    start = time.perf_counter()
    train(cfg, show_progress=False)
    seconds = time.perf_counter() - start
    record = evaluate(load_run(folder), ["coherence", "latent"],
                      Options(joint_samples=args.joint_samples, seed=args.seed), classifiers=classifiers,
                      log=lambda *a: None)
    return {"variant": text, "model": model, "train_seconds": round(seconds, 1), **{k: record.get(k) for k in (
        "cross_coherence", "cross_coherence_mean", "joint_coherence", "latent_accuracy", "chance", "protocol")}}


def markdown(results: list[dict], names: list[str], accuracy: dict, args, command: str,
             classifier_protocol: str) -> str:
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    mm = next(r for r in results if r["model"] == "mmvae")
    fms = [r for r in results if r["model"] == "fmmvae"]
    acc_chance = mm["chance"]["accuracy"]["value"]
    label = lambda r: "factorised" + ("" if r["variant"] == "fmmvae" else f" ({r['variant'].partition(':')[2]})")  # noqa: E731
    header = ["metric", "naive-ELBO MMVAE"]
    for r in fms:
        header += [f"{label(r)}: shared", f"{label(r)}: unimodal (private)"]
    header.append("chance")
    a, b = names
    rows = []
    for s_, t in ((b, a), (a, b)):
        key = f"{s_}->{t}"
        rows.append([f"Cross coherence ({s_} → {t})", pct(mm["cross_coherence"][key])]
                    + sum([[pct(r["cross_coherence"][key]), "–"] for r in fms], []) + [pct(acc_chance)])
    rows.append(["Joint coherence", pct(mm["joint_coherence"])] + sum([[pct(r["joint_coherence"]), "–"] for r in fms], [])
                + [" / ".join(pct(r["chance"]["joint_coherence"]["value"]) for r in [mm, *fms])])
    for m in (b, a):
        rows.append([f"latent accuracy ({m})", pct(mm["latent_accuracy"][m])]
                    + sum([[pct(r["latent_accuracy"][f"{m}/shared"]), pct(r["latent_accuracy"][f"{m}/private"])]
                           for r in fms], []) + [pct(acc_chance)])
    lines = [f"# Factorised MMVAE against the naive-ELBO MMVAE on `{args.dataset}` (issue 11, item 4)", "",
             "The factorizing-mmvae study's table, in its layout (its columns: elbo naive | elbo naive infoNCE "
             "(disentangled) | elbo naive infoNCE (Uni)), on offline data. Written by:", "",
             f"    {command}", "",
             f"Every model: seed {args.seed}, {args.epochs} epochs, batch {args.batch_size}, Adam 1e-3, latent 20 "
             "(fmmvae: a shared latent of 20 and a private latent of 20 per modality), Laplace posteriors and prior, "
             "decoder scale 0.75, likelihood weights `rescale`, naive ELBO with the per-expert analytic KL, no KL "
             f"warm-up{', and ' + ' '.join(args.set) if args.set else ''}. `factorised`: fmmvae's defaults, the "
             "source's model and objective (`contrast=fission`, α = 1, entering the batch-mean loss as α / B as the "
             "source's batch sums do); other columns change only the options named.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "All in %. Coherence: " + mm["protocol"]["cross_coherence"] + "; from the posterior *mean* instead: "
              + "; ".join(f"{r['variant']} " + ", ".join(f"{k} {pct(v)}" for k, v in r["cross_coherence_mean"].items())
                          for r in [mm, *fms]) + ". Joint coherence: "
              f"{args.joint_samples} prior samples; its chance level (one per model, in column order) is the agreement "
              "of independent generations with the class frequencies the classifiers predict on that model's prior "
              f"samples. Accuracy chance: {mm['chance']['accuracy']['rule']}. Latent accuracy: standardised logistic "
              "regression on posterior means of ≤ 5,000 training rows, scored on the test rows (MMVAE: its unimodal "
              "posterior q(z | x_m); fmmvae: the MMVAE expert q(s | x_m) and the unimodal VAE's q(w_m | x_m)).",
              "", f"Coherence classifiers ({classifier_protocol}), trained once and used for every model; test "
              "accuracy " + ", ".join(f"{m} {pct(v)}" for m, v in accuracy.items()) + ".", "",
              "Training seconds: " + ", ".join(f"{r['variant']} {r['train_seconds']:.0f}" for r in [mm, *fms])
              + f" (validation and checkpoints included; {platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s), shared machine).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist-label")
    p.add_argument("--epochs", type=int, default=10, help="10: the study's runs")
    p.add_argument("--batch-size", type=int, default=128, help="128: the study's runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training option for both models (data options too, e.g. data.modalities=2); repeatable")
    p.add_argument("--variants", nargs="+", default=["mmvae", "fmmvae", "fmmvae:contrast_weight=128"],
                   help="model[:key=value,...]; mmvae always gets objective=elbo, kl=analytic (the source's "
                        "elbo_naive); contrast_weight=128 = α·B puts the contrast at weight 1 per row")
    p.add_argument("--joint-samples", type=int, default=10000)
    p.add_argument("--out", default="runs/fmmvae_compare", help="folder for the run folders")
    p.add_argument("--write", default=str(ROOT / "docs/results/fmmvae.md"), help="markdown file ('' = none)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data_options = {k[5:]: v for k, v in (s.split("=", 1) for s in args.set) if k.startswith("data.")}
    splits = load_dataset(args.dataset, seed=args.seed,
                          **{k: json.loads(v) if v.lstrip("-").isdigit() else v for k, v in data_options.items()})
    names = splits.train.modalities
    if len(names) != 2:
        raise SystemExit(f"the study's table has two modalities; {args.dataset} has {names} "
                         f"(use --set data.modalities=2 for polymnist)")
    classifiers, accuracy = coherence_classifiers(splits.train, splits.test, out / "classifiers", seed=args.seed,
                                                  log=lambda *a: print(*a, file=sys.stderr))
    if not any(v == "mmvae" for v in args.variants) or not any(v.startswith("fmmvae") for v in args.variants):
        raise SystemExit("--variants needs mmvae and at least one fmmvae variant")
    results = []
    for text in args.variants:
        results.append(run_variant(text, args, out, classifiers))
        print(json.dumps(results[-1]), flush=True)
    given = list(argv if argv is not None else sys.argv[1:])
    for flag in ("--out", "--write"):                  # where files go does not change the figures
        while flag in given:
            i = given.index(flag)
            del given[i:i + 2]
    command = "OMP_NUM_THREADS=1 python bench/fmmvae_compare.py " + " ".join(given)
    text = markdown(results, names, accuracy, args, command.strip(),
                    protocol_text(PROTOCOL["max_epochs"], PROTOCOL["patience"]))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
