"""JNF: the library against MultiVae 1.0.3's ``JNF`` (same encoders, joint encoder, decoders and MAF flows,
same weights, batch and noise; float64).

    path/to/multivae-python bench/parity/jnf.py

The flows: MultiVae's default ``pythae`` MAF (two MADE blocks of three hidden layers of 128) is built
first and its weights (masks included) are loaded into the library's MAF, whose layout is the same.
Checks, each expected to PASS:

* stage 0 (MultiVae epoch ≤ warmup; the library's ``stage`` 0): joint ELBO, loss and gradients;
* stage 1 (MultiVae epoch > warmup; ``stage`` 1): −Σ_m log q_m(z | x_m) at z from the frozen joint
  posterior, loss and gradients (the joint encoder and decoders get none on either side);
* the unimodal sampling route: T⁻¹ of a base point (MultiVae's ``encode`` with one modality);
* the unnormalised density of a subset's product of experts that HMC samples (MultiVae's
  ``_compute_poe_posterior(..., divide_prior=True)``).
"""
from __future__ import annotations


import torch

from common import Decoder, Encoder, JointEncoder, compare, toy_inputs, fixed_normal
import multivae.models.jnf.jnf_model as jnf_module
from multivae.data.datasets.base import MultimodalBaseDataset
from multivae.models import JNF, JNFConfig
from pythae.models.normalizing_flows import MAF as PythaeMAF, MAFConfig

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.distributions.noise import FixedNoise
from mmvae.data.dataset import ModalitySpec
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
D, B, WARMUP = 4, 8, 10
LAMBDA = {"a": 1.0, "b": 5 / 3, "c": 5 / 4}                 # the library's weights=rescale


def models(beta: float):
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="jnf", latent_dim=D, hidden=32, beta=beta, weights="rescale",
                                     extra={"joint_epochs": WARMUP}))
    flows = {m: PythaeMAF(MAFConfig(input_dim=(D,))) for m in SPECS}         # MultiVae's default flows
    for m, flow in flows.items():
        state = {k.replace("net.", "blocks.", 1): v for k, v in flow.state_dict().items()}
        ours.flows[m].load_state_dict(state)                                  # masks must agree too
    ours = ours.double()
    for m, flow in flows.items():                   # share the parameter objects, as the networks are shared
        for (name, mine), (_, made) in zip(ours.flows[m].blocks.named_modules(), flow.net.named_modules()):
            if isinstance(mine, torch.nn.Linear):
                made.weight, made.bias = mine.weight, mine.bias
    cfg = JNFConfig(n_modalities=3, latent_dim=D, warmup=WARMUP, beta=beta, uses_likelihood_rescaling=True,
                    rescale_factors=LAMBDA, decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                    decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = JNF(cfg, encoders={m: Encoder(ours.encoders[m], D) for m in SPECS},
                 decoders={m: Decoder(ours.decoders[m]) for m in SPECS},
                 joint_encoder=JointEncoder(ours.joint_encoder, D), flows=flows).double()
    for m in SPECS:                                 # the same weights: MultiVae's flows and ours agree exactly
        for p, q in zip(theirs.flows[m].parameters(), ours.flows[m].parameters()):
            assert torch.equal(p, q)
        for (k1, b1), (k2, b2) in zip(theirs.flows[m].named_buffers(), ours.flows[m].named_buffers()):
            assert torch.equal(b1.to(b2.dtype), b2), (k1, k2)
    return ours, theirs


def main() -> int:
    x = toy_inputs(B)
    eps = torch.randn(1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ok = True
    for beta in (1.0, 2.5):
        for stage, epoch in ((0, WARMUP), (1, WARMUP + 1)):
            ours, theirs = models(beta)
            ours.stage = stage
            loss, _ = ours.loss(Batch(dict(x)), beta, noise=FixedNoise({"z": eps}, seed=None))
            jnf_module.dist = fixed_normal(eps[0])
            ref = theirs(MultimodalBaseDataset(dict(x)), epoch=epoch).loss
            # after MultiVae's stage-1 forward the joint encoder and decoders (shared modules) no longer
            # require gradients: the comparison covers the parameters that still do
            named = [(n, p) for n, p in ours.named_parameters() if p.requires_grad]
            if stage == 1:
                frozen = {n.split(".")[0] for n, p in ours.named_parameters() if not p.requires_grad}
                assert frozen == {"joint_encoder", "decoders"}, frozen
            ok &= compare(f"jnf beta={beta} stage {stage} (MultiVae epoch {epoch}, warmup {WARMUP})", loss, ref, named)

    ours, theirs = models(1.0)
    with torch.no_grad():
        for m in SPECS:
            q = ours.flow_posterior(m, x[m])
            u = q.base.loc + q.base.scale * eps[0]
            mine, pythae = q.from_base(u), theirs.flows[m].inverse(u).out
            gap = float((mine - pythae).abs().max())
            print(f"jnf unimodal sample T_{m}⁻¹(u): max abs diff {gap:.1e} -> {'PASS' if gap <= 1e-9 else 'FAIL'}")
            ok &= gap <= 1e-9
        z = torch.randn(B, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        subset = ["a", "c"]
        mine = sum(ours.flow_posterior(m, x[m]).log_prob(z) for m in subset) - ours.prior.log_prob(z).sum(-1)
        ref = theirs._compute_poe_posterior(subset, z, x, divide_prior=True, grad=False)
        gap = float(((mine - ref).abs() / (1 + ref.abs())).max())
        print(f"jnf product-of-experts density of {'+'.join(subset)} (HMC target): rel. diff {gap:.1e} -> "
              f"{'PASS' if gap <= 1e-6 else 'FAIL'}")
        ok &= gap <= 1e-6
    print("ALL AS EXPECTED" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
