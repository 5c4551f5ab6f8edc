"""DMVAE: the library against MultiVae 1.0.3's ``DMVAE`` (same networks, weights, batch and noise; float64).

    path/to/multivae-python bench/parity/dmvae.py

MultiVae's model gets the library's shared and private encoders as one multi-latent encoder per modality
(log-variances 2 log(softplus(raw) + 1e-6), so both sides see the same Gaussians), its decoders, and the
library's fixed noise in MultiVae's call order (the joint ELBO: z, then w per modality; then each
modality's ELBO: z, then w per modality).

Expected: PASS at β = 1, complete and partially observed rows. At β ≠ 1 MultiVae weights the private KLs
by ``modalities_specific_betas`` (default 1) and only the shared KL by β, where the library weights every
KL by β: "differs as expected" with MultiVae's defaults, PASS with ``modalities_specific_betas`` = β.
"""
from __future__ import annotations

import torch

from common import Decoder, compare, gaussian_head, toy_inputs
import multivae.models.dmvae.dmvae_model as dmvae_module
from pythae.models.base.base_utils import ModelOutput
from multivae.data.datasets.base import IncompleteDataset, MultimodalBaseDataset
from multivae.models import DMVAE, DMVAEConfig
from multivae.models.nn.base_architectures import BaseMultilatentEncoder

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"a": ModalitySpec("a", "vector", (5,), "normal"),
         "b": ModalitySpec("b", "categorical", (3,), "categorical", num_classes=3),
         "c": ModalitySpec("c", "vector", (4,), "laplace")}
NAMES = list(SPECS)
S, P, B = 4, 2, 8
D = S + len(NAMES) * P


class MultiLatentEncoder(BaseMultilatentEncoder):
    """The library's shared and private encoders of one modality as one MultiVae multi-latent encoder."""

    def __init__(self, shared, private):
        super().__init__()
        self.shared, self.private = shared, private
        self.latent_dim, self.style_dim = S, P

    def forward(self, x):
        loc, log_var = gaussian_head(self.shared(x), S)
        ploc, plog_var = gaussian_head(self.private(x), P)
        return ModelOutput(embedding=loc, log_covariance=log_var, style_embedding=ploc, style_log_covariance=plog_var)


class NoiseQueue:
    """Replaces MultiVae's ``rsample_from_gaussian``: hands out the given ε in call order."""

    def __init__(self, eps: list):
        self.eps = list(eps)

    def __call__(self, mu, log_var, N=1, return_mean=False, flatten=False):
        return mu + torch.exp(0.5 * log_var) * self.eps.pop(0)


def models(beta: float, private_betas: bool):
    torch.manual_seed(0)
    ours = build_model(SPECS, Config(model="dmvae", latent_dim=S, hidden=16, beta=beta, weights="rescale",
                                     extra={"private_dim": P})).double()
    cfg = DMVAEConfig(n_modalities=3, latent_dim=S, beta=beta, modalities_specific_dim={m: P for m in NAMES},
                      modalities_specific_betas={m: beta for m in NAMES} if private_betas else None,
                      uses_likelihood_rescaling=True, rescale_factors=dict(ours.weights),
                      decoders_dist={"a": "normal", "b": "categorical", "c": "laplace"},
                      decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = DMVAE(cfg, encoders={m: MultiLatentEncoder(ours.encoders[m], ours.private_encoders[m]) for m in NAMES},
                   decoders={m: Decoder(ours.decoders[m]) for m in NAMES}).double()
    return ours, theirs


def queue(eps: torch.Tensor) -> list:
    """Per ELBO (joint, then each modality's expert): the shared ε, then each modality's private ε."""
    return [part for g in range(len(NAMES) + 1) for part in
            [eps[0, g, :, :S]] + [eps[0, g, :, S + i * P: S + (i + 1) * P] for i in range(len(NAMES))]]


def explained_gap(model, batch: Batch, beta: float, gap: float) -> bool:
    """MultiVae − library = (1 − β) · mean_rows Σ_ELBOs weight · Σ_observed m KL(q(w_m | x_m) ‖ N(0, I))."""
    with torch.no_grad():
        private = model.encode_private(batch)
        kls = sum(batch.mask[m] * torch.distributions.kl_divergence(q, model.private_prior(m)).sum(-1)
                  for m, q in private.items())
        elbos = 1 + sum(batch.mask[m].double() for m in NAMES)          # the joint ELBO + observed experts'
        predicted = float(((1 - beta) * elbos * kls).mean())
    same = abs(predicted - gap) <= 1e-6 * (1 + abs(gap))
    print(f"  gap {gap:.10f} = (1 − β) × private KLs {predicted:.10f}: {'yes' if same else 'NO'}")
    return same


def main() -> int:
    x = toy_inputs(B)
    eps = torch.randn(1, len(NAMES) + 1, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ok = True
    for missing in (False, True):
        mask = {m: torch.ones(B, dtype=torch.bool) for m in NAMES}
        if missing:
            mask["b"][[0, 1]] = False
            mask["c"][[1, 2, 5]] = False
            mask["a"][3] = False
        for beta, private_betas, expect in ((1.0, False, True), (0.5, False, False), (0.5, True, True)):
            ours, theirs = models(beta, private_betas)
            loss, _ = ours.loss(Batch(dict(x), mask), beta, noise=FixedNoise({"z": eps}, seed=None))
            dmvae_module.rsample_from_gaussian = NoiseQueue(queue(eps))
            inputs = IncompleteDataset(dict(x), {m: v.clone() for m, v in mask.items()}) if missing \
                else MultimodalBaseDataset(dict(x))
            ref = theirs(inputs).loss
            label = (f"dmvae beta={beta} {'missing modalities' if missing else 'complete'} (MultiVae "
                     f"modalities_specific_betas={'beta' if private_betas else 'default 1'})")
            ok &= compare(label, loss, ref, ours.named_parameters(), expect_equal=expect)
            if not expect:                    # the gap is (1 − β) × the private KLs of every ELBO
                ok &= explained_gap(ours, Batch(dict(x), mask), beta, float((ref - loss).detach()))
    print("ALL AS EXPECTED" if ok else "SOME UNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
