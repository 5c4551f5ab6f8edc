"""Normalising flows over the latent space: MADE blocks stacked into a Masked Autoregressive Flow (MAF),
and the flow posterior q(z | x) = T⁻¹ applied to a diagonal Gaussian.

* **MADE** (Germain et al. 2015): an MLP whose weight masks make output d depend on inputs < d only
  (sequential degrees: input d has degree d, hidden unit k degree k mod (D − 1)); it gives a shift μ and
  a log-scale s per dimension.
* **MAF** (Papamakarios et al. 2017): ``forward`` maps z to the base space, one MADE block at a time,
  u = (z − μ(z)) · exp(−s(z)), then reverses the order of the dimensions for the next block; the log
  |det ∂u/∂z| is −Σ s. ``inverse`` solves the same map back one dimension at a time (D passes per
  block). Density evaluation (training) is one pass; sampling (inference) is sequential.
  The layout and parameterisation are those of pythae's ``MAF`` (used by MultiVae's JNF: hidden 128,
  three hidden layers per MADE, two blocks, no batch norm), so weights carry over one to one.
* :class:`FlowPosterior`: z = T⁻¹(u), u ~ N(loc, scale); log q(z) = log N(T(z); loc, scale) + log |det ∂T/∂z|
  (the change of variables of Rezende & Mohamed 2015). Its ``mean`` is T⁻¹(loc), the image of the base
  mean (MultiVae's ``return_mean``), not E[z], which has no closed form.

Why not a flow library: zuko (the well-kept one on PyPI) soft-clips the MAF log-scale and orders its
masks differently, so the MultiVae parity of JNF (same weights → same loss) would not hold; the two
classes here are ~100 lines, checked against ``torch.autograd.functional.jacobian`` in float64
(tests/test_flows.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Normal, constraints

from .noise import GLOBAL_NOISE, Noise


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer: saved with the weights)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.mask * self.weight, self.bias)


class MADE(nn.Module):
    """x (N, D) -> (μ, s), each (N, D), output d a function of x_{<d} (sequential degrees)."""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (128, 128, 128)):
        super().__init__()
        self.dim = int(dim)
        degrees = [torch.arange(self.dim)] + [torch.arange(h) % max(self.dim - 1, 1) for h in hidden]
        layers: list[nn.Module] = []
        sizes = [self.dim, *hidden]
        for i in range(len(hidden)):
            mask = degrees[i + 1].unsqueeze(-1) >= degrees[i].unsqueeze(0)           # (out, in)
            layers += [MaskedLinear(sizes[i], sizes[i + 1], mask), nn.ReLU()]
        out_mask = degrees[-1].unsqueeze(0) < degrees[0].unsqueeze(-1)              # output d sees degrees < d
        layers.append(MaskedLinear(sizes[-1], 2 * self.dim, out_mask.repeat(2, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(x)
        return out[:, :self.dim], out[:, self.dim:]


class MAF(nn.Module):
    """A stack of MADE blocks, each followed by a reversal of the dimensions (see the module docstring)."""

    def __init__(self, dim: int, blocks: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        self.dim = int(dim)
        self.blocks = nn.ModuleList(MADE(dim, (hidden,) * layers) for _ in range(blocks))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """u = T(z) and log |det ∂T/∂z| for z (N, D): one pass per block."""
        logdet = z.new_zeros(z.shape[0])
        for made in self.blocks:
            mu, s = made(z)
            z = ((z - mu) * torch.exp(-s)).flip(-1)
            logdet = logdet - s.sum(-1)
        return z, logdet

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """z = T⁻¹(u) and log |det ∂T⁻¹/∂u| for u (N, D): D passes per block (dimension d needs z_{<d})."""
        logdet = u.new_zeros(u.shape[0])
        for made in reversed(self.blocks):
            y = u.flip(-1)
            z = torch.zeros_like(y)
            for d in range(self.dim):
                mu, s = made(z)
                z = z.index_copy(1, torch.tensor([d], device=z.device), (y[:, d] * s[:, d].exp() + mu[:, d])[:, None])
            mu, s = made(z)                          # the final parameters, for the log-determinant
            logdet = logdet + s.sum(-1)
            u = z
        return u, logdet


class FlowPosterior(Distribution):
    """q(z | x) of a Gaussian base N(loc, scale) (B, D) pushed through T⁻¹ of a :class:`MAF` (see module)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, base: Normal, flow: MAF):
        self.base, self.flow = base, flow
        super().__init__(base.loc.shape[:-1], base.loc.shape[-1:], validate_args=False)

    def _through(self, fn, x: Tensor) -> tuple[Tensor, Tensor]:
        lead = x.shape[:-1]
        y, logdet = fn(x.reshape(-1, x.shape[-1]))
        return y.reshape(x.shape), logdet.reshape(lead)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) for z (..., B, D) -> (..., B)."""
        u, logdet = self._through(self.flow, z)
        return self.base.log_prob(u).sum(-1) + logdet

    def rsample(self, sample_shape=torch.Size(), noise: Noise = GLOBAL_NOISE, name: str = "z") -> Tensor:
        """Reparameterised samples of shape ``sample_shape + (B, D)`` (an int K means (K,), as DiagonalMixture)."""
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        u = noise.rsample(self.base, shape, name)
        return self._through(self.flow.inverse, u)[0]

    def from_base(self, u: Tensor) -> Tensor:
        """T⁻¹(u) for base points u (..., B, D) (e.g. drawn by inversion from uniforms)."""
        return self._through(self.flow.inverse, u)[0]

    def from_uniforms(self, u: Tensor) -> Tensor:
        """z (K, B, D) from uniforms u (K, B, 1 + D) by inversion (``u[..., 0]`` unused: one component);
        the row-seeded sampling of evaluation/likelihood.py."""
        return self.from_base(self.base.icdf(u[..., 1:].clamp(1e-6, 1 - 1e-6)))

    @property
    def mean(self) -> Tensor:
        """T⁻¹(loc): the image of the base mean (not E[z]; see the module docstring)."""
        return self.from_base(self.base.loc)

    @property
    def stddev(self) -> Tensor:
        raise NotImplementedError("a flow posterior has no closed-form standard deviation")


class FlowMixture(Distribution):
    """The uniform mixture 1/|S| Σ_m q_m(z | x_m) of flow posteriors (one per given modality): a proper
    density to sample and score (importance sampling given a subset of modalities)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, components: list[FlowPosterior]):
        self.components = list(components)
        first = self.components[0]
        super().__init__(first.batch_shape, first.event_shape, validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        lq = torch.stack([c.log_prob(z) for c in self.components])
        return torch.logsumexp(lq, 0) - math.log(len(self.components))

    def from_uniforms(self, u: Tensor) -> Tensor:
        """Component picked by ``u[..., 0]``, then its inverse-CDF sample from ``u[..., 1:]``."""
        pick = (u[..., 0] * len(self.components)).long().clamp_max(len(self.components) - 1)
        z = torch.stack([c.from_uniforms(u) for c in self.components])               # (S, K, B, D)
        return torch.gather(z, 0, pick[None, ..., None].expand(1, *z.shape[1:]))[0]

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Samples of shape ``sample_shape + (B, D)`` (an int K means (K,)), from torch's generator."""
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        first = self.components[0].base.loc
        u = torch.rand(*shape, *first.shape[:-1], 1 + first.shape[-1], dtype=first.dtype, device=first.device)
        return self.from_uniforms(u.reshape(-1, *u.shape[-2:])).reshape(*shape, *first.shape)

    @property
    def mean(self) -> Tensor:
        """The average of the components' points T_m⁻¹(loc_m) (not E[z])."""
        return torch.stack([c.mean for c in self.components]).mean(0)
