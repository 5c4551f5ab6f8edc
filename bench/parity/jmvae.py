"""JMVAE: the library against MultiVae 1.0.3's ``JMVAE`` (same networks incl. the joint encoder, same
weights, batch and noise; float64).

    path/to/multivae-python bench/parity/jmvae.py

Expected: after the warm-up (MultiVae's annealing factor 1, the library's β = 1) identical loss and
gradients. During the warm-up they differ by design: MultiVae anneals the JM terms α Σ KL(q(z|X)‖q(z|x_m))
together with the prior KL; the library anneals the prior KL only, as the official code
(``annealing_beta * kl``). The script checks that the difference is exactly (1 − a)·α·mean Σ_m KL_m.
"""
from __future__ import annotations


import torch

from common import Decoder, Encoder, JointEncoder, compare, toy_inputs, fixed_normal
import multivae.models.jmvae.jmvae_model as jmvae_module
from multivae.data.datasets.base import MultimodalBaseDataset
from multivae.models import JMVAE, JMVAEConfig

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B, WARMUP = 4, 8, 10


def models(alpha: float):
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="jmvae", latent_dim=D, hidden=32, extra={"alpha": alpha})).double()
    cfg = JMVAEConfig(n_modalities=3, latent_dim=D, alpha=alpha, warmup=WARMUP, beta=1.0,
                      uses_likelihood_rescaling=False,
                      decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                      decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = JMVAE(cfg, encoders={m: Encoder(ours.encoders[m], D) for m in SPECS},
                   decoders={m: Decoder(ours.decoders[m]) for m in SPECS},
                   joint_encoder=JointEncoder(ours.joint_encoder, D)).double()
    assert theirs.joint_encoder.net is ours.joint_encoder
    return ours, theirs


def main() -> int:
    x = toy_inputs(B)
    ok = True
    for alpha in (0.1, 1.0):
        for epoch in (WARMUP, 3):
            ours, theirs = models(alpha)
            a = min(1.0, epoch / WARMUP)                                   # MultiVae's annealing factor
            eps = torch.randn(1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            loss, logs = ours.loss(Batch(dict(x)), a, noise=FixedNoise({"z": eps}, seed=None))
            jmvae_module.dist = fixed_normal(eps[0])
            ref = theirs(MultimodalBaseDataset(dict(x)), epoch=epoch).loss
            label = f"jmvae alpha={alpha} epoch {epoch}/{WARMUP} (annealing {a:.1f})"
            if a == 1.0:
                ok &= compare(label, loss, ref, ours.named_parameters())
            else:
                ok &= compare(label, loss, ref, ours.named_parameters(), expect_equal=False)
                gap = float((loss - ref).detach())
                want = (1 - a) * alpha * float(logs["kl_jm"])
                same = abs(gap - want) <= 1e-9 * (1 + abs(want))
                print(f"  loss(ours) − loss(MultiVae) = {gap:.10f}; (1 − a)·α·mean Σ_m KL_m = {want:.10f} -> "
                      f"{'explained' if same else 'NOT explained'}")
                ok &= same
    print("ALL AS EXPECTED" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
