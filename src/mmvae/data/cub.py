"""CUB image-caption with image features (MMVAE, Shi et al. 2019, Sec. 5 "CUB Image-Caption"): every
caption is a row, paired with the 2048-d ResNet-101 feature of its image (ten captions per image).

Text: words with at least ``min_count`` occurrences in the training captions (4 = MMVAE's "more than
3"), at most ``max_len`` = 32 tokens with the end token, one-hot (L, V) made per batch from token ids
(``lazy.OneHotRows``: dense one-hot of the 88k training captions would take ~18 GB). Image features:
a real vector with a Laplace likelihood (scale 0.75 unless set) and MLP networks. ``captions=k`` keeps
the first k captions of each image.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .dataset import DatasetSplits, ModalitySpec
from .lazy import IndexedRows, LazyDataset, OneHotRows
from .registry import register_dataset
from .sources.cache import cache_dir, locate
from .sources.cub import CUB, load_cub
from .text import Vocabulary, text_spec


def cub_available() -> tuple[bool, str]:
    found = locate(CUB)
    if found is not None:
        return True, f"files in {found['text_testclasses.txt'].parent}"
    return False, f"place MMVAE's CUB files in {cache_dir('cub')} or use --data-dir (docs/datasets.md)"


@register_dataset("cub", "CUB birds: 2048-d ResNet image features + captions (MMVAE release, user folder); "
                  "options max_len=32, min_count=4, captions=10", available=cub_available)
def cub(seed: int = 0, data_dir=None, max_len: int = 32, min_count: int = 4, captions: int | None = None,
        **_) -> DatasetSplits:
    parts = load_cub(data_dir)
    per_image = {p: len(c) // len(f) for p, (f, c) in parts.items()}
    k = min(per_image.values()) if captions is None else int(captions)
    if not 1 <= k <= min(per_image.values()):
        raise UserError(f"data.captions={captions} is out of range: the files hold {min(per_image.values())} per image")

    def rows(p):
        feats, caps = parts[p]
        image_of = np.repeat(np.arange(len(feats)), per_image[p])
        keep = np.nonzero(np.tile(np.arange(per_image[p]), len(feats)) < k)[0]
        return feats, [caps[i] for i in keep], image_of[keep]

    (ftr, ctr, itr), (fte, cte, ite) = rows("train"), rows("test")
    vocab = Vocabulary.build(ctr, min_count)
    specs = {"image": ModalitySpec("image", "vector", (ftr.shape[1],), "laplace"),
             "text": text_spec("text", vocab, max_len)}

    def part(feats, caps, image_of, name):
        data = {"image": IndexedRows(torch.from_numpy(feats), torch.from_numpy(image_of)),
                "text": OneHotRows(vocab.encode(caps, max_len), len(vocab))}
        return LazyDataset(specs, data, description=f"CUB {name}: image features + captions")

    return DatasetSplits(part(ftr, ctr, itr, "train"), part(fte, cte, ite, "test"))
