"""MEME: multimodal VAE trained by mutual supervision (Joy, Shi, Torr & Siddharth, ICLR 2022).

Two modalities s and t, each with an encoder q(z|x) and a decoder p(x|z); no fused posterior. On a
paired row each modality supervises the other: in direction s -> t, q(z|s) is the encoder, t's encoder
is the conditional prior p(z|t) (shared weights, App. C) and t's decoder is the "classifier" q(t|z);
L_Bi = 1/2 [L(s->t) + L(t->s)] (eq. 2; ``direction_weight="sum"`` adds the two directions, as the authors'
code does). A row that observes one modality is an ELBO whose prior is
the VampPrior of the missing one: 1/N Σ_i q(z | u_i) over N learnable pseudo-samples u_i (eq. 4).
Training maximises eq. 5, Σ_paired L_Bi + Σ_s-only L(s) + Σ_t-only L(t), over the rows of each batch
(the batch masks say which is which). The maths is in ``objectives/meme.py``.

Pseudo-samples are initialised from real training items: the first N observed items of each modality
that training batches bring (``pseudo_filled`` counts them; it is a buffer, so checkpoints and exact
resume keep it). Until a modality has any, rows that need its prior use N(0, I).

More than two modalities (the paper's App. E) is not implemented: the model refuses M > 2.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily

from ..config import Config
from ..data.batch import Batch
from ..data.dataset import ModalitySpec
from ..distributions.noise import GLOBAL_NOISE, Noise
from ..distributions.posteriors import (accumulation_dtype, expand_rows, kl_to_prior, log_density, make_posterior,
                                       standard_prior)
from ..errors import UserError
from ..fusion.fusions import mixture_of_experts
from ..fusion.mixture import DiagonalMixture
from ..objectives.meme import mixture_log_density, mutual_supervision_bound, unpaired_elbo
from .multimodal import _split, modality_modules, modality_weights
from .registry import register_model

# Weight c on log q(t|s). The paper's bound has c = 1, the authors' code c = 10; docs/models/meme.md
# records the measurement behind this default.
CLASSIFIER_WEIGHT = 10.0
# N pseudo-samples per modality (eq. 4): the authors' code mixes one batch of them (thwjoy/meme, main.py:
# the first batch of the unpaired loader, batch size 128).
PSEUDO_SAMPLES = 128
# Weight of each direction of a paired row: eq. 2 averages them (1/2), the authors' code adds them.
DIRECTION_WEIGHTS = {"half": 0.5, "sum": 1.0}


class MEME(nn.Module):
    """Mutual supervision between two modalities; see the module docstring for the equations."""

    def __init__(self, specs: Mapping[str, ModalitySpec], latent_dim: int, *, posterior: str = "normal",
                 likelihoods: Mapping[str, str] | None = None, scales: Mapping | None = None,
                 default_scale: float = 0.75, weights=None, hidden: int = 512, beta: float = 1.0, k: int = 10,
                 classifier_weight: float = CLASSIFIER_WEIGHT, pseudo_samples: int = PSEUDO_SAMPLES,
                 direction_weight: str = "half",
                 kl: str = "analytic", encoders: Mapping[str, nn.Module] | None = None,
                 decoders: Mapping[str, nn.Module] | None = None):
        super().__init__()
        if len(specs) != 2:
            raise ValueError(f"MEME pairs exactly two modalities, got {len(specs)} ({', '.join(specs)})")
        if int(k) < 1:
            raise ValueError(f"k (fresh samples for log q(t|s)) must be >= 1, got {k}")
        if int(pseudo_samples) < 1:
            raise ValueError(f"pseudo_samples must be >= 1, got {pseudo_samples}")
        if not float(classifier_weight) >= 0:
            raise ValueError(f"classifier_weight must be >= 0, got {classifier_weight}")
        if direction_weight not in DIRECTION_WEIGHTS:
            raise ValueError(f"direction_weight must be 'half' (eq. 2, the paper) or 'sum' (the authors' code), "
                             f"got {direction_weight!r}")
        if kl not in ("analytic", "mc"):
            raise ValueError(f"kl must be 'analytic' or 'mc', got {kl!r}")
        self.specs = dict(specs)
        self.latent_dim = int(latent_dim)
        self.posterior_family = posterior
        self.beta = float(beta)
        self.k = int(k)
        self.classifier_weight = float(classifier_weight)
        self.direction_weight = direction_weight
        self.num_pseudo = int(pseudo_samples)
        self.kl = kl
        self.encoders, self.decoders, self.likelihoods = modality_modules(
            self.specs, self.latent_dim, hidden, likelihoods, scales, default_scale, encoders, decoders)
        self.pseudo = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(self.num_pseudo, *spec.shape)) for m, spec in self.specs.items()})
        self.register_buffer("pseudo_filled", torch.zeros(2, dtype=torch.long))
        self.weights = modality_weights(self.specs, weights)

    # ----------------------------------------------------------------------------------- pieces
    @property
    def modalities(self) -> list[str]:
        return list(self.specs)

    def other(self, m: str) -> str:
        s, t = self.modalities
        return t if m == s else s

    def _posterior(self, m: str, x: Tensor) -> Distribution:
        loc, raw = _split(self.encoders[m](x), self.latent_dim)
        return make_posterior(self.posterior_family, loc, raw)

    def _filled(self, m: str) -> int:
        return int(self.pseudo_filled[self.modalities.index(m)])

    @torch.no_grad()
    def _fill_pseudo(self, batch: Batch) -> None:
        """Copy observed training items into the pseudo-sample slots still empty (eq. 4's u_i start as
        real data, as in the authors' code)."""
        for i, m in enumerate(self.modalities):
            n = int(self.pseudo_filled[i])
            if n >= self.num_pseudo or m not in batch.data:
                continue
            items = batch.data[m][batch.mask[m]]
            take = min(self.num_pseudo - n, items.shape[0])
            if take:
                self.pseudo[m][n:n + take].copy_(items[:take])
                self.pseudo_filled[i] += take

    def pseudo_prior_components(self, m: str) -> Distribution | None:
        """q(z | u_i) for the initialised pseudo-samples u_i of modality m, batched (N, D); None if none."""
        n = self._filled(m)
        return self._posterior(m, self.pseudo[m][:n]) if n else None

    @property
    def prior(self) -> Distribution:
        """p(z) for unconditional generation: the uniform mixture of both modalities' pseudo-sample priors
        (eq. 4 for each), N(0, I) before any pseudo-sample is initialised. Its ``log_prob`` returns one
        value per latent vector (event shape (D,)), unlike the factorised priors of the other models."""
        comps = [c for c in (self.pseudo_prior_components(m) for m in self.modalities) if c is not None]
        if not comps:
            return Independent(standard_prior("normal", self.latent_dim, self.pseudo_filled.device), 1)
        family = type(comps[0])
        loc = torch.cat([c.loc for c in comps])
        scale = torch.cat([c.scale for c in comps])
        return MixtureSameFamily(Categorical(logits=torch.zeros(loc.shape[0], device=loc.device)),
                                 Independent(family(loc, scale, validate_args=False), 1))

    # ---------------------------------------------------------------------------------- objective
    def loss(self, batch: Batch, beta: float | None = None, noise: Noise | None = None) -> tuple[Tensor, dict]:
        """−(eq. 5) / batch size: L_Bi on paired rows, the pseudo-sample-prior ELBO on single-modality rows.

        In training mode, empty pseudo-sample slots are first filled from this batch's observed items.
        ``noise`` fixes the draws (``distributions/noise.py``: ``z/<m>`` and ``fresh/<m>``)."""
        beta = self.beta if beta is None else float(beta)
        noise = noise or GLOBAL_NOISE
        if self.training:
            self._fill_pseudo(batch)
        names = self.modalities
        B = batch.size
        obs = {m: batch.mask[m] for m in names}
        paired_idx = torch.nonzero(obs[names[0]] & obs[names[1]]).squeeze(1)
        only = {m: torch.nonzero(obs[m] & ~obs[self.other(m)]).squeeze(1) for m in names}
        rows = {m: torch.nonzero(obs[m]).squeeze(1) for m in names}
        pos = {m: torch.cumsum(obs[m].long(), 0) - 1 for m in names}       # batch row -> index in rows[m]
        n_paired = paired_idx.numel()

        # Encoders: each called once, on its observed rows plus (when a row lacks it) its pseudo-samples.
        q, vamp = {}, {}
        for m in names:
            x = batch.data[m][rows[m]]
            n_obs, n_u = x.shape[0], (self._filled(m) if only[self.other(m)].numel() else 0)
            inp = torch.cat([x, self.pseudo[m][:n_u]]) if n_u else x
            if inp.shape[0] == 0:
                q[m] = vamp[m] = None
                continue
            post = self._posterior(m, inp)
            q[m] = type(post)(post.loc[:n_obs], post.scale[:n_obs], validate_args=False)
            vamp[m] = type(post)(post.loc[n_obs:], post.scale[n_obs:], validate_args=False) if n_u else None

        # Samples: one per observed row (the bound's own z), K fresh ones per paired row (App. D).
        z = {m: noise.rsample(q[m], (), f"z/{m}") for m in names if q[m] is not None}
        ppos = {m: pos[m][paired_idx] for m in names}
        fresh = {}
        if n_paired:
            for m in names:
                fresh[m] = noise.rsample(expand_rows(q[m], ppos[m]), (self.k,), f"fresh/{m}")   # (K, Bp, D)

        # Decoders: each called once, on its own samples (self-reconstruction) followed by the other
        # modality's own and fresh samples of paired rows (the classifier q(m | z) of the other direction).
        log_self, log_cls = {}, {}
        for m in names:
            o = self.other(m)
            parts = [z[m]] if m in z else []
            if n_paired:
                parts += [z[o][ppos[o]], fresh[o].reshape(-1, self.latent_dim)]
            if not parts:
                continue
            out = self.decoders[m](torch.cat(parts))
            x = batch.data[m]
            n_obs = rows[m].numel()
            if n_obs:
                log_self[m] = self.weights[m] * self.likelihoods[m].log_prob(out[:n_obs], x[rows[m]])
            if n_paired:
                out_c = out[n_obs:].reshape(self.k + 1, n_paired, *out.shape[1:])
                log_cls[m] = self.likelihoods[m].log_prob(out_c, x[paired_idx].unsqueeze(0))   # (K+1, Bp)

        # Per-row sums (index_add is out of place, so the rows can share one zero tensor to start from).
        dtype = accumulation_dtype(next((v.loc.dtype for v in q.values() if v is not None), torch.get_default_dtype()))
        objective = bound = rec = kl_rows = cross = torch.zeros(B, device=paired_idx.device, dtype=dtype)

        def add(total: Tensor, rows: Tensor, value: Tensor) -> Tensor:   # value may be bf16 under autocast
            return total.index_add(0, rows, value.to(dtype))
        half_or_one = DIRECTION_WEIGHTS[self.direction_weight]      # eq. 2's 1/2, or the authors' sum
        if n_paired:
            for s in names:
                t = self.other(s)
                qs, qt = expand_rows(q[s], ppos[s]), expand_rows(q[t], ppos[t])
                zs = z[s][ppos[s]]
                kl = kl_to_prior(qs, qt) if self.kl == "analytic" else log_density(qs, zs) - log_density(qt, zs)
                value, parts = mutual_supervision_bound(log_self[s][ppos[s]], log_cls[t], kl, beta,
                                                        self.classifier_weight)
                objective = add(objective, paired_idx, half_or_one * value)
                bound = add(bound, paired_idx, half_or_one * parts["bound"])
                rec = add(rec, paired_idx, log_self[s][ppos[s]].detach())   # both self-reconstructions
                kl_rows = add(kl_rows, paired_idx, 0.5 * kl.detach())
                cross = add(cross, paired_idx, 0.5 * parts["log_q_cross"])
        for m in names:
            idx = only[m]
            if not idx.numel():
                continue
            o, pm = self.other(m), pos[m][idx]
            zm = z[m][pm]
            qm = expand_rows(q[m], pm)
            log_q = log_density(qm, zm)
            prior = vamp[o]
            log_p = (mixture_log_density(prior, zm) if prior is not None
                     else log_density(standard_prior(self.posterior_family, self.latent_dim, zm.device), zm))
            value = unpaired_elbo(log_self[m][pm], log_q, log_p, beta)
            objective = add(objective, idx, value)
            bound = add(bound, idx, value.detach())
            rec = add(rec, idx, log_self[m][pm].detach())
            kl_rows = add(kl_rows, idx, (log_q - log_p).detach())
        logs = {"bound": bound.mean(), "rec": rec.mean(), "kl": kl_rows.mean(), "log_q_cross": cross.mean(),
                "paired": torch.tensor(n_paired / max(B, 1))}
        return -objective.mean(), logs

    # ------------------------------------------------------------------------------------ user API
    has_fused_posterior = False

    @torch.no_grad()
    def log_likelihood(self, batch: Batch, modalities: list[str] | None = None, k: int = 1000,
                       chunk: int = 100) -> Tensor:
        """log p(x_m) of one modality by importance sampling with q(z|x_m) (Burda et al. 2016, eq. 8) under
        the model of a row that observes only m: the prior is the pseudo-sample prior of the other
        modality (eq. 4 and 5), the likelihood unweighted. MEME defines no joint p(s, t) (its two
        directions model p(s|t) and p(t|s)), so for both modalities the result is NaN."""
        modalities = list(modalities or batch.modalities)
        x = batch.data[modalities[0]]
        if len(modalities) != 1:
            return torch.full((x.shape[0],), float("nan"), device=x.device)
        m = modalities[0]
        q = self._posterior(m, x)
        prior = self.pseudo_prior_components(self.other(m))
        total = None
        for start in range(0, k, chunk):
            z = q.sample((min(chunk, k - start),))                          # (k', B, D)
            out = self.decoders[m](z.reshape(-1, self.latent_dim))
            lp = self.likelihoods[m].log_prob(out.reshape(*z.shape[:2], *out.shape[1:]), x.unsqueeze(0))
            log_p = (mixture_log_density(prior, z) if prior is not None else
                     log_density(standard_prior(self.posterior_family, self.latent_dim, z.device), z))
            part = torch.logsumexp(lp + log_p - log_density(q, z), 0)
            total = part if total is None else torch.logaddexp(total, part)
        return total - math.log(k)

    @torch.no_grad()
    def encode(self, data: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> DiagonalMixture:
        """q(z | x_m) of the given modality; given both, the uniform mixture of the two encoders over the
        observed ones (MEME defines no joint posterior; this is for API uniformity only)."""
        mask = dict(mask or {})
        experts, masks = {}, {}
        for m, x in data.items():
            masks[m] = mask.get(m, torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
            experts[m] = self._posterior(m, x)
        return mixture_of_experts(experts, masks)

    @torch.no_grad()
    def embed(self, data: Mapping[str, Tensor]) -> Tensor:
        """Posterior means (B, D) (the mixture's mean when several modalities are given)."""
        return self.encode(data).mean

    @torch.no_grad()
    def latent_representations(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-modality posterior means {m: (B, D)}: MEME's latent-accuracy protocol uses unimodal ones."""
        return {m: self._posterior(m, x).loc for m, x in data.items()}

    @torch.no_grad()
    def decode(self, z: Tensor, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Likelihood means of the chosen modalities for latents z (N, D)."""
        return {m: self.likelihoods[m].mean(self.decoders[m](z)) for m in (modalities or self.modalities)}

    @torch.no_grad()
    def translate(self, data: Mapping[str, Tensor], targets: list[str] | None = None,
                  sample: bool = False) -> dict[str, Tensor]:
        """Generate ``targets`` from the given modality: encode, take the mean (or one sample), decode."""
        post = self.encode(data)
        z = post.rsample(1)[0] if sample else post.mean
        return self.decode(z, targets)

    @torch.no_grad()
    def reconstruct(self, data: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each given modality decoded from its own encoder's mean (MEME has no joint posterior)."""
        return {m: self.decode(self._posterior(m, x).loc, [m])[m] for m, x in data.items()}

    @torch.no_grad()
    def generate(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Unconditional samples: z from the pseudo-sample prior (``prior``), decoded by every decoder."""
        return self.decode(self.prior.sample((n,)), modalities)


def build_meme(specs: dict, cfg: Config, encoders: dict | None = None, decoders: dict | None = None) -> MEME:
    if cfg.prior not in (None, "standard"):
        raise UserError(f"meme: --set prior={cfg.prior} does not apply: MEME has no fixed prior to learn (a paired "
                        f"row's prior is the other modality's encoder, a single-modality row's the mixture over "
                        f"learned pseudo-samples, eq. 4); leave prior unset and tune --set pseudo_samples=N")
    opts = dict(cfg.extra)
    try:
        pseudo = int(opts.get("pseudo_samples", PSEUDO_SAMPLES))
        weight = float(opts.get("classifier_weight", CLASSIFIER_WEIGHT))
        direction = str(opts.get("direction_weight", "half"))
    except (TypeError, ValueError):
        raise UserError("meme: pseudo_samples must be an integer and classifier_weight a number "
                        f"(got {opts.get('pseudo_samples')!r}, {opts.get('classifier_weight')!r})") from None
    try:
        return MEME(specs, cfg.latent_dim, posterior=cfg.posterior, likelihoods=cfg.likelihood, scales=cfg.scale,
                    default_scale=cfg.default_scale, weights=cfg.weights, hidden=cfg.hidden, beta=cfg.beta,
                    k=cfg.k, classifier_weight=weight, pseudo_samples=pseudo, direction_weight=direction,
                    kl=cfg.kl, encoders=encoders,
                    decoders=decoders)
    except ValueError as e:
        raise UserError(f"meme: {e}") from None


register_model("meme", "Joy, Shi, Torr & Siddharth 2022, Learning Multimodal VAEs through Mutual Supervision",
               "two modalities supervise each other (bidirectional semi-supervised bound); unpaired rows use a "
               "pseudo-sample (VampPrior) prior; options pseudo_samples=N classifier_weight=c "
               "direction_weight=half|sum, k=K fresh samples (default 4; the paper's 10: --preset)",
               # k = 4 fresh samples for log q(t|s): at equal wall time 3.7x the steps of k = 10 and far higher
               # coherence (mnist-label, 90 s: 0.90/1.00 against 0.66/0.56; docs/defaults.md)
               dict(objective="meme", kl="analytic", posterior="normal", weights="uniform", k=4),
               min_modalities=2, max_modalities=2, options=("pseudo_samples", "classifier_weight", "direction_weight"))(build_meme)
