"""CMVAE (Palumbo, Manduchi, Laguna, Chopard & Vogt, ICLR 2024, "Deep generative clustering with multimodal
diffusion variational autoencoders"): MMVAE+ whose shared latent has a clustering prior
p(z) = Σ_c π_c p(z | c) (``distributions/cluster_prior.py``), clusters predicted from the unimodal
posteriors by a majority vote, and MultiVae's post-hoc selection of the number of clusters. The diffusion
decoders of the paper are not implemented (docs/models/cmvae.md says what is and is not).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from ..config import Config
from ..data.batch import Batch
from ..distributions.cluster_prior import ClusterPrior
from ..distributions.prior import prior_kind
from ..errors import UserError
from ..fusion.fusions import mixture_of_experts
from .mmvaeplus import aux_option, mmvaeplus_strata
from .private_latents import PrivateLatentVAE, build_private_model, model_option
from .registry import register_model


class CMVAE(PrivateLatentVAE):
    """MMVAE+ with ``shared_prior`` a :class:`ClusterPrior`; adds cluster prediction and selection."""

    @property
    def clusters(self) -> ClusterPrior:
        return self.shared_prior

    @torch.no_grad()
    def cluster_probabilities(self, data: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None,
                              sample: bool = True) -> dict[str, Tensor]:
        """p(c | z_m) (B, C) per modality, z_m a sample (MultiVae) or the mean of q(z | x_m)."""
        experts = self.encode_experts(Batch(dict(data), dict(mask or {})))
        return {m: self.clusters.responsibilities(q.rsample() if sample else q.mean) for m, q in experts.items()}

    @torch.no_grad()
    def predict_clusters(self, data: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None,
                         sample: bool = True) -> Tensor:
        """The cluster of each row (B,): each observed modality votes for argmax_c p(c | z_m), the most
        votes win, ties to the lower index (MultiVae's ``predict_clusters``: torch.mode over modalities)."""
        batch = Batch(dict(data), dict(mask or {}))
        probs = self.cluster_probabilities(batch.data, batch.mask, sample)
        votes = sum(torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]) * batch.mask[m].unsqueeze(-1)
                    for m, p in probs.items())
        return votes.argmax(-1)

    @torch.no_grad()
    def select_clusters(self, data, batch_size: int = 256) -> dict[int, float]:
        """Post-hoc selection of the number of clusters (MultiVae's ``prune_clusters``): from C clusters down
        to 2, score the clustering by β · H̄ − mean log p(z)/D over ``data`` (H̄: the entropy of p(c | z_m)
        normalised by the log of the clusters in use, averaged over modalities; z_m ~ q(z | x_m)), then
        remove the cluster with the fewest predicted rows. Keeps the weights of the best count and returns
        {clusters: score}."""
        prior, d = self.clusters, self.latent_dim
        scores, kept = {}, {}
        while prior.num_clusters >= 2:
            n = prior.num_clusters
            mass, total, rows = torch.zeros_like(prior.logits), 0.0, 0
            for batch in data.batches(batch_size):
                batch = batch.to(prior.logits.device)
                experts = self.encode_experts(batch)
                h, llik, seen = 0.0, 0.0, 0.0
                votes = 0
                for m, q in experts.items():
                    z, obs = q.rsample(), batch.mask[m].to(prior.logits.dtype)
                    p = prior.responsibilities(z)
                    h = h + obs * torch.special.entr(p).sum(-1) / math.log(n)
                    llik = llik + obs * prior.log_prob(z) / d
                    seen = seen + obs
                    votes = votes + torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]) * obs.unsqueeze(-1)
                mass += torch.bincount(votes.argmax(-1), minlength=mass.numel()).to(mass.dtype)
                total += float((self.beta * h / seen - llik / seen).sum())
                rows += batch.size
            scores[n], kept[n] = total / rows, prior.logits.detach().clone()
            mass[~torch.isfinite(prior.logits)] = math.inf
            prior.logits[int(mass.argmin())] = -math.inf
        best = min(scores, key=scores.get)
        prior.logits.copy_(kept[best])
        return scores


@register_model("cmvae", "Palumbo, Manduchi, Laguna, Chopard & Vogt 2024, Deep Generative Clustering with Multimodal "
                "Diffusion Variational Autoencoders",
                "MMVAE+ with a learned mixture prior (clusters) over the shared latent; cluster prediction by "
                "majority vote and post-hoc selection of the number of clusters (options clusters, private_dim, "
                "aux_prior); no diffusion decoders",
                dict(objective="dreg", kl="mc", posterior="laplace", weights="uniform"),
                min_modalities=2, options=("clusters", "private_dim", "aux_prior"))
def build_cmvae(specs, cfg: Config, encoders=None, decoders=None) -> CMVAE:
    clusters = model_option(cfg, "clusters", 10, int, lambda v: v >= 1, "an integer >= 1")
    if prior_kind(cfg.prior) != "standard":
        raise UserError(f"model 'cmvae' does not support --set prior={cfg.prior}: p(z) is its learned cluster "
                        f"mixture and p(w) is fixed (leave prior unset; --set clusters=N sets the clusters)")
    if cfg.objective == "elbo" and cfg.kl == "analytic":
        raise UserError("model 'cmvae' has a mixture prior: no closed-form KL; use --set kl=mc")
    return build_private_model(specs, cfg, mixture_of_experts, mmvaeplus_strata, encoders, decoders, cls=CMVAE,
                               aux=aux_option(cfg), stratified=True,
                               shared_prior=ClusterPrior(cfg.posterior, cfg.latent_dim, clusters))
