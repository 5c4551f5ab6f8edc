"""The user's own data: an ``.npz`` file (or a folder of ``.npy`` files), validated once at the boundary.

Format (README, "Your own data"):
  * one array per modality, first axis = samples. ``uint8`` arrays are scaled to [0, 1]. Arrays of
    shape (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3, 4} are images; integer 1-D arrays
    are categorical (one-hot over ``max + 1`` classes); anything else is a real vector;
  * optional ``label``: an integer class per sample, used by evaluation, not a modality;
  * optional ``split``: 0 = train, 1 = test (otherwise a seeded 90/10 split);
  * optional ``mask_<modality>``: boolean, False where that modality is missing in a row.
  * array names follow the modality-name rule of :mod:`mmvae.data.names` (a letter, then letters,
    digits, ``_`` or ``-``; not a torch ``nn.ModuleDict`` attribute such as ``keys`` or ``train``).
Pickled (object) arrays are never loaded. Test rows must be complete (every modality observed).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec, MultimodalDataset, one_hot
from .names import check_modality_names

RESERVED = ("label", "split")
MAX_CLASSES = 100_000  # one-hot rows beyond this are a mistake (a float column read as class indices)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")   # a zip with members, an empty zip
NPY_MAGIC = b"\x93NUMPY"


def _check_npz_bytes(path: Path) -> None:
    """An .npz is a zip file: anything else (a CSV, random bytes, a lone .npy) is named as such, before
    numpy would try to read it as a pickle and report "object arrays"."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserError(f"cannot read '{path}' ({e.strerror}): check the path and its permissions") from None
    if head.startswith(NPY_MAGIC):
        raise UserError(f"'{path}' is a single .npy array, not an npz file: save all modalities in one file with "
                        f"numpy.savez(path, name=array, ...) or put one <modality>.npy per modality in a folder")
    if not head.startswith(ZIP_MAGIC):
        kind = "an empty file" if not head else ("text (a CSV?)" if _looks_like_text(head) else "not a zip archive")
        raise UserError(f"'{path}' is not an npz file ({kind}): save the arrays with numpy.savez(path, name=array, ...)")


def _looks_like_text(head: bytes) -> bool:
    try:
        return head.decode("utf-8").isprintable() or b"\n" in head or b"," in head
    except UnicodeDecodeError:
        return False


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise UserError(f"data file '{path}' does not exist: give a registered dataset name or an existing .npz file")
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise UserError(f"folder '{path}' holds no .npy files: put one <modality>.npy per modality there")
            return {f.stem: np.load(f, allow_pickle=False) for f in files}
        _check_npz_bytes(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
        if odd:
            raise UserError(f"'{path}': members {odd} are not .npy arrays: save the file with numpy.savez")
        return arrays
    except UserError:
        raise
    except MemoryError:
        raise UserError(f"'{path}' declares arrays too large for memory: check the file (is it damaged?)") from None
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise UserError(f"'{path}' contains object (pickled) arrays, which are never loaded: save plain numeric arrays") from None
        raise UserError(f"'{path}' is not a readable .npz/.npy file ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"'{path}' is not a readable .npz/.npy file ({type(e).__name__}: {e})") from None
    except Exception as e:  # a damaged zip or .npy header fails in many ways (zlib, struct, syntax errors)
        raise UserError(f"'{path}' is not a readable .npz/.npy file ({type(e).__name__}: {str(e)[:200]})") from None


def _as_modality(name: str, a: np.ndarray, observed: np.ndarray) -> tuple[ModalitySpec, torch.Tensor]:
    if a.dtype.kind not in "biuf":
        raise UserError(f"modality '{name}' has dtype {a.dtype}: use numeric arrays (uint8 images, floats, int classes)")
    if 0 in a.shape[1:]:
        raise UserError(f"modality '{name}' has shape {a.shape}: no network fits samples without values "
                        f"(every axis after the first needs length >= 1)")
    if a.ndim == 1 and a.dtype.kind in "iu":
        seen = a[observed]
        if seen.size and seen.min() < 0:
            raise UserError(f"categorical modality '{name}' has negative values: use class indices 0..C-1")
        c = int(seen.max()) + 1 if seen.size else 1
        if c > MAX_CLASSES:
            raise UserError(f"categorical modality '{name}' has class index {c - 1}: at most {MAX_CLASSES} classes "
                            f"(one-hot rows); store a float array if it is not a class index")
        x = one_hot(torch.from_numpy(np.where(observed, a, 0).astype(np.int64)), max(c, 2))
        return ModalitySpec(name, "categorical", (x.shape[1],), "categorical", num_classes=x.shape[1]), x
    with np.errstate(over="ignore"):          # overflow is reported below, by name
        x = a.astype(np.float32)
    if a.dtype == np.uint8:
        x = x / 255.0
    seen = x[observed]
    if not np.isfinite(seen).all():
        if a.dtype.kind == "f" and np.isfinite(a[observed]).all():
            raise UserError(f"modality '{name}' holds values beyond float32's range (about ±3.4e38) in observed rows: "
                            f"rescale them before saving (the models compute in float32)")
        raise UserError(f"modality '{name}' holds NaN or infinite values in observed rows: clean them or mark those rows missing with mask_{name}")
    x = np.where(observed.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0).astype(np.float32)
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 3:
        x = x[:, None]
    unit = seen.size == 0 or (seen.min() >= 0.0 and seen.max() <= 1.0)
    if x.ndim == 4 and x.shape[1] in (1, 3, 4) and unit:
        return ModalitySpec(name, "image", tuple(x.shape[1:]), IMAGE_LIKELIHOOD), torch.from_numpy(x)
    if x.ndim == 1:
        x = x[:, None]
    return ModalitySpec(name, "vector", tuple(x.shape[1:]), "normal"), torch.from_numpy(x)


def arrays_to_splits(arrays: dict[str, np.ndarray], seed: int = 0, source: str = "arrays",
                     test_fraction: float = 0.1) -> DatasetSplits:
    """Validate a dict of arrays (npz conventions) and build train/test splits."""
    names = [k for k in arrays if k not in RESERVED and not k.startswith("mask_")]
    if not names:
        raise UserError(f"'{source}' has no modality arrays (only {sorted(arrays) or 'nothing'}): add one array per modality")
    check_modality_names(names, f"'{source}'", "rename that array (e.g. numpy.savez(path, image=..., text_1=...))")
    lengths = {k: (arrays[k].shape[0] if arrays[k].ndim else None) for k in arrays}
    if any(v is None for v in lengths.values()):
        bad = [k for k, v in lengths.items() if v is None]
        raise UserError(f"'{source}': arrays {bad} are scalars: every array needs the samples on its first axis")
    if len(set(lengths.values())) != 1:
        raise UserError(f"'{source}': arrays have different numbers of samples {lengths}: they must all match")
    n = next(iter(lengths.values()))
    if n < 2:
        raise UserError(f"'{source}' holds {n} samples: need at least 2")
    for k in arrays:
        if k.startswith("mask_") and k[5:] not in names:
            raise UserError(f"'{source}': {k} names no modality (modalities: {names})")
    masks = {}
    for k in names:
        m = arrays.get(f"mask_{k}")
        if m is None:
            masks[k] = np.ones(n, bool)
        elif m.ndim != 1 or m.dtype.kind not in "biu" or m.shape[0] != n:
            raise UserError(f"'{source}': mask_{k} must be a 1-D boolean array of length {n}")
        else:
            masks[k] = m.astype(bool)
    specs, data = {}, {}
    for k in names:
        specs[k], data[k] = _as_modality(k, arrays[k], masks[k])
    label = None
    if "label" in arrays:
        lab = arrays["label"]
        if lab.ndim != 1 or lab.dtype.kind not in "iu":
            raise UserError(f"'{source}': label must be a 1-D integer array (one class per sample), got {lab.dtype} {lab.shape}")
        if lab.min() < 0:
            raise UserError(f"'{source}': label has negative values: use class indices 0..C-1")
        if int(lab.max()) >= MAX_CLASSES:
            raise UserError(f"'{source}': label {int(lab.max())} is outside the class range 0..{MAX_CLASSES - 1}")
        label = torch.from_numpy(lab.astype(np.int64))
    if "split" in arrays:
        sp = arrays["split"]
        if sp.ndim != 1 or not np.isin(sp, (0, 1)).all():
            raise UserError(f"'{source}': split must be a 1-D array of 0 (train) and 1 (test)")
        test = torch.from_numpy(sp.astype(bool))
    else:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        test = torch.zeros(n, dtype=torch.bool)
        test[perm[: max(1, int(round(n * test_fraction)))]] = True
    if test.all() or not test.any():
        raise UserError(f"'{source}': the split leaves no training or no test rows: use both 0 and 1 in split")
    full = MultimodalDataset(specs, data, {k: torch.from_numpy(v) for k, v in masks.items()}, label,
                             description=f"user data from {source}")
    # Partially observed test rows stay: each metric uses the rows that observe what it needs
    # (cross coherence S->t the rows observing S, log p(x_S) the rows observing S, ...).
    train, tst = full.subset(torch.nonzero(~test).squeeze(1)), full.subset(torch.nonzero(test).squeeze(1))
    none = ~torch.stack([tst.mask[k] for k in names], 1).any(1)
    if bool(none.any()):   # a row observing nothing carries nothing to evaluate
        tst = tst.subset(torch.nonzero(~none).squeeze(1))
    return DatasetSplits(train, tst, name=str(source))


def load_arrays(path: Path, seed: int = 0, **options) -> DatasetSplits:
    return arrays_to_splits(_read(Path(path)), seed=seed, source=str(path))
