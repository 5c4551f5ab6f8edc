"""Command line: a thin layer over the Python API. Errors a user can fix print one line and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import Config, apply_overrides
from .errors import UserError
from .threads import default_threads, set_threads

EPILOG = """defaults, chosen by measurement (bench/quality.py, docs/defaults.md): vae, mvae, mmvae, mopoe and meme have
  Gaussian posteriors, an N(0, I) prior, uniform weights and the ELBO (meme: its own bound); images in [0, 1]
  (grey or colour, built-in or .npz): Bernoulli likelihood, an MLP with one hidden layer of `hidden` units;
  labels and words: Categorical; text: an MLP over the one-hot words up to 4096 inputs (L x V), else text-cnn;
  other arrays: Normal with scale default_scale, an MLP with two hidden layers. Each run's config.json names
  every modality's network (config.network). Papers' settings: --preset NAME.
common --set keys: objective=elbo|iwae|dreg  k=K  beta=B  warmup=EPOCHS  posterior=normal|laplace
  likelihood.<modality>=bernoulli|continuous_bernoulli|normal|laplace|categorical  scale.<modality>=0.75|learned
  network.<modality>=mlp|mlp2|conv|text-cnn|mnist-mlp|mvae-mlp  weights=uniform|rescale  weights.<modality>=λ
  subsample_k=K (mvae)  data.<option>=V (e.g. data.modalities=5)
  paired_fraction=F  observed=<modality>|split  val_fraction=F  grad_clip=G  max_rollbacks=N  max_steps=N
  time_limit=SECONDS  checkpoint_every=SECONDS (0: every epoch; a SIGKILL loses at most this plus one epoch)
  hidden=H  activation=relu|silu|gelu|elu|leaky_relu|tanh|softplus (default networks)
  amsgrad=true  amp=auto|off|bf16 (auto, the default: bf16 autocast where the device runs bf16 natively)
  compile=true  grad_accum=N  log=tensorboard
  vectorise=auto|true|false (identically shaped experts as one batched call; auto: on CUDA)
several GPUs or nodes: torchrun --nproc_per_node N -m mmvae train ...  (docs/distributed.md)"""


def _defaults_text() -> str:
    """The defaults of the --set keys, read from Config (never written twice)."""
    from dataclasses import fields

    shown = []
    for f in fields(Config):
        if f.name in ("model", "dataset", "epochs", "batch_size", "lr", "latent_dim", "seed", "out", "device",
                      "max_steps", "time_limit", "data", "extra", "preset"):
            continue
        value = getattr(_DEFAULTS, f.name)
        unset = {"modalities": "all", "prior": "standard"}.get(f.name, "the model's")   # what None means
        text = unset if value is None else \
            ("{}" if value == {} else str(value).lower() if isinstance(value, bool) else str(value))
        shown.append(f"{f.name}={text}")
    lines, line = [], "defaults:"
    for item in shown:
        if len(line) + len(item) > 100:
            lines.append(line)
            line = " "
        line += " " + item
    return "\n".join(lines + [line])


_DEFAULTS = Config()


def _train(args) -> int:
    from .train.trainer import train

    cfg = Config()
    if args.resume and args.out:
        # Continue with the run's own settings unless given again (safe ones only: train/resume.py);
        # the slice limits --max-steps / --time-limit belong to one invocation and start unset.
        from .runs import read_run

        cfg = Config.from_dict(read_run(Path(args.out))["config"])
        cfg.max_steps, cfg.time_limit = 0, 0.0
    if args.preset:
        from .presets import apply_preset

        if args.resume:
            raise UserError("--preset does not go with --resume: the run folder's config.json already holds its settings")
        apply_preset(cfg, args.preset, dataset=args.dataset)   # explicit flags and --set below override it
    for key in ("model", "dataset", "epochs", "batch_size", "lr", "latent_dim", "seed", "out", "device",
                "max_steps", "time_limit"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    if args.data_dir is not None:
        if not Path(args.data_dir).expanduser().is_dir():
            raise UserError(f"--data-dir {args.data_dir} is not a folder: give the folder that holds the dataset files")
        cfg.data = {**cfg.data, "data_dir": str(Path(args.data_dir).expanduser())}
    apply_overrides(cfg, args.set or [])
    if args.resume and not args.out:
        raise UserError("--resume needs --out RUN_DIR (the run folder to continue)")
    _check_positive(cfg)
    out = train(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":   # under torchrun, rank 0 speaks for all
        print(f"run folder: {out}")
    return 0


def _check_positive(cfg: Config) -> None:
    for key in ("epochs", "batch_size", "latent_dim"):
        if int(getattr(cfg, key)) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(cfg, key)}")
    if not cfg.lr > 0:
        raise UserError(f"--lr must be positive, got {cfg.lr}")
    if not 0 <= cfg.val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if not (cfg.beta >= 0 and (cfg.warmup or 0) >= 0):
        raise UserError(f"beta and warmup must be >= 0, got beta={cfg.beta}, warmup={cfg.warmup}")


def _sample(args) -> int:
    from .evaluation.pictures import sample_grid
    from .runs import load_run

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    run = load_run(args.run)
    out = Path(args.out) if args.out else run.path / f"samples-seed{args.seed}.png"
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    import torch

    test = run.dataset().test
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            sample_grid(run.model, test, out, n=args.n)
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror}): give --out FILE.png in a writable folder") from None
    print(out)
    return 0


def _models(args) -> int:
    from .models.registry import MODELS
    from .models import builtin  # noqa: F401

    for name, e in MODELS.items():
        print(f"{name:8s} {e.description}  [{e.paper}]")
    return 0


def _datasets(args) -> int:
    from .data import builtin  # noqa: F401
    from .data.registry import DATASETS

    width = max(len(n) for n in DATASETS)
    print(f"{'name':{width}s}  {'status':7s}  description (where the data is)")
    for name, e in DATASETS.items():
        ok, how = e.available()
        print(f"{name:{width}s}  {'ready' if ok else 'missing':7s}  {e.description}  ({how})")
    return 0


def _presets(args) -> int:
    from .presets import describe

    print(describe(args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmvae", description="Multimodal variational autoencoders.")
    p.add_argument("--version", action="version", version=_version_text())
    sub = p.add_subparsers(dest="command", required=True)
    d = _DEFAULTS
    t = sub.add_parser("train", help="train a model into a run folder", epilog=EPILOG + "\n" + _defaults_text(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", help=f"model name (see `mmvae models`); default {d.model}")
    t.add_argument("--dataset", help=f"dataset name (see `mmvae datasets`) or PATH.npz / folder of .npy; "
                                     f"default {d.dataset}")
    t.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    t.add_argument("--batch-size", type=int, dest="batch_size", help=f"default {d.batch_size}")
    t.add_argument("--lr", type=float, help=f"Adam learning rate; default {d.lr:g}")
    t.add_argument("--latent-dim", type=int, dest="latent_dim", help=f"default {d.latent_dim}")
    t.add_argument("--seed", type=int, help=f"default {d.seed}")
    t.add_argument("--out", help="run folder (default runs/<model>-<dataset>)")
    t.add_argument("--device", help=f"auto | cpu | cuda; default {d.device}")
    t.add_argument("--max-steps", type=int, dest="max_steps", metavar="N",
                   help="stop (resumably) once the run has taken N optimizer steps in all; 0: no limit")
    t.add_argument("--time-limit", type=float, dest="time_limit", metavar="SECONDS",
                   help="stop (resumably) after this many seconds of training in this invocation")
    t.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                   help="folder with the dataset's files (DIR/<dataset>/ or DIR), used as is: no download")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped; --lr, --epochs, --max-steps, "
                        "--time-limit and training-only --set keys may change (recorded in metrics.jsonl)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other option (repeatable)")
    t.add_argument("--preset", metavar="NAME", help="start from a paper's published setting (see `mmvae presets`); "
                   "flags and --set override it")
    t.set_defaults(func=_train)
    t.add_argument("--quiet", action="store_true", help="no progress lines inside epochs (the line per epoch stays)")
    s = sub.add_parser("sample", help="draw a sample grid of a trained run into a new file")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=8, help="columns (test rows and prior samples); default 8")
    s.add_argument("--seed", type=int, default=0, help="seed of the prior samples; default 0")
    s.add_argument("--out", help="PNG file (default RUN/samples-seed<SEED>.png; the training-time "
                                 "RUN/samples.png is kept)")
    s.set_defaults(func=_sample)
    sub.add_parser("models", help="list the models").set_defaults(func=_models)
    sub.add_parser("datasets", help="list the datasets and whether their data is here").set_defaults(func=_datasets)
    ps = sub.add_parser("presets", help="list the paper presets (mmvae train --preset NAME), or show one")
    ps.add_argument("name", nargs="?", help="a preset to show in full")
    ps.set_defaults(func=_presets)
    _add_optional_commands(sub)
    for name in ("train", "evaluate", "sample"):
        if name in sub.choices:
            sub.choices[name].add_argument(
                "--threads", type=int, metavar="N",
                help=f"CPU threads for torch; default: OMP_NUM_THREADS if set, else half the cores, 1 to 4 "
                     f"({default_threads()} here)")
    return p


def _add_optional_commands(sub) -> None:
    """Commands defined in their own modules register here (evaluate, compare)."""
    from .compare import add_command as add_compare
    from .evaluation.command import add_command

    add_command(sub)
    add_compare(sub)


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"mmvae {__version__} (torch {torch}, Python {sys.version.split()[0]})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import progress
    from .train.trainer import Terminated, TrainingDiverged

    try:
        if hasattr(args, "threads"):
            set_threads(args.threads)
        progress.configure(quiet=bool(getattr(args, "quiet", False)))
        return args.func(args)
    except UserError as e:
        print(f"mmvae: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"mmvae: {e}", file=sys.stderr)
        return 3
    except Terminated:
        print("mmvae: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("mmvae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # the reader went away (e.g. `mmvae datasets | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
