"""The sample grid (samples.png): composed as one array, each image tile the decoded image's own pixels at an
integer zoom, labels / text / vectors drawn in their cells, the rows sample_grid promises, written as a
lossless PNG, drawn without importing matplotlib."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from conftest import MIXED_SPECS, build_tiny, random_batch
from mmvae.data.dataset import ModalitySpec, MultimodalDataset
from mmvae.data.text import one_hot_tokens
from mmvae.evaluation import pictures
from mmvae.evaluation.pictures import TAB10, compose_grid, draw_grid

SPECS = {
    "grey": ModalitySpec("grey", "image", (1, 28, 28), "bernoulli"),
    "rgb": ModalitySpec("rgb", "image", (3, 32, 32), "laplace"),
    "label": ModalitySpec("label", "categorical", (4,), "categorical", num_classes=4),
    "vec": ModalitySpec("vec", "vector", (12,), "normal"),
    "words": ModalitySpec("words", "text", (5, 6), "categorical",
                          vocab=("<pad>", "<end>", "<unk>", "zero", "one", "digit")),
}


def _rows(n: int = 5):
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 1, 3])[:n]
    ids = torch.tensor([[3, 5, 1, 0, 0], [4, 5, 1, 0, 0], [3, 3, 4, 5, 1], [5, 1, 0, 0, 0], [4, 1, 0, 0, 0]])[:n]
    return [("grey in", "grey", torch.rand(n, 1, 28, 28, generator=g)),
            ("rgb→rgb", "rgb", torch.rand(n, 3, 32, 32, generator=g) * 1.4 - 0.2),   # out of [0, 1]: clipped
            ("label", "label", torch.nn.functional.one_hot(labels, 4).float()),
            ("vec", "vec", torch.randn(n, 12, generator=g)),
            ("words", "words", one_hot_tokens(ids, 6))]


def test_image_tiles_are_the_decoded_pixels_at_an_integer_zoom_and_the_png_is_lossless(tmp_path):
    rows = _rows()
    grid = compose_grid(rows, SPECS, n=5, caption="a caption below the rows")
    for i, (_, m, x) in enumerate(rows[:2]):
        zoom = grid.zoom[i]
        assert zoom >= 2 and 60 <= zoom * x.shape[-1] <= 90           # ~0.9 inch at 80 dpi, whole pixels
        for c in range(5):
            top, left, h, w = grid.tiles[(i, c)]
            expect = (x[c].clamp(0, 1) * 255).round().to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).numpy()
            expect = expect.repeat(zoom, axis=0).repeat(zoom, axis=1)
            assert (h, w) == expect.shape[:2]
            assert np.array_equal(grid.pixels[top:top + h, left:left + w], expect)
            # a white separator between neighbouring tiles
            assert (grid.pixels[top:top + h, left + w] == 255).all()
    # the tiles of a row lie left to right, rows top to bottom, none overlapping
    boxes = [grid.tiles[(i, c)] for i in range(len(rows)) for c in range(5)]
    for a, b in zip(boxes, boxes[1:]):
        assert a[1] + a[3] <= b[1] or a[0] + a[2] <= b[0]
    path = draw_grid(rows, SPECS, tmp_path / "g.png", n=5, caption="a caption below the rows")
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), grid.pixels)
    assert not list(tmp_path.glob(".*tmp*"))                        # written atomically, nothing left behind


def test_label_text_and_vector_cells_show_their_sample():
    rows = _rows()
    grid = compose_grid(rows, SPECS, n=5)

    def cell(i, c):
        top, left, h, w = grid.tiles[(i, c)]
        return grid.pixels[top + 1:top + h - 1, left + 1:left + w - 1].astype(int)

    # class labels 0 1 2 1 3: dark glyphs in every cell; equal labels draw equal cells, different ones differ
    assert all((cell(2, c) < 100).any() for c in range(5))
    assert np.array_equal(cell(2, 1), cell(2, 3)) and not np.array_equal(cell(2, 0), cell(2, 1))
    # text: words in every cell; different sentences differ
    assert all((cell(4, c) < 100).any() for c in range(5))
    assert not np.array_equal(cell(4, 0), cell(4, 1))
    # vectors: an (antialiased) line in the column's colour of matplotlib's cycle over 90% of the cell's width
    for c in range(5):
        ink = 255 - cell(3, c)
        drawn = ink.sum(axis=2) > 60
        cols = np.flatnonzero(drawn.any(axis=0))
        assert drawn.sum() > 40 and cols.max() - cols.min() > 0.85 * drawn.shape[1]
        colour = 255 - np.array([int(TAB10[c][k:k + 2], 16) for k in (1, 3, 5)])
        mean = ink[drawn].mean(axis=0)
        assert mean @ colour / np.linalg.norm(mean) / np.linalg.norm(colour) > 0.98


def test_non_finite_outputs_still_draw():
    rows = [(t, m, torch.full_like(x, float("nan"))) for t, m, x in _rows()[:4]]
    grid = compose_grid(rows, SPECS, n=5)
    assert grid.pixels.shape[2] == 3


def test_sample_grid_rows_inputs_translations_and_prior(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(1)
    data = MultimodalDataset(MIXED_SPECS, random_batch(MIXED_SPECS, 20, g).data)
    model = build_tiny("mopoe", MIXED_SPECS).eval()
    seen = {}
    draw = pictures.draw_grid

    def spy(rows, specs, path, n, **kw):
        seen["titles"] = [t for t, _, _ in rows]
        seen["shapes"] = [tuple(x.shape) for _, _, x in rows]
        return draw(rows, specs, path, n, **kw)

    monkeypatch.setattr(pictures, "draw_grid", spy)
    path = pictures.sample_grid(model, data, tmp_path / "samples.png", n=6)
    names = list(MIXED_SPECS)
    assert seen["titles"] == names + [f"{s}→{t}" if s != t else f"{s} recon" for s in names for t in names] + \
        [f"prior→{m}" for m in names]
    assert all(shape[0] == 6 for shape in seen["shapes"])
    assert Image.open(path).size[0] > 6 * 56


def test_drawing_the_grid_does_not_import_matplotlib(tmp_path):
    """samples.png is drawn at the end of every training run: importing pyplot for it cost ~0.4 s a process."""
    code = f"""
import sys, torch
from mmvae.data.dataset import ModalitySpec
from mmvae.evaluation.pictures import PRIOR_CAPTION, draw_grid
specs = {{"i": ModalitySpec("i", "image", (1, 8, 8), "bernoulli"), "v": ModalitySpec("v", "vector", (3,), "normal")}}
rows = [("i", "i", torch.rand(2, 1, 8, 8)), ("v", "v", torch.rand(2, 3))]
draw_grid(rows, specs, {str(tmp_path / "x.png")!r}, 2, caption=PRIOR_CAPTION)
assert "matplotlib" not in sys.modules, "matplotlib imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "x.png").stat().st_size > 0
