"""What the throughput benchmarks race (bench/speed.py on CPU, bench/gpu.py on a GPU): settings, networks,
mmvae, MultiVae with the same networks, and a hand-written loss per model.

Settings (``SUITES``):
  * ``mlp``          image 1x28x28 (Bernoulli) + one-hot label (categorical), ReLU MLPs in-512-512-(20, 20)
                     and 20-512-out (MultiVae's default MLP shapes without the final sigmoid);
  * ``conv``         MNIST 1x28x28 (Bernoulli) + SVHN 3x32x32 (Laplace, scale 0.75): the library's default
                     convolutional networks (``mmvae.nets.conv``), synthetic images;
  * ``polymnist-3``, ``polymnist-5``: M modalities 3x28x28 (Laplace, scale 0.75), conv networks, synthetic.
Synthetic data: images uniform in [0, 1], one-hot labels (the cost of dense networks does not depend on
the values).

Contenders: ``mmvae`` (library defaults; on CPU ``vectorise=auto`` runs the per-modality loop),
``mmvae-fused`` (the same with the optimizer mmvae's Trainer uses: fused Adam; the other bare loops use
torch.optim.Adam's default implementation),
``mmvae-vec`` (``vectorise=true``), ``multivae`` (MultiVae with the very same modules wrapped in pythae's
Base{En,De}coder), ``multivae-textbook`` (the same weights in modules that run the textbook
``nn.Sequential`` forward, i.e. what MultiVae's own PolyMNIST/SVHN networks do: MultiVae as its users run
conv networks), ``multivae-bf16`` / ``multivae-textbook-bf16`` (those two with MultiVae's loss wrapped in
bf16 autocast by hand: MultiVae has no mixed-precision option), ``hand`` (a minimal
PyTorch loss written for that model alone, each network called once per step on a concatenated batch)
``trainer-step`` (``Trainer._step`` alone: the Trainer's per-step work, with its optimizer) and ``trainer``
(``mmvae.train.Trainer``, a fit of a few epochs). All start from the same weights.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Laplace

import mmvae
from mmvae.data.dataset import DatasetSplits, ModalitySpec, MultimodalDataset
from mmvae.nets.conv import ConvDecoder, ConvEncoder
from mmvae.train.trainer import LossModule, Trainer, make_adam

LATENT, HIDDEN, BATCH = 20, 512, 128
SCALE = 0.75          # Laplace likelihood scale (mmvae's default)
MODELS = ("mvae", "mmvae-elbo", "mmvae-dreg10", "mopoe")
IMPLS = ("mmvae", "mmvae-fused", "mmvae-bf16", "mmvae-vec", "multivae", "multivae-bf16", "multivae-textbook",
         "multivae-textbook-bf16", "hand", "trainer-step", "trainer")


@dataclass(frozen=True)
class Suite:
    name: str
    specs: dict
    nets: str                 # mlp | conv
    models: tuple[str, ...]
    rows: int                 # rows of one epoch (the trainer column)


def _image(name, shape, lik):
    return ModalitySpec(name, "image", shape, lik)


SUITES = {
    "mlp": Suite("mlp", {"image": _image("image", (1, 28, 28), "bernoulli"),
                         "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)},
                 "mlp", MODELS + ("meme",), 10_000),
    "conv": Suite("conv", {"mnist": _image("mnist", (1, 28, 28), "bernoulli"),
                           "svhn": _image("svhn", (3, 32, 32), "laplace")}, "conv", MODELS, 2_560),
    "polymnist-3": Suite("polymnist-3", {f"m{i}": _image(f"m{i}", (3, 28, 28), "laplace") for i in range(3)},
                         "conv", ("mmvae-elbo", "mopoe"), 2_560),
    "polymnist-5": Suite("polymnist-5", {f"m{i}": _image(f"m{i}", (3, 28, 28), "laplace") for i in range(5)},
                         "conv", ("mmvae-elbo", "mopoe"), 2_560),
}


# ----------------------------------------------------------------------------------- networks
class MLPEncoder(nn.Module):
    """x -> (loc, raw scale): in-512-512 ReLU, two linear heads (MultiVae's Encoder_VAE_MLP shape)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.loc = nn.Linear(HIDDEN, LATENT)
        self.raw_scale = nn.Linear(HIDDEN, LATENT)

    def forward(self, x):
        h = self.body(x.flatten(1))
        return self.loc(h), self.raw_scale(h)


class MLPDecoder(nn.Module):
    """z (N, D) -> logits (N, *shape): 20-512 ReLU-out (MultiVae's Decoder_AE_MLP shape, no sigmoid)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, math.prod(shape)))

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.shape)


class TextbookConvEncoder(ConvEncoder):
    """The library's conv encoder run as the plain nn.Sequential (NCHW, fused bias, out-of-place ReLU)."""

    def forward(self, x):
        return self.head(self.body(x)).chunk(2, dim=-1)


class TextbookConvDecoder(ConvDecoder):
    def forward(self, z):
        return self.net(z)


def make_networks(suite: Suite, seed: int, device="cpu") -> dict[str, dict[str, nn.Module]]:
    torch.manual_seed(seed)
    enc, dec = {}, {}
    for m, s in suite.specs.items():
        if suite.nets == "mlp":
            enc[m], dec[m] = MLPEncoder(math.prod(s.shape)), MLPDecoder(s.shape)
        else:
            enc[m], dec[m] = ConvEncoder(s.shape, LATENT), ConvDecoder(s.shape, LATENT)
    return {"encoders": {m: e.to(device) for m, e in enc.items()},
            "decoders": {m: d.to(device) for m, d in dec.items()}}


def textbook(nets: dict) -> dict:
    """The same weights in modules that run the textbook forward (conv networks only)."""
    out = {"encoders": {}, "decoders": {}}
    for kind, cls in (("encoders", TextbookConvEncoder), ("decoders", TextbookConvDecoder)):
        for m, net in nets[kind].items():
            if isinstance(net, (ConvEncoder, ConvDecoder)):
                twin = copy.deepcopy(net)
                twin.__class__ = cls
                out[kind][m] = twin
            else:
                out[kind][m] = copy.deepcopy(net)
    return out


# --------------------------------------------------------------------------------------- data
def make_data(suite: Suite, rows: int, seed: int = 0) -> MultimodalDataset:
    """Synthetic rows: images uniform in [0, 1], one-hot labels (the cost does not depend on values)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(10, (rows,), generator=g)
    data = {m: F.one_hot(label, s.shape[-1]).float() if s.kind == "categorical" else
            torch.rand(rows, *s.shape, generator=g) for m, s in suite.specs.items()}
    return MultimodalDataset(dict(suite.specs), data, label=label, num_classes=10)


# -------------------------------------------------------------------------------------- mmvae
MMVAE_CONFIGS = {
    "mvae": dict(model="mvae", objective="elbo", weights="uniform"),
    "mmvae-elbo": dict(model="mmvae", objective="elbo", k=1, posterior="laplace", weights="uniform"),
    # the authors' DReG, the estimator MultiVae's dreg_looser and the hand loop compute
    "mmvae-dreg10": dict(model="mmvae", objective="dreg-authors", k=10, posterior="laplace", weights="uniform"),
    "mopoe": dict(model="mopoe", objective="elbo", weights="uniform"),
    # MEME (two modalities): no MultiVae counterpart and no hand-written loss here, the library only
    "meme": dict(model="meme", weights="uniform"),
}
LIBRARY_ONLY = {"meme"}   # models raced by the library's own contenders only (mmvae*, trainer*)


def build_mmvae(name: str, specs, nets, vectorise="auto", **extra):
    cfg = mmvae.Config(**{"latent_dim": LATENT, "batch_size": BATCH, "vectorise": vectorise, **MMVAE_CONFIGS[name],
                          **extra})
    n = copy.deepcopy(nets)
    return mmvae.build_model(specs, cfg, encoders=n["encoders"], decoders=n["decoders"]), cfg


# ----------------------------------------------------------------------------------- MultiVae
def build_multivae(name: str, suite: Suite, nets):
    from multivae.models import MMVAE, MVAE, MMVAEConfig, MoPoE, MoPoEConfig, MVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    class WrappedEncoder(BaseEncoder):
        def __init__(self, net):
            BaseEncoder.__init__(self)
            self.net, self.latent_dim = net, LATENT

        def forward(self, x):
            loc, raw = self.net(x)
            return ModelOutput(embedding=loc, log_covariance=raw)

    class WrappedDecoder(BaseDecoder):
        """MultiVae's Laplace takes the location itself: the sigmoid mmvae's image likelihood applies."""

        def __init__(self, net, squash: bool):
            BaseDecoder.__init__(self)
            self.net, self.squash = net, squash

        def forward(self, z):
            out = self.net(z.reshape(-1, LATENT))
            out = torch.sigmoid(out) if self.squash else out
            return ModelOutput(reconstruction=out.reshape(*z.shape[:-1], *out.shape[1:]))

    n = copy.deepcopy(nets)
    specs = suite.specs
    common = dict(n_modalities=len(specs), latent_dim=LATENT, input_dims={m: s.shape for m, s in specs.items()},
                  decoders_dist={m: s.likelihood for m, s in specs.items()},
                  decoder_dist_params={m: {"scale": SCALE} for m, s in specs.items() if s.likelihood == "laplace"})
    encoders = {m: WrappedEncoder(e) for m, e in n["encoders"].items()}
    decoders = {m: WrappedDecoder(d, specs[m].likelihood == "laplace") for m, d in n["decoders"].items()}
    if name == "mvae":
        return MVAE(MVAEConfig(use_subsampling=True, k=0, warmup=0, **common), encoders, decoders)
    if name == "mopoe":
        return MoPoE(MoPoEConfig(**common), encoders, decoders)
    k, loss = (1, "iwae_looser") if name == "mmvae-elbo" else (10, "dreg_looser")
    return MMVAE(MMVAEConfig(K=k, loss=loss, prior_and_posterior_dist="laplace_with_softmax",
                             learn_prior=False, **common), encoders, decoders)


# ------------------------------------------------------------------------------ hand-written
def log_bernoulli(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)


def log_laplace(out, x):
    return (-(x - torch.sigmoid(out)).abs() / SCALE - math.log(2 * SCALE)).flatten(-3).sum(-1)


def log_categorical(logits, y):
    return (y * F.log_softmax(logits, dim=-1)).sum(-1)


LOG_LIKELIHOODS = {"bernoulli": log_bernoulli, "laplace": log_laplace, "categorical": log_categorical}


def normal_kl(loc, scale):
    return 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * scale.log()).sum(-1)


def products(member: torch.Tensor, loc, scale, prior_expert: bool):
    """Gaussian PoE of the subsets given by the (S, M) 0/1 matrix ``member``: loc, scale (S, B, D)."""
    prec = scale.pow(-2)                                                       # (M, B, D)
    total = torch.einsum("sm,mbd->sbd", member, prec) + (1.0 if prior_expert else 0.0)
    return torch.einsum("sm,mbd->sbd", member, prec * loc) / total, total.rsqrt()


class Hand(nn.Module):
    """The four losses written out for this suite's modalities, no library code."""

    def __init__(self, name: str, suite: Suite, nets):
        super().__init__()
        n = copy.deepcopy(nets)
        self.name, self.names = name, list(suite.specs)
        self.encs = nn.ModuleList(n["encoders"][m] for m in self.names)
        self.decs = nn.ModuleList(n["decoders"][m] for m in self.names)
        self.logliks = [LOG_LIKELIHOODS[suite.specs[m].likelihood] for m in self.names]
        self.shapes = [suite.specs[m].shape for m in self.names]
        m = len(self.names)
        self.subsets = [s for r in range(1, m + 1) for s in combinations(range(m), r)]

    def forward(self, xs):
        locs, raws = zip(*(e(x) for e, x in zip(self.encs, xs)))
        return getattr(self, self.name.split("-")[0])(xs, torch.stack(locs), torch.stack(raws))

    def _rec(self, m, z, x):
        """log p(x_m | z) for z (..., B, D): one decoder call."""
        out = self.decs[m](z.reshape(-1, LATENT))
        return self.logliks[m](out.view(*z.shape[:-1], *self.shapes[m]), x)

    def mvae(self, xs, loc, raw):
        # Subsampled ELBO (joint + unimodal), prior expert; decoder m reads the joint and its own stratum.
        m = len(xs)
        member = torch.cat([torch.ones(1, m), torch.eye(m)]).to(loc)
        loc_s, scale_s = products(member, loc, F.softplus(raw) + 1e-6, prior_expert=True)   # (M+1, B, D)
        z = loc_s + scale_s * torch.randn_like(loc_s)
        rec = sum(self._rec(i, z[[0, 1 + i]], x).sum(0) for i, x in enumerate(xs))
        return -(rec - normal_kl(loc_s, scale_s).sum(0)).mean()

    def mmvae(self, xs, loc, raw):
        # Stratified K samples per expert, every sample through every decoder in one call each.
        k = 10 if self.name.endswith("dreg10") else 1
        m = len(xs)
        scale = F.softmax(raw, dim=-1) * LATENT + 1e-6
        z = Laplace(loc, scale).rsample((k,)).transpose(0, 1)                   # (M, K, B, D)
        rec = sum(self._rec(i, z, x) for i, x in enumerate(xs))                 # (M, K, B)
        dreg = k > 1
        q = Laplace(loc.detach(), scale.detach()) if dreg else Laplace(loc, scale)
        log_q = torch.logsumexp(q.log_prob(z.unsqueeze(-3)).sum(-1), dim=-2) - math.log(m)
        log_p = (-z.abs() - math.log(2.0)).sum(-1)                               # Laplace(0, 1)
        lw = rec + log_p - log_q
        if dreg:
            w = torch.softmax(lw.detach(), dim=1)
            z.register_hook(lambda g: g * w.unsqueeze(-1))
            return -(w * lw).sum(1).mean()
        return -lw.mean()

    def mopoe(self, xs, loc, raw):
        # One z per row from the uniform mixture of the subset products; analytic KL averaged.
        member = torch.tensor([[float(i in s) for i in range(len(xs))] for s in self.subsets]).to(loc)
        loc_s, scale_s = products(member, loc, F.softplus(raw) + 1e-6, prior_expert=False)
        b = loc.shape[1]
        rows = torch.arange(b, device=loc.device)
        pick = torch.randint(len(self.subsets), (b,), device=loc.device)
        z = loc_s[pick, rows] + scale_s[pick, rows] * torch.randn_like(loc[0])
        rec = sum(self._rec(i, z, x) for i, x in enumerate(xs))
        return -(rec - normal_kl(loc_s, scale_s).mean(0)).mean()


# ------------------------------------------------------------------------------------ timing
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def make_step(loss_fn, params, optimizer=torch.optim.Adam):
    opt = optimizer(params, lr=1e-3)

    def step(idx):
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def shuffled_batches(rows: int, device="cpu", batch: int = BATCH):
    """Index batches of successive shuffled epochs, forever."""
    while True:
        perm = torch.randperm(rows, device=device)
        for i in range(0, rows, batch):
            yield perm[i:i + batch]


class Contender:
    """One implementation of one model. ``run(steps)`` trains ``steps`` steps (the trainer: one epoch)
    and returns (rows, seconds) by ``clock``; ``sync`` waits for the device (CUDA) before reading it."""

    def __init__(self, impl: str, name: str, suite: Suite, nets, data: MultimodalDataset, device="cpu",
                 clock=time.process_time, sync=None, batch_size: int = BATCH, amp: bool = False, epochs: int = 1,
                 **mmvae_options):
        self.impl, self.rows, self.clock, self.sync = impl, len(data), clock, sync or (lambda: None)
        self.batch_size, self.epochs = batch_size, epochs
        optimizer = torch.optim.Adam
        if impl == "mmvae-fused":   # the optimizer mmvae's Trainer uses (fused Adam where available)
            optimizer, impl = make_adam, "mmvae"
        elif impl == "mmvae-bf16":  # as the Trainer runs with amp=bf16 (amp=auto on a CPU or GPU with native bf16)
            optimizer, impl, amp = make_adam, "mmvae", True
        elif impl in ("multivae-bf16", "multivae-textbook-bf16"):   # MultiVae has no mixed precision: its loss
            impl, amp = impl[:-len("-bf16")], True                   # wrapped in autocast by hand
        tensors = [data.data[m].to(device) for m in suite.specs]
        if impl in ("mmvae", "mmvae-vec", "mmvae-compiled", "trainer", "trainer-step"):
            vec = True if impl == "mmvae-vec" else mmvae_options.pop("vectorise", "auto")
            model, cfg = build_mmvae(name, data.specs, nets, vectorise=vec, batch_size=batch_size, **mmvae_options)
            cfg.amp = "bf16" if amp else "off"   # the Trainer's own precision, as the bare loop it is compared with
            self.model = model.to(device)
            if impl == "trainer":
                self.cfg, self.splits = cfg, DatasetSplits(data, data.subset(torch.arange(batch_size)))
                return
            if impl == "trainer-step":   # Trainer._step alone: the per-step work of the Trainer
                self._tmp = tempfile.TemporaryDirectory()
                cfg.out, cfg.val_fraction, cfg.device = str(Path(self._tmp.name) / "run"), 0.0, str(device)
                trainer = Trainer(cfg, splits=DatasetSplits(data, data.subset(torch.arange(batch_size))),
                                  model=self.model, show_progress=False)
                trainer.started = time.time()
                self.step = lambda idx: trainer._step(idx, 1.0)
                self.batches = shuffled_batches(self.rows, device, batch_size)
                return
            on_device = MultimodalDataset(dict(data.specs), {m: t for m, t in zip(suite.specs, tensors)},
                                          mask={m: torch.ones(len(data), dtype=torch.bool, device=device)
                                                for m in suite.specs})
            call = model.loss
            if impl == "mmvae-compiled":   # what Trainer does with --compile
                call = LossModule(model)
                call.compile()
            loss = lambda idx: call(on_device.batch(idx), 1.0)[0]  # noqa: E731
        elif impl in ("multivae", "multivae-textbook"):
            from multivae.data.datasets.base import MultimodalBaseDataset

            model = self.model = build_multivae(name, suite, textbook(nets) if impl == "multivae-textbook" else nets)
            model.to(device).train()
            names = list(suite.specs)
            loss = lambda idx: model(MultimodalBaseDataset(  # noqa: E731
                {m: t[idx] for m, t in zip(names, tensors)})).loss
        elif impl == "hand":
            model = self.model = Hand(name, suite, nets).to(device)
            loss = lambda idx: model([t[idx] for t in tensors])  # noqa: E731
        else:
            raise ValueError(f"unknown implementation {impl!r}")
        if amp:   # bf16 autocast of the forward pass, as Trainer's --amp bf16
            plain, kind = loss, torch.device(device).type

            def loss(idx):
                with torch.autocast(device_type=kind, dtype=torch.bfloat16):
                    out = plain(idx)
                return out.float()

        self.step = make_step(loss, model.parameters(), optimizer)
        self.batches = shuffled_batches(self.rows, device, batch_size)

    def run(self, steps: int) -> tuple[int, float]:
        if self.impl == "trainer":
            return self._trainer_epoch()
        idx = [next(self.batches) for _ in range(steps)]
        self.sync()
        t0 = self.clock()
        for i in idx:
            self.step(i)
        self.sync()
        return sum(len(i) for i in idx), self.clock() - t0

    def _trainer_epoch(self) -> tuple[int, float]:
        """``Trainer.fit`` of ``epochs`` epochs (run folder, config, checkpoints at ``cfg.checkpoint_every``,
        samples.png)."""
        with tempfile.TemporaryDirectory() as tmp:
            cfg = copy.deepcopy(self.cfg)
            cfg.out, cfg.epochs, cfg.val_fraction, cfg.device = str(Path(tmp) / "run"), self.epochs, 0.0, "cpu"
            trainer = Trainer(cfg, splits=self.splits, model=self.model, show_progress=False)
            with contextlib.redirect_stderr(io.StringIO()):
                t0 = self.clock()
                trainer.fit()
                return self.rows * self.epochs, self.clock() - t0
