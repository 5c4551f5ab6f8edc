"""Speed of evaluation against MultiVae on the *same* networks, weights and data (issue 4, item 7).

The model is an MMVAE (Laplace posteriors and prior, softmax-normalised scales, Laplace likelihood with
scale 0.75) built by mmvae; MultiVae's MMVAE is then built around the very same encoder and decoder
modules (thin wrappers that return MultiVae's ModelOutput), so both libraries evaluate one model:

* joint log-likelihood, K importance samples: ours (``importance_log_likelihood``, batched over rows and
  samples) against MultiVae's ``MMVAE.compute_joint_nll`` (one data point at a time, ``batch_size_K``
  samples per pass);
* coherence (cross + joint): ours (``cross_coherence`` + ``joint_coherence``) against MultiVae's
  ``CoherenceEvaluator.eval()``, both with the same classifiers.

Run with the MultiVae environment (mmvae from this checkout on the path):

    PYTHONPATH=src OMP_NUM_THREADS=1 $MULTIVAE_PYTHON bench/eval_speed.py --threads 1

Prints a Markdown table (points per second and the ratio) and writes it to --out if given.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.registry import load_dataset
from mmvae.evaluation.classifiers import coherence_classifiers
from mmvae.evaluation.coherence import cross_coherence, joint_coherence
from mmvae.evaluation.likelihood import default_sample_chunk, importance_log_likelihood
from mmvae.models.registry import build_model
from mmvae.nets.mlp import MLPDecoder, MLPEncoder


def build_ours(dataset: str, data_options: dict, latent: int, hidden: int, train_steps: int, seed: int,
               mlp: bool = False):
    """An mmvae MMVAE, trained for a few steps so that the numbers compared are those of a real model.
    ``mlp``: MMVAE's MNIST networks (one hidden layer of ``hidden``) instead of the default conv nets."""
    splits = load_dataset(dataset, seed=seed, **data_options)
    cfg = Config(model="mmvae", dataset=dataset, latent_dim=latent, hidden=hidden, seed=seed,
                 weights="uniform")
    torch.manual_seed(seed)
    model = build_model(splits.specs, cfg)
    if mlp:
        for m, spec in splits.specs.items():
            model.encoders[m] = MLPEncoder(spec.shape, latent, (hidden,))
            model.decoders[m] = MLPDecoder(spec.shape, latent, (hidden,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    step = 0
    while step < train_steps:
        for batch in splits.train.batches(64, shuffle=True, generator=g):
            loss, _ = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= train_steps:
                break
    return model.eval(), splits


def multivae_twin(model, specs):
    """MultiVae's MMVAE around our encoder/decoder modules (same weights)."""
    from multivae.models import MMVAE, MMVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net):
            BaseEncoder.__init__(self)
            self.net = net

        def forward(self, x):
            loc, raw = self.net(x)
            # MultiVae's "laplace_with_softmax" maps log_covariance to softmax(.) * D + 1e-6: our raw scale.
            return ModelOutput(embedding=loc, log_covariance=raw)

    class Decoder(BaseDecoder):
        def __init__(self, net, squash):  # our Normal/Laplace image likelihoods take sigmoid(output) as mean
            BaseDecoder.__init__(self)
            self.net, self.squash = net, squash

        def forward(self, z):
            lead = z.shape[:-1]
            out = self.net(z.reshape(-1, z.shape[-1]))
            out = torch.sigmoid(out) if self.squash else out
            return ModelOutput(reconstruction=out.reshape(*lead, *out.shape[1:]))

    names = list(specs)
    cfg = MMVAEConfig(n_modalities=len(names), latent_dim=model.latent_dim,
                      input_dims={m: tuple(specs[m].shape) for m in names},
                      decoders_dist={m: model.likelihoods[m].name for m in names},
                      decoder_dist_params={m: {"scale": model.likelihoods[m].fixed_scale} for m in names
                                           if model.likelihoods[m].name in ("normal", "laplace")},
                      prior_and_posterior_dist="laplace_with_softmax", learn_prior=False, K=10)
    twin = MMVAE(cfg, encoders={m: Encoder(model.encoders[m]) for m in names},
                 decoders={m: Decoder(model.decoders[m], getattr(model.likelihoods[m], "squash", False))
                           for m in names})
    return twin.eval()


def mv_dataset(data, rows):
    from multivae.data.datasets.base import MultimodalBaseDataset

    return MultimodalBaseDataset({m: data.data[m][rows] for m in data.modalities}, data.label[rows])


def best_of(jobs: dict, repeats: int) -> tuple[dict, dict]:
    """Run the jobs interleaved ``repeats`` times; the best (smallest) wall time of each and its last
    result. Interleaving and taking the minimum keeps a shared, loaded machine from favouring one side."""
    times = {name: math.inf for name in jobs}
    results = {}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            results[name] = job()
            times[name] = min(times[name], time.perf_counter() - start)
    return times, results


def time_likelihood(model, twin, test, k: int, n_ours: int, n_theirs: int, row_chunk: int, repeats: int):
    """Our estimator with the library's default chunking (``evaluate`` uses the same) against MultiVae's."""
    names = test.modalities
    sample_chunk = default_sample_chunk(test, k, row_chunk)
    batch = test.batch(torch.arange(n_ours))
    inputs = mv_dataset(test, torch.arange(n_theirs))

    def ours():
        return torch.cat([importance_log_likelihood(model, Batch({m: batch.data[m][i:i + row_chunk] for m in names}),
                                                    list(range(i, min(i + row_chunk, n_ours))), k, sample_chunk)
                          for i in range(0, n_ours, row_chunk)])

    def theirs():
        with torch.no_grad():
            return float(twin.compute_joint_nll(inputs, K=k, batch_size_K=100))

    torch.manual_seed(0)
    np.random.seed(0)
    t, r = best_of({"ours": ours, "theirs": theirs}, repeats)
    return {"ours_pps": n_ours / t["ours"], "theirs_pps": n_theirs / t["theirs"],
            "ours_mean": float(r["ours"][:n_theirs].mean()), "theirs_mean": -r["theirs"] / n_theirs}


def time_coherence(model, twin, splits, joint_samples: int, classifier_epochs: int, repeats: int):
    from multivae.metrics import CoherenceEvaluator, CoherenceEvaluatorConfig

    nets, acc = coherence_classifiers(splits.train, splits.test, None, classifier_epochs, 0, "cpu", log=lambda *a: None)
    test = splits.test

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    cfg = CoherenceEvaluatorConfig(batch_size=512, num_classes=int(test.num_classes), nb_samples_for_joint=joint_samples)
    evaluator = CoherenceEvaluator(twin, {m: Logits(nets[m]) for m in test.modalities},
                                   mv_dataset(test, torch.arange(len(test))), eval_config=cfg)

    def ours():
        cross, _ = cross_coherence(model, test, nets, "cpu", batch_size=512)
        return cross, joint_coherence(model, nets, joint_samples, batch_size=512)

    t, r = best_of({"ours": ours, "theirs": evaluator.eval}, repeats)
    out = r["theirs"]
    theirs_cross = {k: float(v) for k, v in out.items() if "_to_" in k}
    theirs_joint = float(next(v for k, v in out.items() if k.startswith("joint_coherence")))
    return {"ours_s": t["ours"], "theirs_s": t["theirs"], "rows": len(test), "ours_cross": r["ours"][0],
            "ours_joint": r["ours"][1], "theirs_cross": theirs_cross, "theirs_joint": theirs_joint,
            "classifier_acc": acc}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--joint-samples", type=int, default=2000)
    p.add_argument("--setups", default="toy,polymnist-mlp,polymnist")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the number of timed points")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best time is kept")
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # name: dataset, options, latent, hidden, MLP nets, chunks, points timed (ours, MultiVae's)
    setups = {
        # Toy vectors (16-d), MLPs 16-128-128, latent 8: small networks, per-call overhead dominates.
        "toy": ("toy", {"n": 2000}, 8, 128, False, dict(row_chunk=16), (128, 32)),
        # PolyMNIST, 2 modalities of 3x28x28, MMVAE's MNIST-sized MLPs (2352-400-20), latent 20.
        "polymnist-mlp": ("polymnist", {"modalities": 2, "n": 2000}, 20, 400, True,
                          dict(row_chunk=16), (16, 8)),
        # The same data with the default conv networks (MEME App. K): compute-bound.
        "polymnist": ("polymnist", {"modalities": 2, "n": 2000}, 20, 512, False,
                      dict(row_chunk=8), (8, 4)),
    }
    lines = [f"K = {args.k}; torch threads = {args.threads}; torch {torch.__version__}; seed {args.seed}; "
             f"best of {args.repeats} interleaved runs", "",
             "| setup | metric | mmvae (points/s) | MultiVae (points/s) | ratio | mmvae value | MultiVae value |",
             "|---|---|---|---|---|---|---|"]
    for name in args.setups.split(","):
        dataset, options, latent, hidden, mlp, chunks, (n_ours, n_theirs) = setups[name]
        model, splits = build_ours(dataset, options, latent, hidden, args.train_steps, args.seed, mlp)
        twin = multivae_twin(model, splits.specs)
        n_ours, n_theirs = max(1, int(n_ours * args.scale)), max(1, int(n_theirs * args.scale))
        ll = time_likelihood(model, twin, splits.test, args.k, n_ours, n_theirs, repeats=args.repeats, **chunks)
        lines.append(f"| {name} | joint log-likelihood | {ll['ours_pps']:.1f} | {ll['theirs_pps']:.2f} | "
                     f"{ll['ours_pps'] / ll['theirs_pps']:.1f}x | {ll['ours_mean']:.2f} | {ll['theirs_mean']:.2f} |")
        print(lines[-1], flush=True)
        co = time_coherence(model, twin, splits, args.joint_samples, classifier_epochs=2, repeats=args.repeats)
        rows = co["rows"]
        ours_c = " / ".join(f"{v:.3f}" for v in co["ours_cross"].values()) + f", joint {co['ours_joint']:.3f}"
        theirs_c = " / ".join(f"{v:.3f}" for v in co["theirs_cross"].values()) + f", joint {co['theirs_joint']:.3f}"
        lines.append(f"| {name} | coherence ({rows} test rows + {args.joint_samples} prior samples) | "
                     f"{rows / co['ours_s']:.0f} | {rows / co['theirs_s']:.0f} | {co['theirs_s'] / co['ours_s']:.1f}x | "
                     f"{ours_c} | {theirs_c} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
