"""The CUB image-caption release of MMVAE (Shi et al. 2019; birds of Wah et al. 2011, captions of Reed
et al. 2016), read from a folder the user fills; there is no download (the archive has no checksum
published and the ResNet features are computed locally).

Expected layout (MMVAE's ``data/cub``), in ``--data-dir DIR/cub``, ``DIR`` or ``$MMVAE_DATA/cub``:
  text_trainvalclasses.txt, text_testclasses.txt   captions, one per line, ten per image in image order
  resnet101_2048/train.ft, resnet101_2048/test.ft  image features (N_images, 2048) saved by torch.save
                                                   (or train.npy / test.npy there: plain float arrays)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from .cache import DataSource, RemoteFile, present_or_fetch

CUB_ZIP = "http://www.robots.ox.ac.uk/~yshi/mmdgm/datasets/cub.zip"
HOW = (f"Download {CUB_ZIP} (MMVAE's cleaned CUB captions and images) and unzip it; compute 2048-d ResNet-101 "
       "features of the train/ and test/ images (ImageFolder order, pooled output of resnet101 as in MMVAE's "
       "CUBImageFt) and save them as resnet101_2048/train.ft and test.ft (torch.save of a float tensor) or "
       "resnet101_2048/train.npy and test.npy (docs/datasets.md)")

CUB = DataSource("cub", (
    RemoteFile("text_trainvalclasses.txt", "", ()),
    RemoteFile("text_testclasses.txt", "", ()),
    RemoteFile("resnet101_2048/train.ft", "", (), ("resnet101_2048/train.npy",)),
    RemoteFile("resnet101_2048/test.ft", "", (), ("resnet101_2048/test.npy",)),
), homepage=HOW)


def read_features(path: Path) -> np.ndarray:
    """(N, D) float32 image features from a torch-saved tensor (.ft / .pt) or a .npy array."""
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        else:
            import warnings

            import torch

            with warnings.catch_warnings():   # torch warns about the pickle protocol of files it then refuses
                warnings.simplefilter("ignore")
                t = torch.load(path, map_location="cpu", weights_only=True)
            a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same actionable message
        # torch's own message advises weights_only=False (running the file's pickled code): never quoted.
        pickled = "pickle" in type(e).__name__.lower() or "weights_only" in str(e)
        why = ("it holds pickled Python objects, which are never loaded" if pickled
               else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}")
        raise UserError(f"cannot read CUB features '{path}' ({why}): save a plain float tensor (N_images, 2048) "
                        "with torch.save(tensor), or a .npy array") from None
    a = np.asarray(a, dtype=np.float32).reshape(len(a), -1)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise UserError(f"CUB features '{path}' must be a finite (N_images, D) array, got shape {a.shape}")
    return a


def read_captions(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"cannot read CUB captions '{path}' ({e.strerror})") from None
    return [ln.strip() for ln in lines if ln.strip()]


def load_cub(data_dir=None) -> dict[str, tuple[np.ndarray, list[str]]]:
    """{'train': (features, captions), 'test': (...)}; captions are ten (or k) per image, in image order."""
    paths = present_or_fetch(CUB, data_dir, download=False)
    out = {}
    for part, text_name, ft_name in (("train", "text_trainvalclasses.txt", "resnet101_2048/train.ft"),
                                     ("test", "text_testclasses.txt", "resnet101_2048/test.ft")):
        feats, caps = read_features(paths[ft_name]), read_captions(paths[text_name])
        if len(feats) == 0 or len(caps) % len(feats):
            raise UserError(f"CUB {part}: {len(caps)} captions for {len(feats)} images: expected the same number "
                            f"of captions per image (ten in the MMVAE release), one caption per line")
        out[part] = (feats, caps)
    return out
