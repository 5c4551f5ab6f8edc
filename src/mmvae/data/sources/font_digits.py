"""SVHN-like 32x32 colour digits rendered offline from the TrueType fonts that matplotlib ships.

Each font's ten digits are rendered once, at high resolution, into a glyph bank kept in memory
(``glyph_bank``). A picture is then made per digit by vectorised torch ops over a whole chunk of
images: an affine warp of the glyph (size, aspect, rotation, shear, position jitter) sampled with
``grid_sample`` from the pre-smoothed bank (anti-aliasing), neighbouring digits
of the same font at the left/right edges (SVHN's crops are squares around one digit of a house
number), a random foreground colour over a random 32x32 crop of a photograph or a tinted texture from
scikit-image, a per-image Gaussian blur of the digit's edges and grey pixel noise. Every random choice comes from one seeded
numpy generator, drawn for all images before any rendering, so the pictures depend on the seed only.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UserError

# Fonts in matplotlib/mpl-data/fonts/ttf that have ordinary lining digits (the Display fonts have no
# digits, the STIX size/non-unicode fonts hold symbols, cmmi10 has old-style figures).
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf",
)
# Colour photographs, and grey textures (walls, ground) that get a random tint, all in skimage.data.
COLOUR_BACKGROUNDS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
GREY_BACKGROUNDS = ("brick", "grass", "gravel")

CANVAS = 64          # glyph bank resolution (square canvas, glyph centred by its bounding box)
GLYPH_HEIGHT = 44    # tallest digit of each font, in canvas pixels
SIZE = 32            # output resolution
CHUNK = 2048         # images rendered per vectorised pass (fixed: the noise stream depends on it)


def font_folder() -> str:
    """matplotlib's TrueType folder (mpl-data/fonts/ttf), found without importing matplotlib."""
    return os.path.join(os.path.dirname(importlib.util.find_spec("matplotlib").origin), "mpl-data", "fonts", "ttf")


@lru_cache(maxsize=1)
def glyph_bank() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Coverage masks (F * 10, CANVAS, CANVAS) in [0, 1] (row f * 10 + d is digit d in font f), and each
    glyph's width and height in canvas pixels. Rendered once per process with PIL (matplotlib's own
    dependency) from matplotlib's font files."""
    from PIL import Image, ImageDraw, ImageFont
    from scipy.ndimage import gaussian_filter   # here: scipy.ndimage costs ~1 s of every start-up

    folder = font_folder()
    paths = [os.path.join(folder, f) for f in FONT_FILES if os.path.exists(os.path.join(folder, f))]
    if not paths:
        raise UserError(f"mnist-fonts: no TrueType font found in matplotlib's folder {folder}: reinstall matplotlib")
    masks, widths, heights = [], [], []
    for path in paths:
        font = ImageFont.truetype(path, 2 * GLYPH_HEIGHT)
        crops = []
        for digit in "0123456789":
            im = Image.new("L", (4 * GLYPH_HEIGHT, 4 * GLYPH_HEIGHT), 0)
            ImageDraw.Draw(im).text((2 * GLYPH_HEIGHT, 2 * GLYPH_HEIGHT), digit, font=font, fill=255, anchor="mm")
            crops.append(im.crop(im.getbbox()))
        scale = GLYPH_HEIGHT / max(c.size[1] for c in crops)   # one scale per font keeps its proportions
        for c in crops:
            w, h = max(1, round(c.size[0] * scale)), max(1, round(c.size[1] * scale))
            w = min(w, CANVAS - 2)
            glyph = np.asarray(c.resize((w, h), Image.LANCZOS), np.float32) / 255.0
            canvas = np.zeros((CANVAS, CANVAS), np.float32)
            top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
            canvas[top:top + h, left:left + w] = glyph
            masks.append(canvas)
            widths.append(w)
            heights.append(h)
    # Pre-smoothed so that bilinear sampling at 1/2 to 1/3 of the bank's resolution does not alias.
    masks = gaussian_filter(np.stack(masks), sigma=(0, 1.0, 1.0))
    return torch.from_numpy(masks), np.array(widths, np.float32), np.array(heights, np.float32)


@lru_cache(maxsize=1)
def backgrounds() -> tuple[np.ndarray, ...]:
    """Float32 (H, W, 3) images in [0, 1], halved in size so that a 32x32 crop shows texture, not a blur."""
    import skimage.data

    out = []
    for name in COLOUR_BACKGROUNDS + GREY_BACKGROUNDS:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        out.append(img[:h, :w, :3].reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3)))
    return tuple(out)


def _draw_parameters(labels: np.ndarray, rng: np.random.Generator, n_fonts: int) -> dict[str, np.ndarray]:
    """Every random choice for every image, drawn up front in a fixed order."""
    n = len(labels)
    p = {
        "font": rng.integers(0, n_fonts, n),
        "height": rng.uniform(0.5, 0.9, n) * SIZE,                     # digit height in output pixels
        "aspect": rng.uniform(0.8, 1.25, n),                             # horizontal stretch
        "angle": np.clip(rng.normal(0.0, 0.12, n), -0.35, 0.35),         # radians (~7 degrees sd)
        "shear": rng.uniform(-0.25, 0.25, n),
        "shift": rng.uniform(-2.5, 2.5, (n, 2)),                         # output pixels
        "left": rng.random(n) < 0.6, "right": rng.random(n) < 0.6,       # distractor digits present
        "left_digit": rng.integers(0, 10, n), "right_digit": rng.integers(0, 10, n),
        "gap": rng.uniform(1.0, 8.0, (n, 2)),                            # canvas pixels between glyphs
        "colour": rng.random((n, 3, 3)),                                 # three candidate colours
        "background": rng.integers(0, len(backgrounds()), n),
        "corner": rng.random((n, 2)),
        "gain": rng.uniform(0.7, 1.15, (n, 3)),                          # tint / white balance
        "contrast": rng.uniform(0.3, 1.0, n),                            # background texture contrast
        "blur": rng.uniform(0.05, 1.1, n),                               # Gaussian sigma, output pixels
        "noise": rng.uniform(0.0, 0.05, n),
    }
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in p.items()}


def _backgrounds(p: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 32, 32, 3) random crops, tinted (per-channel gain) and with reduced texture contrast, and
    their mean colours (N, 3)."""
    n = len(p["background"])
    out = np.empty((n, SIZE, SIZE, 3), np.float32)
    for b, img in enumerate(backgrounds()):
        idx = np.nonzero(p["background"] == b)[0]
        if len(idx) == 0:
            continue
        ys = (p["corner"][idx, 0] * (img.shape[0] - SIZE + 1)).astype(np.int64)
        xs = (p["corner"][idx, 1] * (img.shape[1] - SIZE + 1)).astype(np.int64)
        rows = ys[:, None] + np.arange(SIZE)
        cols = xs[:, None] + np.arange(SIZE)
        out[idx] = img[rows[:, :, None], cols[:, None, :]]
    x = torch.from_numpy(out)
    mean = x.view(n, SIZE * SIZE, 3).mean(1)[:, None, None, :]
    c = torch.from_numpy(p["contrast"])[:, None, None, None]
    gain = torch.from_numpy(p["gain"])[:, None, None, :]
    x *= c * gain                        # gain * (mean + c (x - mean)), in two passes over the pixels
    x += (1 - c) * gain * mean
    return x, (gain * mean)[:, 0, 0]


def _foreground(colours: np.ndarray, bg_mean: torch.Tensor) -> torch.Tensor:
    """(N, 3) digit colours: the first of three random candidates at RGB distance >= 0.25 from the
    background's mean colour (else the farthest), so contrast varies and is sometimes low, as in SVHN."""
    candidates = torch.from_numpy(colours)                               # (N, 3 candidates, 3)
    dist = torch.linalg.vector_norm(candidates - bg_mean[:, None, :], dim=2)
    ok = dist >= 0.25
    pick = torch.where(ok.any(1), ok.int().argmax(1), dist.argmax(1))
    return candidates[torch.arange(len(pick)), pick]


def _thetas(p: dict[str, np.ndarray], glyph: np.ndarray, widths: np.ndarray, heights: np.ndarray):
    """affine_grid matrices (3, N, 2, 3) for the centre digit and its left and right neighbours.

    A (2x2) maps canvas pixels to output pixels (rotation x shear x scale); output pixel offsets from the
    centre d_o and canvas offsets d_c satisfy d_o = A d_c + t, and grid_sample's normalised coordinates
    are d_o / (SIZE / 2) and d_c / (CANVAS / 2)."""
    n = glyph.shape[1]
    s = p["height"] / heights[glyph[0]]
    cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)            # (N, 2, 2)
    shear = np.zeros((n, 2, 2))
    shear[:, 0, 0] = shear[:, 1, 1] = 1.0
    shear[:, 0, 1] = -p["shear"]
    stretch = np.zeros((n, 2, 2))
    stretch[:, 0, 0], stretch[:, 1, 1] = s * p["aspect"], s
    a = rot @ shear @ stretch
    a_inv = np.linalg.inv(a)
    half_w = widths[glyph] / 2                                                          # (3, N)
    offsets = np.stack([np.zeros(n),
                        -(half_w[0] + p["gap"][:, 0] + half_w[1]),
                        half_w[0] + p["gap"][:, 1] + half_w[2]])                        # (3, N) canvas px
    thetas = []
    for j in range(3):
        t = p["shift"] + (a @ np.stack([offsets[j], np.zeros(n)], -1)[..., None])[..., 0]
        m = a_inv * (SIZE / CANVAS)
        b = -(a_inv @ t[..., None])[..., 0] * (2.0 / CANVAS)
        thetas.append(np.concatenate([m, b[..., None]], -1))
    return np.stack(thetas).astype(np.float32)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap blur of (N, 1, H, W) with a per-image sigma: one grouped convolution per axis."""
    n, _, h, w = x.shape
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-0.5 * (r[None] / sigma[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)                                                      # (N, 5)
    y = F.conv2d(F.pad(x.reshape(1, n, h, w), (2, 2, 2, 2)), k[:, None, None, :], groups=n)
    return F.conv2d(y, k[:, None, :, None], groups=n).reshape(n, 1, h, w)


def _coverage(p: dict[str, np.ndarray], glyph: np.ndarray, thetas: torch.Tensor, sl: slice) -> torch.Tensor:
    """(B, 1, 32, 32) digit coverage of one chunk: the centre digit and its neighbours, warped, blurred."""
    masks = glyph_bank()[0]
    present = [np.ones(len(glyph[0, sl]), bool), p["left"][sl], p["right"][sl]]
    alpha = torch.zeros(len(glyph[0, sl]), 1, SIZE, SIZE)
    for j in range(3):
        rows = torch.from_numpy(np.nonzero(present[j])[0])
        if len(rows) == 0:
            continue
        src = masks[torch.from_numpy(glyph[j, sl])[rows]][:, None]
        grid = F.affine_grid(thetas[j, sl][rows], [len(rows), 1, SIZE, SIZE], align_corners=False)
        alpha[rows] = torch.maximum(alpha[rows], F.grid_sample(src, grid, align_corners=False))
    return _gaussian_blur(alpha, torch.from_numpy(p["blur"][sl]).float())


def render_font_digits(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N, 3, 32, 32) pictures of the digits ``labels``, deterministic given ``seed``."""
    labels = np.asarray(labels, np.int64)
    masks, widths, heights = glyph_bank()
    rng = np.random.default_rng(seed)
    p = _draw_parameters(labels, rng, len(masks) // 10)
    glyph = np.stack([p["font"] * 10 + labels, p["font"] * 10 + p["left_digit"], p["font"] * 10 + p["right_digit"]])
    thetas = torch.from_numpy(_thetas(p, glyph, widths, heights))
    noise_rng = torch.Generator().manual_seed(int(seed))
    out = np.empty((len(labels), 3, SIZE, SIZE), np.uint8)
    with torch.no_grad():
        for lo in range(0, len(labels), CHUNK):
            sl = slice(lo, lo + CHUNK)
            alpha = _coverage(p, glyph, thetas, sl).permute(0, 2, 3, 1)                  # (B, 32, 32, 1)
            img, bg_mean = _backgrounds({k: v[sl] for k, v in p.items()})
            fg = _foreground(p["colour"][sl], bg_mean)
            img += alpha * (fg[:, None, None, :] - img)                                  # alpha compositing
            noise = torch.randn(alpha.shape, generator=noise_rng)                        # grey sensor noise
            img += noise * torch.from_numpy(p["noise"][sl])[:, None, None, None]
            img = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
            out[sl] = img.permute(0, 3, 1, 2).numpy()
    return out
