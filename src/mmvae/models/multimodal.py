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
from ..distributions.posteriors import accumulation_dtype, make_posterior
from ..distributions.prior import Prior
from ..fusion.mixture import DiagonalMixture
from ..nets.registry import default_networks
from ..nets.stacked import ExpertGroups, enabled, parse_vectorise, run_group


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
                     decoders: Mapping[str, nn.Module] | None = None,
                     activation=None) -> tuple[nn.ModuleDict, nn.ModuleDict, nn.ModuleDict]:
    """Encoder, decoder and likelihood of every modality: the user's networks where given, the default
    network of the modality's kind otherwise (with ``activation``, ``nets/activations.py``), and the
    spec's likelihood unless overridden."""
    likelihoods, scales = dict(likelihoods or {}), dict(scales or {})
    encs, decs, liks = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
    for m, spec in specs.items():
        given_enc, given_dec = (encoders or {}).get(m), (decoders or {}).get(m)
        if given_enc is None or given_dec is None:
            enc, dec = default_networks(spec, latent_dim, hidden, activation)
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
    ``vectorise``: ``auto`` (CUDA only), True or False: run the encoders (decoders) of modalities with
    identically shaped networks as one batched call (``nets/stacked.py``); the same values either way.
    ``activation``: the activation of the default networks (a name of ``nets/activations.py``; None: their
    own, ReLU except ``mvae-mlp``).
    """

    def __init__(self, specs: Mapping[str, ModalitySpec], latent_dim: int, fusion: Callable,
                 objective: Callable, *, posterior: str = "normal", prior: str | None = None,
                 prior_family: str | None = None,
                 likelihoods: Mapping[str, str] | None = None, scales: Mapping | None = None,
                 default_scale: float = 0.75, weights=None, hidden: int = 512, stratified: bool = False,
                 beta: float = 1.0, encoders: Mapping[str, nn.Module] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None, vectorise="auto", activation: str | None = None):
        super().__init__()
        self.specs = dict(specs)
        self.vectorise = parse_vectorise(vectorise)
        self._encoder_groups, self._decoder_groups = ExpertGroups(), ExpertGroups()
        self.latent_dim = int(latent_dim)
        self.fusion = fusion
        self.objective = objective
        self.posterior_family = posterior
        self.stratified = stratified
        self.beta = float(beta)
        self.activation = activation
        self.encoders, self.decoders, self.likelihoods = modality_modules(
            self.specs, self.latent_dim, hidden, likelihoods, scales, default_scale, encoders, decoders, activation)
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
        parameters are placeholders that the fusion weights by zero). With vectorised experts, a group
        of identically shaped encoders runs as one call on all rows (missing rows read zeros and get
        the same placeholders)."""
        names = list(batch.data)
        params: dict[str, tuple[Tensor, Tensor]] = {}
        if len(names) > 1 and enabled(self.vectorise, batch.data[names[0]].device):
            for group in self._encoder_groups.of(self.encoders, names):
                params.update(self._encode_group(batch, group))
        experts = {}
        for m in names:
            loc, raw = params[m] if m in params else self._encode_one(batch, m)
            experts[m] = make_posterior(self.posterior_family, loc, raw)
        return experts

    def _encode_one(self, batch: Batch, m: str) -> tuple[Tensor, Tensor]:
        x, mask = batch.data[m], batch.mask[m]
        if _compiling():   # no data-dependent branch (a graph break): encode every row, zero the missing
            loc, raw = _split(self.encoders[m](_zero_missing(x, mask)), self.latent_dim)
            keep = mask.unsqueeze(-1)
            return torch.where(keep, loc, torch.zeros_like(loc)), torch.where(keep, raw, torch.zeros_like(raw))
        if bool(mask.all()):
            return _split(self.encoders[m](x), self.latent_dim)
        idx = torch.nonzero(mask).squeeze(1)
        loc = x.new_zeros(x.shape[0], self.latent_dim)
        raw = x.new_zeros(x.shape[0], self.latent_dim)
        if idx.numel():
            lo, ro = _split(self.encoders[m](x[idx]), self.latent_dim)
            loc, raw = loc.index_copy(0, idx, lo), raw.index_copy(0, idx, ro)
        return loc, raw

    def _encode_group(self, batch: Batch, group: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
        """Loc and raw scale of a group of identically shaped encoders, one stacked call (nothing when
        the group is a single modality or cannot be stacked)."""
        complete = {m: not _compiling() and bool(batch.mask[m].all()) for m in group}
        xs = [batch.data[m] if complete[m] else _zero_missing(batch.data[m], batch.mask[m]) for m in group]
        out = run_group(self._encoder_groups, self.encoders, group, [torch.stack(xs)], [False])
        if out is None:
            return {}
        loc, raw = _split(out, self.latent_dim)                              # (G, B, D) each
        result = {}
        for g, m in enumerate(group):
            lo, ro = loc[g], raw[g]
            if not complete[m]:
                keep = batch.mask[m].unsqueeze(-1)
                lo, ro = torch.where(keep, lo, torch.zeros_like(lo)), torch.where(keep, ro, torch.zeros_like(ro))
            result[m] = (lo, ro)
        return result

    def posterior(self, batch: Batch) -> DiagonalMixture:
        """The fused posterior q(z | observed modalities), row by row."""
        return self.fusion(self.encode_experts(batch), batch.mask)

    def decode_params(self, m: str, z: Tensor) -> Tensor:
        """Decoder output for z of shape (..., D), flattened to (N, D) and restored."""
        lead = z.shape[:-1]
        out = self.decoders[m](z.reshape(-1, self.latent_dim))
        return out.reshape(*lead, *out.shape[1:])

    def reconstruction(self, z: Tensor, batch: Batch, members: list[tuple[str, ...]] | None = None,
                       weighted: bool = True) -> Tensor:
        """sum_m λ_m log p(x_m | z) over the modalities each row observes: z (G, K, B, D) -> (G, K, B);
        ``weighted=False``: λ_m = 1 (the true log-likelihood, for evaluation).

        Each decoder is called once, on the strata that score its modality (``members``); with
        vectorised experts, identically shaped decoders reading the same strata run as one call."""
        total = z.new_zeros(z.shape[:-1], dtype=accumulation_dtype(z.dtype))
        inputs: dict[str, tuple[Tensor, list[int] | None]] = {}
        for m in batch.data:
            strata = None if members is None else [g for g, s in enumerate(members) if m in s]
            if strata is not None and not strata:
                continue
            inputs[m] = (z if strata is None or len(strata) == z.shape[0] else z[strata],
                         None if strata is None or len(strata) == z.shape[0] else strata)
        outs = self._decode_groups(inputs) if len(inputs) > 1 else {}
        for m, (zm, strata) in inputs.items():
            x, mask = batch.data[m], batch.mask[m]
            out = outs[m] if m in outs else self.decode_params(m, zm)
            complete = not _compiling() and bool(mask.all())
            xm = x if complete else _zero_missing(x, mask)
            lp = self.likelihoods[m].log_prob(out, xm)                      # (G', K, B)
            if not complete:
                lp = lp * mask
            if weighted and self.weights[m] != 1.0:
                lp = self.weights[m] * lp
            if strata is None:
                total = total + lp
            else:
                total = total.index_add(0, torch.tensor(strata, device=z.device), lp.to(total.dtype))
        return total

    def _decode_groups(self, inputs: dict[str, tuple[Tensor, list[int] | None]]) -> dict[str, Tensor]:
        """Decoder outputs of the vectorised groups: decoders of one architecture whose inputs have one
        shape run as one stacked call (one shared input when they all read the same z)."""
        first = next(iter(inputs.values()))[0]
        if not enabled(self.vectorise, first.device) or type(self).decode_params is not MultimodalVAE.decode_params:
            return {}   # a subclass that feeds its decoders its own way (fmmvae) keeps its loop
        outs = {}
        for group in self._decoder_groups.of(self.decoders, list(inputs)):
            zs = [inputs[m][0] for m in group]
            if len(group) < 2 or any(zq.shape != zs[0].shape for zq in zs):
                continue
            shared = all(zq is zs[0] for zq in zs)
            flat = [zq.reshape(-1, self.latent_dim) for zq in (zs[:1] if shared else zs)]
            out = run_group(self._decoder_groups, self.decoders, group,
                            [flat[0] if shared else torch.stack(flat)], [shared])
            if out is None:
                continue
            for g, m in enumerate(group):
                outs[m] = out[g].reshape(*zs[g].shape[:-1], *out.shape[2:])
        return outs

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


def _compiling() -> bool:
    """Under torch.compile masks are applied arithmetically: a branch on mask.all() would break the graph."""
    return torch.compiler.is_compiling()


def _zero_missing(x: Tensor, mask: Tensor) -> Tensor:
    """x with the rows where the modality is missing set to 0 (they may hold NaN)."""
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros_like(x))


def _split(out, latent_dim: int) -> tuple[Tensor, Tensor]:
    """Accept an encoder's (loc, raw_scale) pair or one (N, 2D) tensor."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1]
    return out[..., :latent_dim], out[..., latent_dim:]
