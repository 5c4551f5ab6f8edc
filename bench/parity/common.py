"""Shared pieces of the MultiVae parity scripts (run them with the Python of a MultiVae 1.0.3 install).

The library's model is built first; MultiVae's model is then given *the same network modules* wrapped
in MultiVae's interfaces (so the initial weights are identical by construction), the same batch and the
same standard-normal noise (MultiVae's sampling function is replaced by one that hands out the noise the
library's FixedNoise uses). Both losses are differentiated with respect to the shared parameters and
compared in float64.

Gaussian heads: the library's encoders give (loc, raw) with scale = softplus(raw) + 1e-6; the wrapper
hands MultiVae log_covariance = 2 log(scale), so both sides see the same distribution.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))       # the checkout this script lives in, whatever is installed

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from multivae.models.nn.base_architectures import BaseDecoder, BaseEncoder, BaseJointEncoder  # noqa: E402

TOL = 1e-6


def toy_inputs(batch: int) -> dict:
    """The float64 batch every parity script uses: a (5-d Gaussian), b (one-hot of 3), c (4-d Gaussian), seed 1."""
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randn(batch, 5, generator=g, dtype=torch.float64),
            "b": F.one_hot(torch.randint(0, 3, (batch,), generator=g), 3).double(),
            "c": torch.randn(batch, 4, generator=g, dtype=torch.float64)}


def fixed_normal(eps):
    """A stand-in for torch.distributions inside a MultiVae model module: Normal.rsample returns loc + scale·ε."""
    import types

    class Normal(torch.distributions.Normal):
        def rsample(self, sample_shape=torch.Size()):
            assert tuple(sample_shape) == ()
            return self.loc + self.scale * eps
    return types.SimpleNamespace(Normal=Normal)


def gaussian_head(out, latent_dim: int):
    loc, raw = out if isinstance(out, (tuple, list)) else (out[..., :latent_dim], out[..., latent_dim:])
    return loc, 2 * torch.log(F.softplus(raw) + 1e-6)


class Encoder(BaseEncoder):
    """A library encoder (x -> loc, raw) as a MultiVae encoder (embedding, log_covariance)."""

    def __init__(self, net, latent_dim: int):
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, x):
        loc, log_var = gaussian_head(self.net(x), self.latent_dim)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class JointEncoder(BaseJointEncoder):
    """A library joint encoder ({m: x} -> loc, raw) as a MultiVae joint encoder."""

    def __init__(self, net, latent_dim: int):
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, x: dict):
        loc, log_var = gaussian_head(self.net(x), self.latent_dim)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class Decoder(BaseDecoder):
    """A library decoder (z -> likelihood parameters) as a MultiVae decoder."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z))


class NoiseQueue:
    """Replaces MultiVae's ``rsample_from_gaussian``: hands out the given ε tensors in call order."""

    def __init__(self, eps: list):
        self.eps = list(eps)

    def __call__(self, mu, log_var, N=1, return_mean=False, flatten=False):
        assert N == 1 and not return_mean, "parity runs draw one sample per call"
        return mu + torch.exp(0.5 * log_var) * self.eps.pop(0)


def grad_gap(ours, theirs, named) -> tuple[float, str]:
    """Largest relative difference between the gradients of two losses over the named parameters, and where."""
    named = list(named)
    g1 = torch.autograd.grad(ours, [p for _, p in named], retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(theirs, [p for _, p in named], retain_graph=True, allow_unused=True)
    worst, where = 0.0, ""
    for (n, p), a, b in zip(named, g1, g2):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        d = float((a - b).abs().max() / (1 + b.abs().max()))
        if d > worst:
            worst, where = d, n
    return worst, where


def value_gap(ours, theirs) -> float:
    ours, theirs = float(torch.as_tensor(ours).detach()), float(torch.as_tensor(theirs).detach())
    return abs(ours - theirs) / (1 + abs(theirs))


def report(label: str, ours, theirs, n_grads: int, grad: tuple[float, str], tol: float = TOL,
           expect_equal: bool = True) -> bool:
    dv = value_gap(ours, theirs)
    same = dv <= tol and grad[0] <= tol
    verdict = ("PASS" if same else "FAIL") if expect_equal else ("differs as expected" if not same else "FAIL (no difference)")
    print(f"{label}: loss ours {float(torch.as_tensor(ours).detach()):.10f} multivae "
          f"{float(torch.as_tensor(theirs).detach()):.10f} (rel. diff {dv:.1e}); gradients of {n_grads} tensors: "
          f"max rel. diff {grad[0]:.1e}{' at ' + grad[1] if grad[1] else ''} -> {verdict}")
    return same == expect_equal


def compare(label: str, ours, theirs, params, tol: float = TOL, expect_equal: bool = True) -> bool:
    """Loss values and the gradients of ``params`` (named) of two losses; prints one line, returns the verdict."""
    named = list(params)
    return report(label, ours, theirs, len(named), grad_gap(ours, theirs, named), tol, expect_equal)
