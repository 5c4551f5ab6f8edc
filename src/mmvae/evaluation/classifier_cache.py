"""The coherence classifiers' cache: ``<cache>/<modality>.safetensors`` and a JSON card beside it.

The card holds what the classifier was trained on (so a changed setting retrains) and the sha256 of
the weights file (so a damaged file is noticed). A damaged, unreadable or mismatched entry is never an
error: it is reported as a note and the classifier is trained again, which rewrites the entry; the
failure cannot repeat on the next run. Both files are written atomically, named after checked modality
names (:func:`mmvae.data.names.child_path`), so they always stay inside the cache folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.names import child_path
from ..train.checkpoint import atomic_write


def entry_paths(cache: Path, modality: str) -> tuple[Path, Path]:
    return child_path(cache, modality, ".safetensors"), child_path(cache, modality, ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_cached(cache: Path, modality: str, card: dict, net: torch.nn.Module, device,
                log: Callable = print) -> bool:
    """Fill ``net`` from the cache when an intact entry with this card is there; True if it was."""
    weights, card_file = entry_paths(cache, modality)
    if not weights.exists() and not card_file.exists():
        return False
    try:
        saved = json.loads(card_file.read_text(encoding="utf-8"))
        if not isinstance(saved, dict) or saved.get("card") != card:
            return False   # trained with other settings: retrain (not damage)
        if saved.get("sha256") is not None and saved["sha256"] != _sha256(weights):
            raise ValueError("its sha256 differs from the card")
        net.load_state_dict(load_file(str(weights), device=str(device)))
    except (OSError, ValueError, UnicodeDecodeError, SafetensorError, RuntimeError, KeyError, TypeError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        log(f"note: cached classifier {weights} is damaged or unreadable ({why}): training it again")
        return False
    net.eval()
    return True


def save_cached(cache: Path, modality: str, card: dict, net: torch.nn.Module) -> None:
    weights, card_file = entry_paths(cache, modality)
    cache.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    text = json.dumps({"card": card, "sha256": _sha256(weights)}, indent=1)
    atomic_write(card_file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
