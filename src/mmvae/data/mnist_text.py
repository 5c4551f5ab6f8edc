"""MNIST-Text: each digit image paired with a caption naming its digit, in several phrasings.

An offline image-text dataset, generated, so text models train and are evaluated here (issue 5): the
caption of a 7 is one of "a handwritten seven", "the digit 7", "this is a seven", "number seven", ...
drawn at random per row (seeded). The text is one-hot words (L, V) over a vocabulary built from the
training captions (min count, max length, end and padding tokens; see ``data/text.py``). Images come
from MNIST like ``mnist-label`` (``source=auto|full|sample``).
"""
from __future__ import annotations

import numpy as np
import torch

from .dataset import IMAGE_LIKELIHOOD, DatasetSplits, ModalitySpec
from .lazy import LazyDataset, OneHotRows
from .mnist import mnist_availability, mnist_digits
from .registry import register_dataset
from .text import Vocabulary, text_spec

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PHRASES = ("a handwritten {w}", "the digit {d}", "the number {w}", "this is {a} {w}", "{a} {w} written by hand",
           "an image of the digit {w}", "{w}", "number {d}", "the handwritten digit {d} , {w}")


def caption(digit: int, phrase: int) -> str:
    w = WORDS[digit]
    return PHRASES[phrase].format(w=w, d=digit, a="an" if w[0] in "aeiou" else "a")


def captions(labels: np.ndarray, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(PHRASES), len(labels))
    return [caption(int(d), int(p)) for d, p in zip(labels, which)]


@register_dataset("mnist-text", "MNIST digit + an English caption of it (generated, offline); options "
                  "source=auto|full|sample, max_len=8, min_count=1, n", available=mnist_availability)
def mnist_text(seed: int = 0, source: str = "auto", data_dir=None, download: bool = True, n: int | None = None,
               max_len: int = 8, min_count: int = 1, caption_seed: int = 0, **_) -> DatasetSplits:
    d = mnist_digits(source, data_dir, download, n)
    text = captions(d.labels, caption_seed)
    vocab = Vocabulary.build([text[i] for i in d.train], min_count)
    ids = vocab.encode(text, max_len)
    specs = {"image": ModalitySpec("image", "image", (1, 28, 28), IMAGE_LIKELIHOOD), "text": text_spec("text", vocab, max_len)}
    images = torch.from_numpy(d.images.astype(np.float32) / 255.0)[:, None]
    full = LazyDataset(specs, {"image": images, "text": OneHotRows(ids, len(vocab))},
                       label=torch.from_numpy(d.labels), num_classes=10,
                       description=f"MNIST + caption ({'full MNIST' if d.full else '5,000-digit sample'})")
    return DatasetSplits(full.subset(torch.from_numpy(d.train)), full.subset(torch.from_numpy(d.test)))
