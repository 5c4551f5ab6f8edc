"""Models with a shared latent z and a private latent w_m per modality (MMVAE+, DMVAE, CMVAE).

Generative model: p(z) Π_m p(w_m) p(x_m | z, w_m); decoder m reads [z, w_m]. Each modality has two
encoders: a shared expert q(z | x_m) (fused by the model's fusion: mixture for MMVAE+ and CMVAE, product
for DMVAE) and a private posterior q(w_m | x_m). p(z, w) is one prior over [z, w] (the MMVAE+ authors'
``pu``; ``--set prior=learned`` learns its scales) whose private part is each p(w_m); a model may replace
the shared part (CMVAE's cluster prior). The latent layout and the strata of the objectives live in
``fusion/factorised.py``; the estimators are the library's.

User API (as the other models; the latent of ``encode``/``embed`` is the shared one):
* ``translate``: z from the fused shared posterior of the sources (mean, or one sample); each target's
  private code from its own posterior when the target is a source, else from its prior p(w_t) (a sample,
  or the prior mean with ``sample=False``), as the authors' cross-generation (``joint_prior``);
* ``generate``: z ~ p(z), every w_m ~ p(w_m) independently;
* ``decode(u)`` takes the full layout u = [z, w_1, …, w_M] (``self.layout``);
* ``latent_representations``: "<m>/shared" and "<m>/private" posterior means (the latent probes);
* ``log_likelihood``: importance sampling with q(z | x_S) Π_{m∈S} q(w_m | x_m), unweighted.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..config import Config
from ..data.batch import Batch
from ..distributions.posteriors import log_density, make_posterior
from ..distributions.prior import Prior, prior_kind
from ..errors import UserError
from ..fusion.factorised import BlockPrior, FactorisedMixture, PrivateLayout, private_posterior
from ..nets.registry import default_networks
from ..objectives.estimators import Strata, make_estimator
from .multimodal import MultimodalVAE, _split
from .registry import model_option

# builds the training posterior and its strata from (model, shared experts, private posteriors, batch)
StrataBuilder = Callable[["PrivateLatentVAE", dict, dict, Batch], tuple[FactorisedMixture, Strata]]


def encode_rows(net: nn.Module, x: Tensor, mask: Tensor, dim: int, family: str) -> Distribution:
    """q(· | x) from ``net`` on the observed rows only; missing rows get placeholder parameters (loc 0,
    raw scale 0) that no objective scores."""
    if bool(mask.all()):
        loc, raw = _split(net(x), dim)
    else:
        idx = torch.nonzero(mask).squeeze(1)
        loc, raw = x.new_zeros(x.shape[0], dim), x.new_zeros(x.shape[0], dim)
        if idx.numel():
            lo, ro = _split(net(x[idx]), dim)
            loc, raw = loc.index_copy(0, idx, lo), raw.index_copy(0, idx, ro)
    return make_posterior(family, loc, raw)


class PrivateLatentVAE(MultimodalVAE):
    """A shared latent of ``shared_dim`` (``latent_dim``) and a private latent of ``private_dim`` per
    modality. ``strata`` builds the training posterior (``fusion/factorised.py``); ``aux``: the prior kind
    of MMVAE+'s auxiliary priors r_m (``distributions/prior.py``; None: the model has none);
    ``shared_prior``: a module replacing p(z) (e.g. ``ClusterPrior``)."""

    def __init__(self, specs: Mapping, shared_dim: int, private_dim: int, fusion: Callable, objective: Callable,
                 strata: StrataBuilder, *, posterior: str = "laplace", prior: str | None = None,
                 aux: str | None = None, shared_prior: nn.Module | None = None, hidden: int = 512,
                 encoders: Mapping[str, nn.Module] | None = None,
                 private_encoders: Mapping[str, nn.Module] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None, stratified: bool = False, **kwargs):
        """``encoders``: x -> (N, shared_dim) heads; ``private_encoders``: x -> (N, private_dim) heads;
        ``decoders``: (N, shared_dim + private_dim) -> likelihood parameters (each replaces the default)."""
        specs = dict(specs)
        shared_dim, private_dim = int(shared_dim), int(private_dim)
        if private_dim < 1:
            raise ValueError(f"private_dim must be at least 1, got {private_dim}")

        def nets(which: int, dim: int, given) -> dict[str, nn.Module]:
            given = dict(given or {})
            return {m: given[m] if m in given else default_networks(s, dim, hidden)[which] for m, s in specs.items()}

        super().__init__(specs, shared_dim, fusion, objective, posterior=posterior, prior=prior, hidden=hidden,
                         stratified=stratified, encoders=nets(0, shared_dim, encoders),
                         decoders=nets(1, shared_dim + private_dim, decoders), **kwargs)
        self.private_dim = private_dim
        self.layout = PrivateLayout(list(specs), shared_dim, private_dim)
        self.private_encoders = nn.ModuleDict(nets(0, private_dim, private_encoders))
        self.latent_prior = Prior(self.prior_family, shared_dim + private_dim, prior)   # p(z, w)
        self.shared_prior = shared_prior
        self.aux = None if aux is None else nn.ModuleDict({m: Prior(posterior, private_dim, aux) for m in specs})
        self.strata = strata

    # ------------------------------------------------------------------------------------ pieces
    @property
    def prior(self) -> BlockPrior:
        """p(u) = p(z) Π_m p(w_m) with its current parameters."""
        joint = self.latent_prior.distribution()
        s, family = self.latent_dim, type(joint)
        shared = self.shared_prior if self.shared_prior is not None else \
            family(joint.loc[:s], joint.scale[:s], validate_args=False)
        m = len(self.specs)
        return BlockPrior(shared, family(joint.loc[s:].repeat(m), joint.scale[s:].repeat(m), validate_args=False))

    def private_prior(self, m: str) -> Distribution:
        """p(w_m)."""
        joint, s = self.latent_prior.distribution(), self.latent_dim
        return type(joint)(joint.loc[s:], joint.scale[s:], validate_args=False)

    def aux_prior(self, m: str) -> Distribution:
        """MMVAE+'s auxiliary prior r_m (its own learned scales)."""
        return self.aux[m].distribution()

    def encode_private(self, batch: Batch) -> dict[str, Distribution]:
        """q(w_m | x_m) for every modality of the batch (observed rows only)."""
        return {m: encode_rows(self.private_encoders[m], x, batch.mask[m], self.private_dim, self.posterior_family)
                for m, x in batch.data.items()}

    def training_posterior(self, batch: Batch) -> tuple[FactorisedMixture, Strata]:
        return self.strata(self, self.encode_experts(batch), self.encode_private(batch), batch)

    def full_posterior(self, batch: Batch) -> FactorisedMixture:
        """q(z | x_S) Π_{m∈S} q(w_m | x_m), the prior p(w_m) for the other modalities (fusion/factorised.py)."""
        fill = {m: self.private_prior(m) for m in self.specs}
        return private_posterior(self.posterior(batch), self.layout, self.encode_private(batch), batch.mask, fill)

    def decode_params(self, m: str, z: Tensor) -> Tensor:
        """Decoder m on [z, w_m] of the full layout u (..., D)."""
        zm = self.layout.decoder_input(z, m)
        out = self.decoders[m](zm.reshape(-1, zm.shape[-1]))
        return out.reshape(*zm.shape[:-1], *out.shape[1:])

    # ------------------------------------------------------------------------------------ user API
    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        post = self.full_posterior(Batch(dict(data)))
        u = post.rsample(1)[0] if sample else post.mean
        return self.decode(u, targets)

    @torch.no_grad()
    def generate(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        return self.decode(self.prior.sample((n,)), modalities)

    @torch.no_grad()
    def latent_representations(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Posterior means per modality: ``{"<m>/shared": E q(z | x_m), "<m>/private": E q(w_m | x_m)}``."""
        batch = Batch(dict(data))
        shared, private = self.encode_experts(batch), self.encode_private(batch)
        return {key: value for m in data for key, value in
                ((f"{m}/shared", shared[m].mean), (f"{m}/private", private[m].mean))}

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, modalities: list[str] | None = None, k: int = 1000,
                       chunk: int = 100) -> Tensor:
        """log p(x_S) ≈ log 1/K Σ_k p(u_k) Π_{m∈S} p(x_m | z_k, w_m,k) / q(u_k | x_S), u_k ~ q(u | x_S) =
        q(z | x_S) Π_{m∈S} q(w_m | x_m) (Burda et al. 2016, eq. 8); unweighted (λ = 1). The private codes of
        modalities outside S are drawn from and scored by their prior, so they cancel."""
        batch = batch.select(list(modalities or batch.modalities))
        post, prior = self.full_posterior(batch), self.prior
        s, total = self.latent_dim, None
        for start in range(0, k, chunk):
            u = post.rsample(min(chunk, k - start))                               # (k', B, D)
            lw = prior.log_prob_shared(u[..., :s]) + log_density(prior.private, u[..., s:]) - post.log_prob(u)
            for m, x in batch.data.items():
                lw = lw + self.likelihoods[m].log_prob(self.decode_params(m, u), x) * batch.mask[m]
            part = torch.logsumexp(lw, 0)
            total = part if total is None else torch.logaddexp(total, part)
        return total - math.log(k)


class PrivateObjective:
    """The model's training posterior and strata (``training_posterior``) scored by a library estimator."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.name = estimator.name

    def __call__(self, model: PrivateLatentVAE, batch: Batch, beta: float, noise=None) -> tuple[Tensor, dict]:
        post, strata = model.training_posterior(batch)
        return self.estimator(model, batch, beta, post, strata, noise)


def private_options(cfg: Config) -> int:
    """``private_dim`` (default: the shared latent's dimension) and the resolved prior name."""
    cfg.prior = prior_kind(cfg.prior)
    return model_option(cfg, "private_dim", cfg.latent_dim, int, lambda v: v >= 1, "an integer >= 1")


def build_private_model(specs, cfg: Config, fusion: Callable, strata: StrataBuilder, encoders=None, decoders=None,
                        cls: type = PrivateLatentVAE, **kwargs) -> PrivateLatentVAE:
    """The common builder: estimator from the config, options checked, ValueErrors as UserErrors."""
    try:
        private_dim = private_options(cfg)
        estimator = make_estimator(cfg.objective, cfg.k, cfg.kl)
        return cls(specs, cfg.latent_dim, private_dim, fusion, PrivateObjective(estimator), strata,
                                posterior=cfg.posterior, prior=cfg.prior, hidden=cfg.hidden, encoders=encoders,
                                decoders=decoders, likelihoods=cfg.likelihood, scales=cfg.scale,
                                default_scale=cfg.default_scale, weights=cfg.weights, beta=cfg.beta, **kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None
