"""MHVAE: the library against MultiVae 1.0.3's ``MHVAE`` (same encoders, bottom-up, top-down, prior and
posterior blocks and decoders, same weights, batch and noise; float64).

    path/to/multivae-python bench/parity/mhvae.py

MultiVae sums its MHVAE loss over the rows of the batch; the library averages, so the comparison is
library loss × B against MultiVae's loss (gradients scaled alike). Cases: three levels and two, β ∈ {1,
0.5}, a complete batch and a partially observed one (MultiVae's ``IncompleteDataset``). Expected: PASS.
"""
from __future__ import annotations

import torch

from common import Decoder, Encoder, NoiseQueue, compare, toy_inputs
import multivae.models.mhvae.mhvae_model as mhvae_module
from multivae.data.datasets.base import IncompleteDataset, MultimodalBaseDataset
from multivae.models import MHVAE, MHVAEConfig
from multivae.models.nn.base_architectures import BaseEncoder
from pythae.models.base.base_utils import ModelOutput

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.fusion.fusions import nonempty_subsets
from mmvae.models.registry import build_model
from mmvae.nets.joint import features

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B = 4, 6
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}


class Features(BaseEncoder):
    """A library encoder as MultiVae's first MHVAE layer: its (loc, raw) heads concatenated are the features."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return ModelOutput(embedding=features(self.net(x)))


def models(levels: int, beta: float):
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="mhvae", latent_dim=D, hidden=16, weights="rescale", beta=beta,
                                     extra={"levels": levels})).double()
    ladder = ours.ladder
    cfg = MHVAEConfig(n_modalities=3, latent_dim=D, n_latent=levels, beta=beta, uses_likelihood_rescaling=True,
                      rescale_factors=LAMBDA, decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                      decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = MHVAE(cfg, encoders={m: Features(ours.encoders[m]) for m in SPECS},
                   decoders={m: Decoder(ours.decoders[m]) for m in SPECS},
                   bottom_up_blocks={m: list(ladder["bottom_up"][m][:-1]) + [Encoder(ladder["bottom_up"][m][-1], D)]
                                     for m in SPECS},
                   top_down_blocks=list(ladder["top_down"]),
                   posterior_blocks={m: [Encoder(b, D) for b in ladder["posterior"][m]] for m in SPECS},
                   prior_blocks=[Encoder(b, D) for b in ladder["prior"]]).double()
    return ours, theirs


def main() -> int:
    x = toy_inputs(B)
    subsets = nonempty_subsets(list(SPECS))
    ok = True
    for levels, beta, missing in ((3, 1.0, False), (3, 0.5, True), (2, 1.0, True)):
        mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
        if missing:
            mask["b"][[0, 1]] = False
            mask["a"][2] = False
            mask["c"][[1, 3]] = False
        ours, theirs = models(levels, beta)
        eg = torch.Generator().manual_seed(2)
        eps = {f"z{lv}": torch.randn(len(subsets), B, D, generator=eg, dtype=torch.float64)
               for lv in range(1, levels + 1)}
        loss, _ = ours.loss(Batch(dict(x), dict(mask)), beta, noise=FixedNoise(eps, seed=None))
        # MultiVae draws, subset after subset, z_L first and z_1 last
        mhvae_module.rsample_from_gaussian = NoiseQueue(
            [eps[f"z{lv}"][s] for s in range(len(subsets)) for lv in range(levels, 0, -1)])
        inputs = IncompleteDataset(dict(x), {m: v.clone() for m, v in mask.items()}) if missing \
            else MultimodalBaseDataset(dict(x))
        ref = theirs(inputs).loss
        ok &= compare(f"mhvae {levels} levels, beta={beta}, {'partially observed' if missing else 'complete'} "
                      f"batch (library loss x {B} rows)", loss * B, ref, ours.named_parameters())
    print("ALL AS EXPECTED" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
