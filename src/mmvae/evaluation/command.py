"""`mmvae evaluate RUN [--metrics LIST] [--k K]`: metrics.json, report.md and pictures in RUN/evaluation/."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def _evaluate(args) -> int:
    import torch

    from ..runs import load_run
    from .evaluate import Options, evaluate, parse_metrics
    from .report import table

    metrics = parse_metrics(args.metrics)
    for name in ("k", "rows", "classifier_epochs", "joint_samples"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "rows" else 1):
            raise UserError(f"--{name.replace('_', '-')} must be at least {0 if name == 'rows' else 1}, got {value}")
    path = Path(args.run)
    if not (path / "config.json").exists():
        raise UserError(f"'{path}' is not a run folder (no config.json): give the folder `mmvae train` wrote")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    run = load_run(path, which=args.which, device=device)
    opts = Options(seed=args.seed)
    if args.k is not None:
        opts.k = args.k
    if args.rows is not None:
        opts.likelihood_rows = args.rows
    if args.classifier_epochs is not None:
        opts.classifier_epochs = args.classifier_epochs
    if args.joint_samples is not None:
        opts.joint_samples = args.joint_samples
    record = evaluate(run, metrics, opts, log=(lambda *a: None) if args.quiet else print)
    print(table(record))
    print(f"report: {path / 'evaluation' / 'report.md'} and {path / 'report.html'}")
    return 0


def add_command(subparsers) -> None:
    from .evaluate import METRICS

    e = subparsers.add_parser("evaluate", help="coherence, latent accuracy, likelihoods, relatedness, pictures")
    e.add_argument("run", help="run folder written by `mmvae train`")
    e.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} (default: all)")
    e.add_argument("--k", type=int, help="importance samples per row for the likelihoods (default 1000)")
    e.add_argument("--rows", type=int, help="test rows for the likelihoods (default 1000; 0 = all)")
    e.add_argument("--classifier-epochs", type=int, dest="classifier_epochs",
                   help="most epochs for the coherence classifiers (default 30, the official protocol; they stop "
                        "earlier at a validation plateau; cached in RUN/evaluation/classifiers)")
    e.add_argument("--joint-samples", type=int, dest="joint_samples", help="prior samples for joint coherence (10000)")
    e.add_argument("--which", choices=("last", "best"), default="last", help="weights to evaluate")
    e.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quiet", action="store_true", help="print only the final table")
    e.set_defaults(func=_evaluate)
