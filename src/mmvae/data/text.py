"""Text as a modality: a vocabulary, token ids, and one-hot (L, V) rows with all-zero padding rows.

A sentence becomes at most ``max_len - 1`` words plus the end token, padded to ``max_len`` with the pad id
0. One-hot rows of pad positions are all zero, so the Categorical likelihood (sum over positions of
x · log softmax(logits)) scores only the words and the end token: padding is masked out by construction.
Words seen fewer than ``min_count`` times in the training captions map to ``<unk>``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

from ..errors import UserError
from .dataset import ModalitySpec

PAD, END, UNK = "<pad>", "<end>", "<unk>"
SPECIALS = (PAD, END, UNK)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(sentence: str) -> list[str]:
    """Lower-case words and single punctuation marks: "A bird, red." -> ['a', 'bird', ',', 'red', '.']."""
    return _TOKEN.findall(sentence.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Words by id: ``<pad>`` = 0, ``<end>`` = 1, ``<unk>`` = 2, then the kept words by frequency."""

    words: tuple[str, ...]

    @staticmethod
    def build(sentences: Iterable[str], min_count: int = 1) -> "Vocabulary":
        counts = Counter(w for s in sentences for w in tokenize(s))
        kept = sorted((w for w, c in counts.items() if c >= int(min_count) and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return Vocabulary(SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, sentences: Sequence[str], max_len: int) -> Tensor:
        """Token ids (N, max_len): words, then <end>, then padding 0."""
        if int(max_len) < 2:
            raise UserError(f"text max_len={max_len} is too short: use at least 2 (one word and the end token)")
        index, unk, end = self.index, self.words.index(UNK), self.words.index(END)
        ids = torch.zeros(len(sentences), int(max_len), dtype=torch.long)
        for i, s in enumerate(sentences):
            toks = [index.get(w, unk) for w in tokenize(s)][: int(max_len) - 1] + [end]
            ids[i, : len(toks)] = torch.tensor(toks)
        return ids

    def decode(self, ids: Tensor) -> list[str]:
        """Sentences from ids (N, L): words up to the first end (or pad) token."""
        out = []
        for row in ids.tolist():
            words = []
            for t in row:
                if t in (0, 1):
                    break
                words.append(self.words[t])
            out.append(" ".join(words))
        return out


def one_hot_tokens(ids: Tensor, vocab_size: int) -> Tensor:
    """(N, L) ids -> (N, L, V) float one-hot; padding (id 0) rows are all zero."""
    x = torch.nn.functional.one_hot(ids.long(), int(vocab_size)).float()
    x[..., 0] = 0.0
    return x


def ids_from_rows(x: Tensor) -> Tensor:
    """(N, L, V) one-hot rows or word probabilities -> ids; all-zero rows -> padding 0."""
    ids = x.argmax(-1)
    return torch.where(x.abs().sum(-1) > 0, ids, torch.zeros_like(ids))


def text_spec(name: str, vocab: Vocabulary, max_len: int) -> ModalitySpec:
    return ModalitySpec(name, "text", (int(max_len), len(vocab)), "categorical", vocab=vocab.words)


def sentences_from(x: Tensor, spec: ModalitySpec) -> list[str]:
    """Decode one-hot rows (data) or softmax outputs (a decoder's mean) of a text modality."""
    if spec.vocab is None:
        raise ValueError(f"modality '{spec.name}' has no vocabulary")
    return Vocabulary(tuple(spec.vocab)).decode(ids_from_rows(x))
