"""Sentence encoder/decoder over one-hot tokens (L, V), after the CUB-language networks of MMVAE
(Shi et al. 2019, App. C) and MEME (Joy et al. 2022, App. K): word embedding + strided convolutions.

Those networks embed each word (128-d) and treat the (L, 128) sentence as an image for 2-D 4x4
convolutions. Here the convolutions run along the sentence only (1-D, kernel 4, stride 2, the embedding
as channels), which fits any length L: the length halves per layer down to at most 4, then a linear head
gives (loc, raw_scale). The decoder mirrors it with transposed convolutions back to exactly L positions
and a per-position linear map to V logits (a Categorical over words; all-zero padding rows score 0).
The embedding is a bias-free linear map of the one-hot rows, i.e. a lookup table whose padding row is 0.
"""
from __future__ import annotations

from torch import Tensor, nn

EMBEDDING = 128
BASE = 64
MAX_CHANNELS = 512


def _lengths(length: int) -> list[int]:
    """Sequence lengths after each stride-2 layer (kernel 4, padding 1): L, L//2, ... down to <= 4."""
    out = [length]
    while out[-1] > 4:
        out.append(out[-1] // 2)
    return out


def _channels(layers: int) -> list[int]:
    return [min(BASE * 2 ** i, MAX_CHANNELS) for i in range(layers)]


class TextEncoder(nn.Module):
    """One-hot sentences (N, L, V) -> (loc, raw_scale), each (N, latent_dim)."""

    def __init__(self, shape: tuple[int, int], latent_dim: int, embedding: int = EMBEDDING,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        length, vocab = shape
        self.embed = nn.Linear(vocab, embedding, bias=False)
        lengths = _lengths(length)
        chans = [embedding, *_channels(len(lengths) - 1)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(c_in, c_out, 4, 2, 1), activation()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1] * lengths[-1], 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.embed(x.float()).transpose(1, 2)           # (N, E, L)
        return self.head(self.convs(h).flatten(1)).chunk(2, dim=-1)


class TextDecoder(nn.Module):
    """z (N, latent_dim) -> word logits (N, L, V)."""

    def __init__(self, shape: tuple[int, int], latent_dim: int, embedding: int = EMBEDDING,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        length, vocab = shape
        lengths = _lengths(length)
        chans = [embedding, *_channels(len(lengths) - 1)]
        self.start = (chans[-1], lengths[-1])
        self.project = nn.Linear(latent_dim, chans[-1] * lengths[-1])
        layers: list[nn.Module] = [activation()]
        for i in range(len(lengths) - 1, 0, -1):
            pad = lengths[i - 1] - 2 * lengths[i]                # 0, or 1 where the encoder dropped an odd step
            layers += [nn.ConvTranspose1d(chans[i], chans[i - 1], 4, 2, 1, output_padding=pad), activation()]
        self.deconvs = nn.Sequential(*layers)
        self.to_words = nn.Linear(embedding, vocab)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(z.shape[0], *self.start)
        return self.to_words(self.deconvs(h).transpose(1, 2))   # (N, L, V)
