"""Command line: a thin layer over the Python API. Errors a user can fix print one line and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import Config, apply_overrides
from .errors import UserError

EPILOG = """defaults (chosen by bench/quality.py, docs/defaults.md): mopoe on mnist-label, 60 epochs, batch 128, Adam
  lr 1e-3, latent 20; every model: Gaussian posteriors, N(0, I) prior, uniform weights, ELBO (meme: its own
  bound); images in [0, 1] (grey or colour, built-in or .npz): Bernoulli likelihood and an MLP with one hidden
  layer of 400; labels and words: Categorical; other arrays: Normal, scale 0.75. Paper settings: --preset.
common --set keys: objective=elbo|iwae|dreg  k=K  beta=B  warmup=EPOCHS  posterior=normal|laplace
  likelihood.<modality>=bernoulli|continuous_bernoulli|normal|laplace|categorical  scale.<modality>=0.75|learned
  network.<modality>=mlp|conv|mnist-mlp|mvae-mlp  weights=uniform|rescale  weights.<modality>=λ
  subsample_k=K (mvae)  data.<option>=V (e.g. data.modalities=5)
  paired_fraction=F  observed=<modality>|split  val_fraction=F  grad_clip=G  max_rollbacks=N  max_steps=N
  time_limit=SECONDS  hidden=H  amsgrad=true  amp=off|bf16  compile=true  grad_accum=N
several GPUs or nodes: torchrun --nproc_per_node N -m mmvae train ...  (docs/distributed.md)"""


def _train(args) -> int:
    from .train.trainer import read_run_config, train

    cfg = Config()
    if args.resume and args.out:
        # Continue with the run's own settings (epochs, device, amp...) unless given again; the slice
        # limits --max-steps / --time-limit belong to one invocation and start unset.
        cfg = Config.from_dict(read_run_config(Path(args.out))["config"])
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
    out = Path(args.out) if args.out else run.path / "samples.png"
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    sample_grid(run.model, run.dataset().test, out, n=args.n)
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

    for name, e in DATASETS.items():
        ok, how = e.available()
        print(f"{name:12s} {'ready  ' if ok else 'missing'}  {e.description}  ({how})")
    return 0


def _presets(args) -> int:
    from .presets import describe

    print(describe(args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmvae", description="Multimodal variational autoencoders.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model into a run folder", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", help="model name (see `mmvae models`); default mopoe")
    t.add_argument("--dataset", help="dataset name (see `mmvae datasets`) or PATH.npz / folder of .npy; "
                                     "default mnist-label")
    t.add_argument("--epochs", type=int, help="default 60")
    t.add_argument("--batch-size", type=int, dest="batch_size", help="default 128")
    t.add_argument("--lr", type=float, help="Adam learning rate, default 1e-3")
    t.add_argument("--latent-dim", type=int, dest="latent_dim", help="default 20")
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="run folder (default runs/<model>-<dataset>)")
    t.add_argument("--device", help="auto | cpu | cuda")
    t.add_argument("--max-steps", type=int, dest="max_steps", metavar="N",
                   help="stop (resumably) once the run has taken N optimizer steps in all; 0: no limit")
    t.add_argument("--time-limit", type=float, dest="time_limit", metavar="SECONDS",
                   help="stop (resumably) after this many seconds of training in this invocation")
    t.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                   help="folder with the dataset's files (DIR/<dataset>/ or DIR), used as is: no download")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other option (repeatable)")
    t.add_argument("--preset", metavar="NAME", help="start from a paper's published setting (see `mmvae presets`); "
                   "flags and --set override it")
    t.set_defaults(func=_train)
    s = sub.add_parser("sample", help="draw the sample grid of a trained run")
    s.add_argument("run")
    s.add_argument("--n", type=int, default=8)
    s.add_argument("--out", help="PNG file (default RUN/samples.png)")
    s.set_defaults(func=_sample)
    sub.add_parser("models", help="list the models").set_defaults(func=_models)
    sub.add_parser("datasets", help="list the datasets and whether their data is here").set_defaults(func=_datasets)
    ps = sub.add_parser("presets", help="list the paper presets (mmvae train --preset NAME), or show one")
    ps.add_argument("name", nargs="?", help="a preset to show in full")
    ps.set_defaults(func=_presets)
    _add_optional_commands(sub)
    return p


def _add_optional_commands(sub) -> None:
    """Commands defined in their own modules register here (e.g. evaluate)."""
    try:
        from .evaluation.command import add_command
    except ImportError:
        return
    add_command(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .train.trainer import TrainingDiverged

    try:
        return args.func(args)
    except UserError as e:
        print(f"mmvae: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"mmvae: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("mmvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
