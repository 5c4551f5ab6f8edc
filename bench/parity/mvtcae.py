"""MVTCAE: the library against MultiVae 1.0.3's ``MVTCAE`` (same networks, weights, batch and noise; float64).

    path/to/multivae-python bench/parity/mvtcae.py

Expected: identical loss and gradients (to 1e-6) on a complete batch and on a batch with missing
modalities; MultiVae and the official code define the same objective (docs/models/mvtcae.md).
"""
from __future__ import annotations

import torch

from common import Decoder, Encoder, NoiseQueue, compare, toy_inputs
import multivae.models.mvtcae.mvtcae_model as mvtcae_module
from multivae.data.datasets.base import IncompleteDataset, MultimodalBaseDataset
from multivae.models import MVTCAE, MVTCAEConfig

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B = 4, 8


def models(alpha: float, beta: float):
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="mvtcae", latent_dim=D, hidden=32, beta=beta,
                                     extra={"alpha": alpha})).double()
    cfg = MVTCAEConfig(n_modalities=3, latent_dim=D, alpha=alpha, beta=beta, uses_likelihood_rescaling=False,
                       decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                       decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = MVTCAE(cfg, encoders={m: Encoder(ours.encoders[m], D) for m in SPECS},
                    decoders={m: Decoder(ours.decoders[m]) for m in SPECS}).double()
    assert all(theirs.encoders[m].net is ours.encoders[m] for m in SPECS)   # the same modules
    return ours, theirs


def data(missing: bool):
    x = toy_inputs(B)
    mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
    if missing:
        mask["b"][[0, 1]] = False
        mask["c"][[1, 2, 5]] = False
        mask["a"][3] = False
    return x, mask


def main() -> int:
    ok = True
    for missing in (False, True):
        for alpha, beta in ((5 / 6, 2.5), (0.1, 1.0)):
            ours, theirs = models(alpha, beta)
            x, mask = data(missing)
            eps = torch.randn(1, 1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            loss, _ = ours.loss(Batch(x, mask), beta, noise=FixedNoise({"z": eps}, seed=None))
            mvtcae_module.rsample_from_gaussian = NoiseQueue([eps[0, 0]])
            inputs = IncompleteDataset(x, {m: v.clone() for m, v in mask.items()}) if missing else MultimodalBaseDataset(x)
            ref = theirs(inputs).loss
            label = f"mvtcae alpha={alpha:.3f} beta={beta} {'missing modalities' if missing else 'complete'}"
            ok &= compare(label, loss, ref, ours.named_parameters())
    print("ALL PASS" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
