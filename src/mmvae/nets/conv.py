"""Convolutional encoders/decoders for 28x28 and 32x32 images, after MEME's appendix K (Joy et al. 2022).

32x32 (SVHN): Conv 4x4/2 to 32, 64, 128 channels, then Conv 4x4/1 to a 512-d feature and two linear
heads; the decoder mirrors it with transposed convolutions. The 28x28 variant uses a 3x3/2 third layer
(28 -> 14 -> 7 -> 4) so the same 4x4 feature map results. BatchNorm of the original encoder is left
out: with masked rows and small batches it makes train and eval outputs differ for no gain here.
"""
from __future__ import annotations

from torch import Tensor, nn

BASE = 32


def _encoder_body(channels: int, third_kernel: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, BASE, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(BASE, BASE * 2, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(BASE * 2, BASE * 4, third_kernel, 2, 1), nn.ReLU(),
        nn.Conv2d(BASE * 4, hidden, 4, 1, 0),   # linear features into the heads, as in App. K
        nn.Flatten(),
    )


def _decoder_body(latent_dim: int, channels: int, third_kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, BASE * 4, 4, 1, 0), nn.ReLU(),
        nn.ConvTranspose2d(BASE * 4, BASE * 2, third_kernel, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(BASE * 2, BASE, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(BASE, channels, 4, 2, 1),
    )


class ConvEncoder(nn.Module):
    """Image (N, C, S, S) with S in {28, 32} -> (loc, raw_scale), each (N, latent_dim)."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int = 512):
        super().__init__()
        channels, size = shape[0], shape[1]
        self.body = _encoder_body(channels, 3 if size == 28 else 4, hidden)
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.body(x)).chunk(2, dim=-1)


class ConvDecoder(nn.Module):
    """z (N, latent_dim) -> image parameters (N, C, S, S)."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        self.net = _decoder_body(latent_dim, shape[0], 3 if shape[1] == 28 else 4)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


CONV_SIZES = (28, 32)
