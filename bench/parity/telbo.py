"""TELBO: the library against MultiVae 1.0.3's ``TELBO`` (same networks incl. the joint encoder, same
weights, batch and noise; float64).

    path/to/multivae-python bench/parity/telbo.py

MultiVae trains TELBO in two stages: up to ``warmup`` epochs the joint ELBO (joint encoder + decoders),
then, with those frozen, the unimodal ELBOs (unimodal encoders). The library follows the paper: one stage,
all ELBOs summed, the unimodal ELBOs with the decoders held fixed. So:

* stage 1: the library's gradients for the joint encoder and the decoders, and its joint ELBO value,
  equal MultiVae's stage-1 loss (the unimodal ELBOs do not reach those parameters) -> PASS expected;
* stage 2: the library's gradients for the unimodal encoders and its unimodal ELBOs against MultiVae's
  stage-2 loss -> differ as expected: MultiVae's unimodal KL uses the *joint* posterior's log-variance
  (``1 + log_var - mod_mu**2 - mod_log_var.exp()``, a bug); the gap is exactly
  Σ_m mean_b −½ Σ_d (log σ²_joint − log σ²_m), and removing it gives PASS.
"""
from __future__ import annotations

import torch

from common import Decoder, Encoder, JointEncoder, NoiseQueue, gaussian_head, grad_gap, report, toy_inputs
import multivae.models.telbo.telbo_model as telbo_module
from multivae.data.datasets.base import MultimodalBaseDataset
from multivae.models import TELBO, TELBOConfig

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B, WARMUP = 4, 8, 5


def models():
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="telbo", latent_dim=D, hidden=32)).double()
    cfg = TELBOConfig(n_modalities=3, latent_dim=D, warmup=WARMUP, uses_likelihood_rescaling=False,
                      decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                      decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = TELBO(cfg, encoders={m: Encoder(ours.encoders[m], D) for m in SPECS},
                   decoders={m: Decoder(ours.decoders[m]) for m in SPECS},
                   joint_encoder=JointEncoder(ours.joint_encoder, D)).double()
    return ours, theirs


def main() -> int:
    x = toy_inputs(B)
    g = torch.Generator().manual_seed(2)
    eps = {"z": torch.randn(1, B, D, generator=g, dtype=torch.float64),
           **{f"z/{m}": torch.randn(1, B, D, generator=g, dtype=torch.float64) for m in SPECS}}
    ok = True
    beta = 1.0                                    # MultiVae's TELBO has no KL weight
    ours, theirs = models()
    loss, logs = ours.loss(Batch(dict(x)), beta, noise=FixedNoise(dict(eps), seed=None))
    joint_params = [(n, p) for n, p in ours.named_parameters() if n.startswith(("joint_encoder.", "decoders."))]
    unimodal_params = [(n, p) for n, p in ours.named_parameters() if n.startswith("encoders.")]

    # stage 1 (epoch <= warmup): the joint ELBO
    telbo_module.rsample_from_gaussian = NoiseQueue([eps["z"][0]])
    stage1 = theirs(MultimodalBaseDataset(dict(x)), epoch=1).loss
    ok &= report("telbo stage 1 (joint ELBO; joint encoder + decoders)", -logs["joint_bound"],
                 stage1, len(joint_params), grad_gap(loss, stage1, joint_params))

    # stage 2 (epoch > warmup): the unimodal ELBOs, joint encoder and decoders frozen by MultiVae
    telbo_module.rsample_from_gaussian = NoiseQueue([eps["z"][0]] + [eps[f"z/{m}"][0] for m in SPECS])
    stage2 = theirs(MultimodalBaseDataset(dict(x)), epoch=WARMUP + 1).loss
    for p in ours.parameters():                                      # MultiVae froze the shared modules
        p.requires_grad_(True)
    ok &= report("telbo stage 2 (unimodal ELBOs; unimodal encoders)", -logs["unimodal_bound"],
                 stage2, len(unimodal_params), grad_gap(loss, stage2, unimodal_params), expect_equal=False)
    with torch.no_grad():
        joint_log_var = gaussian_head(ours.joint_encoder(x), D)[1]
    bug = sum(-0.5 * (joint_log_var - gaussian_head(ours.encoders[m](x[m]), D)[1]).sum() for m in SPECS) / B
    print(f"  MultiVae − library = {float((stage2 + logs['unimodal_bound']).detach()):.10f}; "
          f"Σ_m mean −½ Σ_d (log σ²_joint − log σ²_m) = {float(bug.detach()):.10f}")
    ok &= report("telbo stage 2 with MultiVae's unimodal KL corrected", -logs["unimodal_bound"], stage2 - bug,
                 len(unimodal_params), grad_gap(loss, stage2 - bug, unimodal_params))
    print("ALL AS EXPECTED" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
