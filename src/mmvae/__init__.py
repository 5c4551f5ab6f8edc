"""mmvae: multimodal variational autoencoders as modalities + fusion + estimator.

Python API (the CLI is a thin layer over it)::

    import mmvae
    splits = mmvae.load_dataset("polymnist")
    model = mmvae.build_model(splits.specs, mmvae.Config(model="mopoe"))
    run_dir = mmvae.train(mmvae.Config(model="mopoe", epochs=2, out="runs/demo"))
    run = mmvae.load_run(run_dir)
    run.model.translate({"m0": x}, ["m1"])
"""
__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .data import Batch, load_dataset  # noqa: E402
from .errors import UserError  # noqa: E402
from .models import MODELS, build_model  # noqa: E402
from .runs import Run, load_run  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Config", "Batch", "load_dataset", "UserError", "MODELS", "build_model", "Run", "load_run", "train",
           "__version__"]
