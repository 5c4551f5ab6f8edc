"""CMVAE: the library against MultiVae 1.0.3's ``CMVAE`` (same networks, weights, batch and noise; float64).

    path/to/multivae-python bench/parity/cmvae.py

As bench/parity/mmvaeplus.py, with MultiVae's cluster weights and centres copied from the library's
cluster prior. MultiVae writes the prior term as the explicit expectation over q(c | z, X) = p(c | z)
(with q + 1e-20 inside the log), the library as log Σ_c π_c p(z | c): the same function.

Expected: MultiVae adds 1e-6 to the scales of the clusters, p(w) and r_n (the library does not): gaps
below 1e-6 (loss ~1e-8, gradients ~5e-7); with that constant removed on MultiVae's side, PASS for iwae and for the authors' DReG
(library ``dreg-authors``), complete and partially observed rows; the constant float32 log M gap as for
MMVAE+. The library's default ``dreg`` differs by design (docs/models/dreg.md).
"""
from __future__ import annotations

import torch

from common import Decoder
from multivae.models import CMVAE, CMVAEConfig
from mmvaeplus import NAMES, SPECS, K, P, S, MultiLatentEncoder, QueuedLaplace, Variant, main, queue

from mmvae.config import Config
from mmvae.models.registry import build_model

C = 5


def models(objective: str, loss: str, beta: float, exact_prior_scales: bool):
    torch.manual_seed(0)
    cfg = Config(model="cmvae", latent_dim=S, hidden=16, objective=objective, k=K, beta=beta, weights="rescale",
                 extra={"private_dim": P, "clusters": C})
    ours = build_model(SPECS, cfg).double()
    with torch.no_grad():
        ours.clusters.logits.copy_(torch.linspace(-0.5, 0.5, C))
        for i, m in enumerate(NAMES):
            ours.aux[m].scale_logits.copy_(torch.linspace(0.3, -0.3, P) * (i + 1))
    mv = CMVAEConfig(n_modalities=3, latent_dim=S, modalities_specific_dim=P, K=K, beta=beta, loss=loss,
                     number_of_clusters=C, prior_and_posterior_dist="laplace_with_softmax", learn_modality_prior=True,
                     uses_likelihood_rescaling=True, rescale_factors=dict(ours.weights),
                     decoders_dist={"a": "laplace", "b": "categorical", "c": "normal"},
                     decoder_dist_params={"a": {"scale": 0.75}, "c": {"scale": 0.75}})
    theirs = CMVAE(mv, encoders={m: MultiLatentEncoder(ours.encoders[m], ours.private_encoders[m]) for m in NAMES},
                   decoders={m: Decoder(ours.decoders[m]) for m in NAMES}).double()
    with torch.no_grad():
        theirs._pc_params.copy_(ours.clusters.logits)
        for c in range(C):
            theirs.mean_clusters[c].copy_(ours.clusters.centres[c][None])
        for m in NAMES:
            theirs.r_logvars_priors[m].copy_(ours.aux[m].scale_logits[None])
    if exact_prior_scales:                    # drop MultiVae's + 1e-6 on the prior scales (not the posteriors')
        priors = {id(p) for p in [*theirs.r_logvars_priors.values(), theirs.w_logvar_prior, *theirs.logvar_clusters]}
        std = theirs._log_var_to_std
        theirs._log_var_to_std = lambda lv: std(lv) - 1e-6 if id(lv) in priors else std(lv)
    return ours, theirs


def paired_params(ours, theirs):
    """(name, ours, theirs): networks shared; cluster weights, centres (one tensor per cluster in MultiVae)
    and r_n copied."""
    pairs = [(n, p, p) for n, p in ours.named_parameters() if not n.startswith(("shared_prior", "aux"))]
    pairs.append(("cluster weights", ours.clusters.logits, theirs._pc_params))
    pairs.append(("cluster centres", ours.clusters.centres, list(theirs.mean_clusters)))
    pairs += [(f"r_{m}", ours.aux[m].scale_logits, theirs.r_logvars_priors[m]) for m in NAMES]
    return pairs


def set_noise(theirs, eps):
    theirs.latent_dist = QueuedLaplace(queue(eps))


if __name__ == "__main__":
    raise SystemExit(main(Variant("cmvae", models, paired_params, set_noise)))
