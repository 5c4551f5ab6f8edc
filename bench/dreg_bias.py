"""Bias of DReG estimators against the plain IWAE gradient (docs/models/dreg.md).

For each model and KL weight β, the encoder gradient of an estimator and the IWAE gradient are computed
on the same draws (FixedNoise, one seed per draw); the mean of their difference is compared with 0
coordinate by coordinate in units of its standard error. For an unbiased estimator the mean square z
stays near 1 whatever the number of draws; for a biased one it grows in proportion to the draws.
The encoders are free parameters (one (loc, raw scale) per modality), as in tests/test_estimators.py.

    OMP_NUM_THREADS=1 python bench/dreg_bias.py                  # the table of docs/models/dreg.md
    OMP_NUM_THREADS=1 python bench/dreg_bias.py --draws 24,96 --models mmvae
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from mmvae.config import Config
from mmvae.data.toy import toy_bimodal
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model
from mmvae.objectives.estimators import IWAE, AuthorsDReG, DReG

TABLES = {"a": ([0.6, -0.4, 0.3, 0.0], [0.2, -0.3, 0.0, 0.4]), "b": ([-0.2, 0.5, -0.6, 0.3], [-0.2, 0.1, 0.3, -0.4])}


class Table(nn.Module):
    """An encoder whose output is a parameter (loc, raw scale), the same for every row."""

    def __init__(self, loc, raw):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(loc + raw))

    def forward(self, x):
        return self.p.expand(x.shape[0], -1)


def model_and_batch(data, name: str, posterior: str | None, rows: int):
    names = ["a"] if name == "vae" else ["a", "b"]
    torch.manual_seed(0)
    cfg = Config(model=name, latent_dim=4, hidden=32, objective="iwae", k=5,
                 **({"posterior": posterior} if posterior else {}))
    model = build_model({m: data.specs[m] for m in names}, cfg, encoders={m: Table(*TABLES[m]) for m in names})
    return model, data.train.batch(slice(0, rows)).select(names)


def use(model, estimator):
    if hasattr(model.objective, "inner"):
        model.objective.inner = estimator
    else:
        model.objective = estimator


def grad(model, batch, beta, noise):
    model.zero_grad(set_to_none=True)
    model.loss(batch, beta, noise=noise)[0].backward()
    return torch.cat([p.grad.flatten() for p in model.encoders.parameters()])


def differences(model, batch, estimator, beta, draws):
    out = []
    for d in range(draws):
        noise = FixedNoise(seed=d)
        use(model, IWAE(k=5))
        plain = grad(model, batch, beta, noise)
        use(model, estimator)
        out.append(grad(model, batch, beta, noise) - plain)
    return torch.stack(out)


def z2(diff):
    z = diff.mean(0) / (diff.std(0) / math.sqrt(diff.shape[0]))
    return float((z ** 2).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mmvae,mmvae:normal,mopoe", help="model[:posterior],...")
    ap.add_argument("--betas", default="0.3,1")
    ap.add_argument("--draws", default="24,96,384", help="numbers of draws (prefixes of one run of the largest)")
    ap.add_argument("--classes", type=int, default=3, help="classes of the toy data (3: the tests' batch)")
    ap.add_argument("--rows", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = toy_bimodal(n=500, dim=4, classes=args.classes)
    counts = [int(x) for x in args.draws.split(",")]
    print(f"mean z² of (estimator − IWAE) encoder gradients, toy data with {args.classes} classes, "
          f"{args.rows} rows, K = 5; draws {counts}")
    print("| model | β | estimator | " + " | ".join(f"{n} draws" for n in counts) + " |")
    print("|---|---|---|" + "---|" * len(counts))
    for spec in args.models.split(","):
        name, _, posterior = spec.partition(":")
        for beta in (float(b) for b in args.betas.split(",")):
            for est in (DReG(k=5), AuthorsDReG(k=5)):
                start = time.time()
                model, batch = model_and_batch(data, name, posterior or None, args.rows)
                diff = differences(model, batch, est, beta, max(counts))
                cells = " | ".join(f"{z2(diff[:n]):.2f}" for n in counts)
                print(f"| {spec} | {beta:g} | {est.name} | {cells} |  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
