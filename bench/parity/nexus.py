"""Nexus: the library against MultiVae 1.0.3's ``Nexus`` (same bottom encoders and decoders, message
encoders, nexus encoder and top decoders, same weights, batch and noise; float64).

    path/to/multivae-python bench/parity/nexus.py

Cases: a complete batch and a partially observed one (MultiVae's ``IncompleteDataset``), each at the end
of the warm-up (annealing 1) and inside it (MultiVae epoch 3 of 20: annealing 0.15 on both levels' KLs;
the library: β_t = 0.15 β). Forced perceptual dropout is off (rate 0): MultiVae draws it with numpy's and
torch's global generators per row, the library through its noise providers; its distribution is checked
in tests/test_model_nexus.py against the official ``mean_drop``. Every case is expected to PASS.
"""
from __future__ import annotations

import torch

from common import Decoder, Encoder, NoiseQueue, compare, toy_inputs
import multivae.models.nexus.nexus_model as nexus_module
from multivae.data.datasets.base import IncompleteDataset, MultimodalBaseDataset
from multivae.models import Nexus, NexusConfig
from multivae.models.nn.base_architectures import BaseEncoder
from pythae.models.base.base_utils import ModelOutput

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, DM, B, WARMUP, TOP_BETA = 4, 3, 8, 20, 1.5
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}
BOTTOM_BETA, GAMMA = 0.7, 2.0


class Message(BaseEncoder):
    """A library message network z_m -> f_m(z_m) as MultiVae's top encoder (its embedding is the message)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return ModelOutput(embedding=self.net(z), log_covariance=None)


def models():
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="nexus", latent_dim=D, hidden=16, weights="rescale", beta=TOP_BETA,
                                     extra={"modality_dim": DM, "message_dim": 6, "dropout": 0.0,
                                            "bottom_beta": BOTTOM_BETA, "gamma": GAMMA})).double()
    cfg = NexusConfig(n_modalities=3, latent_dim=D, uses_likelihood_rescaling=True, rescale_factors=LAMBDA,
                      decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                      decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}},
                      modalities_specific_dim={m: DM for m in SPECS}, msg_dim=6, dropout_rate=0.0,
                      bottom_betas={m: BOTTOM_BETA for m in SPECS}, gammas={m: GAMMA for m in SPECS},
                      top_beta=TOP_BETA, warmup=WARMUP)
    theirs = Nexus(cfg, encoders={m: Encoder(ours.encoders[m], DM) for m in SPECS},
                   decoders={m: Decoder(ours.decoders[m]) for m in SPECS},
                   top_encoders={m: Message(ours.messages[m]) for m in SPECS},
                   joint_encoder=Encoder(ours.nexus_encoder, D),
                   top_decoders={m: Decoder(ours.top_decoders[m]) for m in SPECS}).double()
    return ours, theirs


def main() -> int:
    x = toy_inputs(B)
    ok = True
    for missing in (False, True):
        mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
        if missing:
            mask["b"][[0, 1]] = False
            mask["a"][2] = False
            mask["c"][[1, 3]] = False
        for epoch in (WARMUP, 3):
            ours, theirs = models()
            annealing = min(epoch / WARMUP, 1.0)                                   # MultiVae's factor
            eg = torch.Generator().manual_seed(2)
            eps = {f"z/{m}": torch.randn(B, DM, generator=eg, dtype=torch.float64) for m in SPECS}
            eps["nexus"] = torch.randn(B, D, generator=eg, dtype=torch.float64)
            loss, _ = ours.loss(Batch(dict(x), dict(mask)), TOP_BETA * annealing, noise=FixedNoise(eps, seed=None))
            nexus_module.rsample_from_gaussian = NoiseQueue([eps[f"z/{m}"] for m in SPECS] + [eps["nexus"]])
            inputs = IncompleteDataset(dict(x), {m: v.clone() for m, v in mask.items()}) if missing \
                else MultimodalBaseDataset(dict(x))
            ref = theirs(inputs, epoch=epoch).loss
            ok &= compare(f"nexus {'partially observed' if missing else 'complete'} batch, MultiVae epoch {epoch} "
                          f"of warm-up {WARMUP} (annealing {annealing:.2f})", loss, ref, ours.named_parameters())
    print("ALL AS EXPECTED" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
