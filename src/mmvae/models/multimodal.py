"""One multimodal VAE = modalities (encoder, decoder, likelihood each) + a fusion + an estimator.

Every fusion-based model of the library (vae, mvae, mmvae, mopoe) is this class with a different fusion
and objective; see ``models/registry.py``. The same object offers the user API: encode, reconstruct,
translate from any subset of modalities, and generate.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..data.batch import Batch
from ..data.dataset import ModalitySpec
from ..distributions.likelihoods import make_likelihood
from ..distributions.posteriors import make_posterior
from ..distributions.prior import Prior
from ..fusion.mixture import DiagonalMixture
from ..nets.registry import default_networks


def modality_weights(specs: Mapping[str, ModalitySpec], weights) -> dict[str, float]:
    """λ_m: ``uniform`` (1 each), ``rescale`` (largest dimension / own dimension, the likelihood
    rescaling of MMVAE and MultiVae, e.g. 3072/784 for MNIST against SVHN), or an explicit mapping
    (missing modalities get 1)."""
    import math

    if weights in (None, "uniform"):
        return {m: 1.0 for m in specs}
    if weights == "rescale":
        dims = {m: math.prod(s.shape) for m, s in specs.items()}
        top = max(dims.values())
        return {m: top / d for m, d in dims.items()}
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(specs)
        if unknown:
            raise ValueError(f"weights given for unknown modalities {sorted(unknown)}; modalities: {list(specs)}")
        return {m: float(weights.get(m, 1.0)) for m in specs}
    raise ValueError(f"weights must be 'uniform', 'rescale' or a mapping, got {weights!r}")


def modality_modules(specs: Mapping[str, ModalitySpec], latent_dim: int, hidden: int,
                     likelihoods: Mapping[str, str] | None = None, scales: Mapping | None = None,
                     default_scale: float = 0.75, encoders: Mapping[str, nn.Module] | None = None,
                     decoders: Mapping[str, nn.Module] | None = None) -> tuple[nn.ModuleDict, nn.ModuleDict, nn.ModuleDict]:
    """Encoder, decoder and likelihood of every modality: the user's networks where given, the default
    network of the modality's kind otherwise, and the spec's likelihood unless overridden."""
    likelihoods, scales = dict(likelihoods or {}), dict(scales or {})
    encs, decs, liks = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
    for m, spec in specs.items():
        given_enc, given_dec = (encoders or {}).get(m), (decoders or {}).get(m)
        if given_enc is None or given_dec is None:
            enc, dec = default_networks(spec, latent_dim, hidden)
        encs[m] = given_enc if given_enc is not None else enc
        decs[m] = given_dec if given_dec is not None else dec
        liks[m] = make_likelihood(likelihoods.get(m, spec.likelihood), spec.shape, spec.kind,
                                  scales.get(m, default_scale))
    return encs, decs, liks


class MultimodalVAE(nn.Module):
    """Modalities + fusion + estimator.

    ``fusion(experts, masks) -> DiagonalMixture``; ``objective(model, batch, beta) -> (loss, logs)``.
    ``stratified``: the estimator draws K samples from every mixture component (MMVAE) rather than K
    from the mixture (MoPoE). ``prior``: ``standard`` (None), ``learned`` or ``learned-loc-scale``
    (``distributions/prior.py``); ``prior_family``: normal or laplace (default: the posterior's).
    """

    def __init__(self, specs: Mapping[str, ModalitySpec], latent_dim: int, fusion: Callable,
                 objective: Callable, *, posterior: str = "normal", prior: str | None = None,
                 prior_family: str | None = None,
                 likelihoods: Mapping[str, str] | None = None, scales: Mapping | None = None,
                 default_scale: float = 0.75, weights=None, hidden: int = 512, stratified: bool = False,
                 beta: float = 1.0, encoders: Mapping[str, nn.Module] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.specs = dict(specs)
        self.latent_dim = int(latent_dim)
        self.fusion = fusion
        self.objective = objective
        self.posterior_family = posterior
        self.stratified = stratified
        self.beta = float(beta)
        self.encoders, self.decoders, self.likelihoods = modality_modules(
            self.specs, self.latent_dim, hidden, likelihoods, scales, default_scale, encoders, decoders)
        self.weights = modality_weights(self.specs, weights)
        self.prior_family = prior_family or posterior
        self.latent_prior = Prior(self.prior_family, self.latent_dim, prior)

    # ----------------------------------------------------------------------------------- pieces
    @property
    def prior_kind(self) -> str:
        """``standard``, ``learned`` or ``learned-loc-scale`` (``distributions/prior.py``)."""
        return self.latent_prior.kind

    @property
    def prior(self) -> Distribution:
        """p(z) with its current (possibly learned) parameters."""
        return self.latent_prior.distribution()

    @property
    def modalities(self) -> list[str]:
        return list(self.specs)

    def encode_experts(self, batch: Batch) -> dict[str, Distribution]:
        """q(z | x_m) for every modality of the batch; rows where m is missing are never encoded (their
        parameters are placeholders that the fusion weights by zero)."""
        experts = {}
        for m in batch.data:
            x, mask = batch.data[m], batch.mask[m]
            if bool(mask.all()):
                loc, raw = _split(self.encoders[m](x), self.latent_dim)
            else:
                idx = torch.nonzero(mask).squeeze(1)
                loc = x.new_zeros(x.shape[0], self.latent_dim)
                raw = x.new_zeros(x.shape[0], self.latent_dim)
                if idx.numel():
                    lo, ro = _split(self.encoders[m](x[idx]), self.latent_dim)
                    loc, raw = loc.index_copy(0, idx, lo), raw.index_copy(0, idx, ro)
            experts[m] = make_posterior(self.posterior_family, loc, raw)
        return experts

    def posterior(self, batch: Batch) -> DiagonalMixture:
        """The fused posterior q(z | observed modalities), row by row."""
        return self.fusion(self.encode_experts(batch), batch.mask)

    def decode_params(self, m: str, z: Tensor) -> Tensor:
        """Decoder output for z of shape (..., D), flattened to (N, D) and restored."""
        lead = z.shape[:-1]
        out = self.decoders[m](z.reshape(-1, self.latent_dim))
        return out.reshape(*lead, *out.shape[1:])

    def reconstruction(self, z: Tensor, batch: Batch, members: list[tuple[str, ...]] | None = None) -> Tensor:
        """sum_m λ_m log p(x_m | z) over the modalities each row observes: z (G, K, B, D) -> (G, K, B).

        Each decoder is called once, on the strata that score its modality (``members``)."""
        total = z.new_zeros(z.shape[:-1])
        for m, x in batch.data.items():
            mask = batch.mask[m]
            strata = None if members is None else [g for g, s in enumerate(members) if m in s]
            if strata is not None and not strata:
                continue
            zm = z if strata is None or len(strata) == z.shape[0] else z[strata]
            out = self.decode_params(m, zm)
            complete = bool(mask.all())
            xm = x if complete else torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))
            lp = self.likelihoods[m].log_prob(out, xm)                      # (G', K, B)
            if not complete:
                lp = lp * mask
            if self.weights[m] != 1.0:
                lp = self.weights[m] * lp
            if zm is z:
                total = total + lp
            else:
                total = total.index_add(0, torch.tensor(strata, device=z.device), lp)
        return total

    def loss(self, batch: Batch, beta: float | None = None, noise=None) -> tuple[Tensor, dict]:
        """The training loss. ``beta`` is the KL weight of this step; None means the configured final
        weight (never 0 by omission: a forgotten warm-up argument must not switch the KL off).
        ``noise`` (``distributions/noise.py``) fixes the random draws; None draws from torch's generator."""
        beta = self.beta if beta is None else float(beta)
        if noise is None:
            return self.objective(self, batch, beta)
        return self.objective(self, batch, beta, noise=noise)

    # ------------------------------------------------------------------------------------ user API
    @torch.no_grad()
    def encode(self, data: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> DiagonalMixture:
        """The fused posterior given any subset of modalities (the keys of ``data``)."""
        return self.posterior(Batch(dict(data), dict(mask or {})))

    @torch.no_grad()
    def embed(self, data: Mapping[str, Tensor]) -> Tensor:
        """Posterior means (B, D): the fused posterior's mean given the modalities in ``data``."""
        return self.encode(data).mean

    @torch.no_grad()
    def decode(self, z: Tensor, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Likelihood means of the chosen modalities for latents z (N, D)."""
        return {m: self.likelihoods[m].mean(self.decode_params(m, z)) for m in (modalities or self.modalities)}

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        """Generate ``targets`` (default: all modalities) from the given subset: the likelihood mean of
        the decoders at z, where z is the posterior mean of q(z | x_S) (``sample=False``, deterministic:
        pictures, reconstructions) or one sample z ~ q(z | x_S) per row (``sample=True``: the coherence
        protocol of Shi et al. 2019's official code, which ``mmvae evaluate`` uses)."""
        post = self.encode(data)
        z = post.rsample(1)[0] if sample else post.mean
        return self.decode(z, targets)

    def reconstruct(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.translate(data, list(data))

    @torch.no_grad()
    def generate(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Unconditional samples: z ~ p(z), decoded by every decoder (joint generation)."""
        z = self.prior.sample((n,))
        return self.decode(z, modalities)


def _split(out, latent_dim: int) -> tuple[Tensor, Tensor]:
    """Accept an encoder's (loc, raw_scale) pair or one (N, 2D) tensor."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1]
    return out[..., :latent_dim], out[..., latent_dim:]
