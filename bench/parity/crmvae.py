"""CRMVAE: the library against MultiVae 1.0.3's ``CRMVAE`` (same networks, weights, batch and noise; float64).

    path/to/multivae-python bench/parity/crmvae.py

MultiVae's CRMVAE returns the loss *summed* over the batch (``total_loss.sum()``), where every other model
of both libraries averages; the script compares the library's loss with MultiVae's divided by the batch
size (a constant factor: the same optimum, learning rates scaled by B). Expected: PASS on a complete batch
and on a batch with missing modalities.
"""
from __future__ import annotations

import torch

from common import Decoder, Encoder, NoiseQueue, compare, toy_inputs
import multivae.models.crmvae.crmvae_model as crmvae_module
from multivae.data.datasets.base import IncompleteDataset, MultimodalBaseDataset
from multivae.models import CRMVAE, CRMVAEConfig

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B = 4, 8


def models(beta: float):
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="crmvae", latent_dim=D, hidden=32, beta=beta)).double()
    cfg = CRMVAEConfig(n_modalities=3, latent_dim=D, beta=beta, uses_likelihood_rescaling=False,
                       decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                       decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = CRMVAE(cfg, encoders={m: Encoder(ours.encoders[m], D) for m in SPECS},
                    decoders={m: Decoder(ours.decoders[m]) for m in SPECS}).double()
    return ours, theirs


def main() -> int:
    x = toy_inputs(B)
    g = torch.Generator().manual_seed(2)
    eps = {"z": torch.randn(1, 1, B, D, generator=g, dtype=torch.float64),
           **{f"z/{m}": torch.randn(1, B, D, generator=g, dtype=torch.float64) for m in SPECS}}
    ok = True
    for missing in (False, True):
        for beta in (2.5, 1.0):
            ours, theirs = models(beta)
            mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
            if missing:
                mask["b"][[0, 1]] = False
                mask["c"][[1, 2, 5]] = False
                mask["a"][3] = False
            loss, _ = ours.loss(Batch(dict(x), mask), beta, noise=FixedNoise(dict(eps), seed=None))
            crmvae_module.rsample_from_gaussian = NoiseQueue([eps["z"][0, 0]] + [eps[f"z/{m}"][0] for m in SPECS])
            inputs = IncompleteDataset(dict(x), {m: v.clone() for m, v in mask.items()}) if missing \
                else MultimodalBaseDataset(dict(x))
            ref = theirs(inputs).loss / B
            label = f"crmvae beta={beta} {'missing modalities' if missing else 'complete'} (MultiVae sum / B)"
            ok &= compare(label, loss, ref, ours.named_parameters())
    print("ALL PASS" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
