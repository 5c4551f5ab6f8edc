"""MVAE (Wu & Goodman 2018) against formulas written here from the authors' MNIST code
(mhw32/multimodal-vae-public, mnist/train.py and mnist/model.py): float64, fixed noise, the subsampled
objective's value and the gradients of every parameter to 1e-6.

Image (Bernoulli on grey levels, BCE with logits) + label (categorical), λ_image = 1, λ_label = 10 as the
authors' defaults; the objective is ELBO(joint) + ELBO(image) + ELBO(label), each a batch mean with the
closed-form KL of the product of experts (prior expert N(0, I)), KL weight β = the annealing factor.
Their product adds eps = 1e-8 twice to each variance and once to the product's (`ProductOfExperts`);
the reference does the same, the library adds 1e-8 once (a difference of order 1e-8, inside the
tolerance). Rows with a missing modality (not in the authors' code) follow the paper: a row contributes
the ELBOs of the subsets it observes.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmvae.config import Config
from mmvae.data.batch import Batch
from mmvae.data.dataset import ModalitySpec
from mmvae.distributions.noise import FixedNoise
from mmvae.models.registry import build_model

SPECS = {"image": ModalitySpec("image", "image", (1, 28, 28), "bernoulli"),
         "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}
D, B = 4, 5
LAMBDA = {"image": 1.0, "label": 10.0}
SUBSETS = [("image", "label"), ("image",), ("label",)]     # joint, then unimodal (training_subsets order)
EPS = 1e-8


def make_model():
    torch.manual_seed(0)
    return build_model(SPECS, Config(model="mvae", latent_dim=D, hidden=16, weights=dict(LAMBDA))).double()


def make_batch(missing: bool) -> Batch:
    g = torch.Generator().manual_seed(1)
    data = {"image": torch.rand(B, 1, 28, 28, generator=g, dtype=torch.float64),
            "label": F.one_hot(torch.randint(0, 10, (B,), generator=g), 10).double()}
    mask = {m: torch.ones(B, dtype=torch.bool) for m in SPECS}
    if missing:
        mask["label"][[0, 3]] = False
        mask["image"][1] = False
    return Batch(data, mask)


def bce_with_logits(logits, target):                       # train.py: binary_cross_entropy_with_logits
    return torch.clamp(logits, 0) - logits * target + torch.log(1 + torch.exp(-torch.abs(logits)))


def cross_entropy(logits, onehot, eps=1e-6):               # train.py: cross_entropy (log softmax + log loss)
    return -(onehot * F.log_softmax(logits + eps, dim=1))


def reference_loss(model, batch, eps, beta, subsets=SUBSETS):
    mu, logvar = {}, {}
    for m in SPECS:
        loc, raw = model.encoders[m](batch.data[m])
        scale = F.softplus(raw) + 1e-6                     # the library's Gaussian head (documented)
        mu[m], logvar[m] = loc, 2 * torch.log(scale)
    total = 0.0
    for s, subset in enumerate(subsets):
        # ProductOfExperts with the universal prior expert N(0, 1) (model.py: prior_expert, infer)
        mus = [torch.zeros(B, D, dtype=torch.float64)] + [mu[m] for m in subset]
        logvars = [torch.zeros(B, D, dtype=torch.float64)] + [logvar[m] for m in subset]
        var = torch.exp(torch.stack(logvars)) + EPS
        T = 1.0 / (var + EPS)
        pd_mu = (torch.stack(mus) * T).sum(0) / T.sum(0)
        pd_var = 1.0 / T.sum(0)
        pd_logvar = torch.log(pd_var + EPS)
        z = pd_mu + torch.exp(0.5 * pd_logvar) * eps[0, s]                        # reparametrize
        image_bce = label_ce = 0.0
        if "image" in subset:
            logits = model.decoders["image"](z).reshape(B, -1)
            image_bce = bce_with_logits(logits, batch.data["image"].reshape(B, -1)).sum(1)
        if "label" in subset:
            label_ce = cross_entropy(model.decoders["label"](z), batch.data["label"]).sum(1)
        kld = -0.5 * torch.sum(1 + pd_logvar - pd_mu.pow(2) - pd_logvar.exp(), dim=1)
        elbo = LAMBDA["image"] * image_bce + LAMBDA["label"] * label_ce + beta * kld   # elbo_loss, per row
        usable = torch.stack([batch.mask[m] for m in subset]).all(0).double()
        total = total + (usable * elbo).mean()                                       # torch.mean over the batch
    return total


@pytest.mark.parametrize("missing", [False, True], ids=["paired", "one-missing"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_subsampled_objective_matches_the_authors_formulas(beta, missing):
    model, batch = make_model(), make_batch(missing)
    eps = torch.randn(1, len(SUBSETS), B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss, logs = model.loss(batch, beta, noise=FixedNoise({"z": eps}, seed=None))
    ref = reference_loss(model, batch, eps, beta)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(-logs["bound"], ref.detach(), rtol=1e-6, atol=1e-6)
    params = [p for p in model.parameters()]
    g_lib = torch.autograd.grad(loss, params, retain_graph=True)
    g_ref = torch.autograd.grad(ref, params)
    for (n, _), a, b in zip(model.named_parameters(), g_lib, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda s, n=n: f"{n}: {s}")
    # and the comparison can fail: the objective without the unimodal label ELBO is seen
    assert abs(float(reference_loss(model, batch, eps, beta, SUBSETS[:2]).detach()) - float(loss.detach())) > 1e-3
