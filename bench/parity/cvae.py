"""CVAE: the library against MultiVae 1.0.3's ``CVAE`` (same encoder, prior network and conditional
decoder, same weights, batch and noise; float64).

    path/to/multivae-python bench/parity/cvae.py

Expected: PASS for a Gaussian and a categorical target, with the prior network and with N(0, I).
"""
from __future__ import annotations


import torch
from pythae.models.base.base_utils import ModelOutput

from common import JointEncoder, compare, toy_inputs, fixed_normal
import multivae.models.cvae.cvae_model as cvae_module
from multivae.data.datasets.base import MultimodalBaseDataset
from multivae.models.cvae import CVAE, CVAEConfig
from multivae.models.nn.base_architectures import BaseConditionalDecoder

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B = 4, 8


class ConditionalDecoder(BaseConditionalDecoder):
    def __init__(self, net):
        super().__init__()
        self.net, self.latent_dim = net, D

    def forward(self, z, cond_mods):
        return ModelOutput(reconstruction=self.net(z, cond_mods))


def main() -> int:
    x = toy_inputs(B)
    eps = torch.randn(1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ok = True
    for target, dist_name, conditional in (("a", "normal", True), ("b", "categorical", True), ("a", "normal", False)):
        torch.manual_seed(0)
        ours = build_model(SPECS, Config(model="cvae", latent_dim=D, hidden=32,
                                         extra={"target": target, "conditional_prior": conditional})).double()
        cond = [m for m in SPECS if m != target]
        cfg = CVAEConfig(conditioning_modalities=cond, main_modality=target, latent_dim=D, beta=1.0,
                         decoder_dist=dist_name, decoder_dist_params={"scale": 0.75} if dist_name == "normal" else {})
        theirs = CVAE(cfg, encoder=JointEncoder(ours.encoder, D), decoder=ConditionalDecoder(ours.decoder),
                      prior_network=JointEncoder(ours.prior_net, D) if conditional else None).double()
        loss, _ = ours.loss(Batch(dict(x)), 1.0, noise=FixedNoise({"z": eps}, seed=None))
        cvae_module.dist = fixed_normal(eps[0])
        ref = theirs(MultimodalBaseDataset(dict(x))).loss
        label = f"cvae target={target} ({dist_name}) {'prior network' if conditional else 'N(0, I) prior'}"
        ok &= compare(label, loss, ref, ours.named_parameters())
    print("ALL PASS" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
