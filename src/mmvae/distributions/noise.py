"""Where the randomness of an objective comes from: the base noise ε of reparameterised samples
z = loc + scale · ε, and the component picked when sampling from a mixture.

Estimators and models take an optional ``noise`` argument (``model.loss(batch, noise=...)``). The
default, :data:`GLOBAL_NOISE`, draws exactly as ``torch.distributions`` does from torch's global
generator (so training, seeding and exact resume are unchanged). :class:`FixedNoise` hands out given
tensors by name, which makes a loss a deterministic function of the parameters: the parity tests feed
the same ε to the library and to an independently written formula, and the gradient tests compare two
estimators on the same draws.

Names used by the library (shapes: K samples, G components, B rows, D latent dimensions):

* ``"z"``: the estimators' samples. Stratified (MMVAE, MVAE's subsets): ε of shape (K, G, B, D), the
  samples of component g being loc[g] + scale[g] · ε[:, g]. From the mixture (MoPoE): the pick (K, B)
  under the same name in ``picks``, then ε of shape (K, B, D) (one component: (K, 1, B, D)).
* MEME: ``"z/<m>"`` (N_m, D), the one sample per row observing m (rows in batch order);
  ``"fresh/<m>"`` (K, P, D), the K fresh samples of q(z | x_m) on the P paired rows (App. D).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor
from torch.distributions import Distribution, Laplace, Normal


class Noise:
    """torch's global generator, drawn the way ``torch.distributions`` draws (the default)."""

    def rsample(self, dist: Distribution, shape: tuple[int, ...], name: str) -> Tensor:
        """A reparameterised sample of ``shape + dist.batch_shape``."""
        return dist.rsample(shape)

    def choice(self, weight: Tensor, k: int, name: str) -> Tensor:
        """K component indices per row (K, B), row b drawn from the weights ``weight[:, b]`` (G, B)."""
        return torch.multinomial(weight.t().clamp_min(0), k, replacement=True).t()


GLOBAL_NOISE = Noise()


def standard_noise(family: type, shape: tuple[int, ...], generator: torch.Generator | None = None,
                   dtype=torch.float32, device=None) -> Tensor:
    """ε of the standard member of ``family`` (Normal(0, 1) or Laplace(0, 1)), so that loc + scale · ε
    has the distribution family(loc, scale)."""
    if family is Normal:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if family is Laplace:   # inverse CDF, as torch's Laplace.rsample
        u = torch.rand(shape, generator=generator, dtype=dtype, device=device) * 2 - 1
        u = u.clamp(-1 + torch.finfo(dtype).eps, 1 - torch.finfo(dtype).eps)
        return -torch.sign(u) * torch.log1p(-u.abs())
    raise ValueError(f"no standard noise for {family.__name__}: use Normal or Laplace")


class FixedNoise(Noise):
    """Noise given by name: ``eps[name]`` (standard noise of the distribution's family) and ``picks[name]``.

    A name that is not given is drawn once from ``generator`` (seeded: ``FixedNoise(seed=3)``) and kept,
    so passing the same object to two losses gives both the same draws; ``eps`` and ``picks`` then hold
    what was used (for a reference formula to read back).
    """

    def __init__(self, eps: Mapping[str, Tensor] | None = None, picks: Mapping[str, Tensor] | None = None,
                 seed: int | None = 0):
        self.eps = dict(eps or {})
        self.picks = dict(picks or {})
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def _missing(self, name: str, what: str):
        if self.generator is None:
            raise KeyError(f"FixedNoise has no {what} named {name!r} and no seed to draw one")

    def rsample(self, dist, shape, name):
        expected = torch.Size(shape) + dist.batch_shape
        if name not in self.eps:
            self._missing(name, "noise")
            self.eps[name] = standard_noise(type(dist), tuple(expected), self.generator, dist.loc.dtype).to(dist.loc.device)
        eps = self.eps[name].to(dist.loc.device, dist.loc.dtype)
        if eps.shape != expected:
            raise ValueError(f"noise {name!r} has shape {tuple(eps.shape)}, the sample needs {tuple(expected)}")
        return dist.loc + dist.scale * eps

    def choice(self, weight, k, name):
        if name not in self.picks:
            self._missing(name, "pick")
            self.picks[name] = torch.multinomial(weight.detach().t().clamp_min(0).cpu().double(), k, replacement=True,
                                                 generator=self.generator).t().to(weight.device)
        pick = self.picks[name].to(weight.device)
        if pick.shape != (k, weight.shape[1]):
            raise ValueError(f"pick {name!r} has shape {tuple(pick.shape)}, expected {(k, weight.shape[1])}")
        return pick
