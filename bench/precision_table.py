"""The precision table of docs/defaults.md: float32 against bf16 autocast (``amp=bf16``, what ``amp=auto``
picks on a CPU with native bf16), each library default run with and without it as a concurrent pair at the
same wall-clock budget (``bench/quality.py --configs default,default+amp=bf16 --fresh``), scored by the
same classifiers. Reads bench/results/quality.jsonl; prints a markdown table.

    python bench/precision_table.py [--datasets mnist-label polymnist-3 mnist-fashion]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = Path(__file__).resolve().parent / "results" / "quality.jsonl"



def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def _cross(row):
    c = row.get("cross_sample") or {}
    return _mean(list(c.values()))


def _latent(row):
    """Linear-probe accuracy of the joint latent, or the mean over the unimodal ones (MEME has no joint)."""
    lat = row.get("latent") or {}
    return lat.get("joint", _mean(list(lat.values())))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["mnist-label", "polymnist-3", "mnist-fashion"])
    ap.add_argument("--budget", type=float, default=90.0)
    ap.add_argument("--rows", default=str(ROWS), help="the quality rows (default bench/results/quality.jsonl)")
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    # a pair: the float32 default and the bf16 run that trained beside it (same model, dataset, seed, budget,
    # the latest of each); "off" rows are those whose resolved config says amp off (or has no amp field)
    lines = ["| dataset | model | seeds | steps float32 → bf16 | cross coherence (samples) float32 → bf16 | "
             "joint coherence float32 → bf16 | latent accuracy (joint; MEME: mean of unimodal) float32 → bf16 |", "|---|---|---|---|---|---|---|"]
    for dataset in args.datasets:
        for model in ("mvae", "mmvae", "mopoe", "meme"):
            pairs = {}
            for r in rows:
                if (r["dataset"], r["model"], r["impl"], r["scenario"], r["budget"]) != (dataset, model, "ours", "full", args.budget):
                    continue
                amp = (r.get("resolved") or {}).get("amp", "off")
                # only the concurrent pairs: the float32 default beside its bf16 twin, and that twin
                twins = {("default", "off", f"{model}/ours/default+amp=bf16"),
                         ("default+amp=off", "off", f"{model}/ours/default+amp=bf16"),
                         ("default+amp=bf16", "bf16", f"{model}/ours/default"),
                         ("default+amp=bf16", "bf16", f"{model}/ours/default+amp=off")}
                if (r["config"], amp, r.get("partner")) not in twins:
                    continue
                pairs.setdefault(r["seed"], {}).setdefault(amp, []).append(r)
            done = {s: {a: max(v, key=lambda r: r.get("when", "")) for a, v in p.items()}
                    for s, p in pairs.items() if {"off", "bf16"} <= set(p)}
            if not done:
                continue

            def col(f, digits=2):
                a = _mean([f(p["off"]) for p in done.values()])
                b = _mean([f(p["bf16"]) for p in done.values()])
                return "–" if a is None or b is None else f"{a:.{digits}f} → {b:.{digits}f}"

            lines.append(f"| {dataset} | {model} | {len(done)} | {col(lambda r: r['steps'], 0)} | {col(_cross)} | "
                         f"{col(lambda r: r.get('joint'))} | {col(_latent)} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
