"""Pictures of a model: inputs, reconstructions, cross-modal translations and prior samples in one grid
(Pillow, no matplotlib: samples.png is drawn at the end of every training run), and the evaluation's
figures (matplotlib, imported when one is drawn)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..data.dataset import MultimodalDataset
from ..data.partial import spread_rows
from ..data.sources.font_digits import font_folder


def _pyplot():
    """matplotlib.pyplot on the Agg backend (imported here, not with the module: 0.3-0.7 s a process)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------- sample grids
# A grid is composed as one RGB array (image tiles copied in at an integer zoom, cells for labels, text and
# vectors) and its text drawn with Pillow (matplotlib's own PNG writer and image dependency) in matplotlib's
# DejaVu Sans: no figure, no axes, no matplotlib import. A matplotlib figure of one axes per row cost
# 0.2-0.35 s of CPU per samples.png, most of a short fit's fixed overhead, and importing pyplot as much
# again per process (docs/results/trainer-overhead.md).
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")   # matplotlib's default colour cycle: one colour per column of vectors


@dataclass
class Grid:
    """A composed grid: RGB pixels, and where each sample's tile lies in them."""

    pixels: np.ndarray                                      # (H, W, 3) uint8
    tiles: dict[tuple[int, int], tuple[int, int, int, int]]  # (row, column) -> (top, left, height, width)
    zoom: dict[int, int]                                    # row -> integer zoom of its image tiles


@lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped in matplotlib's package data, as in its figures) at ``px`` pixels."""
    bundled = Path(font_folder())
    if (bundled / "DejaVuSans.ttf").is_file():
        return ImageFont.truetype(str(bundled / "DejaVuSans.ttf"), px)
    from matplotlib import font_manager   # a matplotlib packaged without its fonts (a distribution's build)

    return ImageFont.truetype(font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans")), px)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float, max_lines: int | None = None) -> list[str]:
    """Words of ``text`` in lines at most ``width`` pixels wide (a longer word stands alone); past
    ``max_lines`` the last line ends in an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    if max_lines is not None and len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last + "…"]
    return lines


def _image_tiles(xs: torch.Tensor, zoom: int) -> np.ndarray:
    """(n, C, H, W) values in [0, 1] -> (n, zoom H, zoom W, 3) uint8 (grey: one channel repeated; NaN: 0)."""
    img = torch.nan_to_num(xs, nan=0.0).clamp(0, 1)
    img = img[:, :1].expand(-1, 3, -1, -1) if img.shape[1] < 3 else img[:, :3]
    tiles = (img * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)


def compose_grid(rows: list[tuple[str, str, torch.Tensor]], specs: dict, n: int, dpi: int = 80,
                 caption: str | None = None) -> Grid:
    """One row per (title, modality, samples) with its title on the left; columns: the first ``n`` samples.
    Images are shown at an integer zoom (about 0.9 inch at ``dpi``), categorical samples as their class
    index, text as its decoded words, vectors as a line (one colour per column); ``caption`` below."""
    s = dpi / 80
    cell, gap, row_gap, margin = round(72 * s), max(1, round(2 * s)), round(4 * s), round(4 * s)
    fonts = {"title": _font(round(11 * s)), "class": _font(round(18 * s)), "text": _font(round(9 * s)),
             "caption": _font(round(10 * s))}
    rows = [(title, m, x[:n].detach().float().cpu()) for title, m, x in rows]
    label_w = max([round(120 * s)] + [round(fonts["title"].getlength(t) + 12 * s) for t, _, _ in rows])
    is_image = [specs[m].kind == "image" and x.dim() == 4 for _, m, x in rows]
    zoom = {i: max(1, round(cell / max(x.shape[2:]))) for i, (_, _, x) in enumerate(rows) if is_image[i]}
    col_w = max([x.shape[3] * zoom[i] for i, (_, _, x) in enumerate(rows) if is_image[i]] or [cell])
    text_lines = 3
    heights = []
    for i, (_, m, x) in enumerate(rows):
        kind = specs[m].kind
        heights.append(x.shape[2] * zoom[i] if is_image[i] else round(36 * s) if kind == "categorical" else
                       text_lines * (fonts["text"].size + 1) + round(8 * s) if kind == "text" and specs[m].vocab
                       else round(48 * s))
    width = label_w + n * (col_w + gap) + margin
    caption_lines = _wrap(caption, fonts["caption"], width - 2 * margin) if caption else []
    line_h = fonts["caption"].size + round(2 * s)
    height = margin + sum(heights) + row_gap * (len(rows) - 1) + margin + (
        len(caption_lines) * line_h + 2 * margin if caption_lines else 0)
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    tiles: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    words: list[tuple[int, list[str]]] = []                  # (row, sentence per column) for text rows
    top = margin
    for i, ((title, m, x), h) in enumerate(zip(rows, heights)):
        spec = specs[m]
        lefts = [label_w + c * (col_w + gap) for c in range(len(x))]
        if is_image[i]:
            tile = _image_tiles(x, zoom[i])
            th, tw = tile.shape[1:3]
            for c, left in enumerate(lefts):
                left += (col_w - tw) // 2
                pixels[top:top + th, left:left + tw] = tile[c]
                tiles[(i, c)] = (top, left, th, tw)
        else:
            if spec.kind == "text" and spec.vocab:
                from ..data.text import sentences_from

                words.append((i, sentences_from(x, spec)))
            elif spec.kind != "categorical":                     # vectors (and images given flat)
                _draw_vectors(pixels, x, lefts, top, col_w, h, s)
            for c, left in enumerate(lefts):
                tiles[(i, c)] = (top, left, h, col_w)
                for edge in (pixels[top, left:left + col_w], pixels[top + h - 1, left:left + col_w],
                             pixels[top:top + h, left], pixels[top:top + h, left + col_w - 1]):
                    edge[...] = 204                              # a light grey frame around each cell
        top += h + row_gap
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    for i, (title, m, x) in enumerate(rows):
        t, _, h, _ = tiles.get((i, 0), (margin, 0, heights[i], 0))
        draw.text((label_w - round(6 * s), t + h / 2), title, font=fonts["title"], fill=(0, 0, 0), anchor="rm")
        if specs[m].kind == "categorical" and not is_image[i]:
            for c, label in enumerate(x.reshape(len(x), -1).argmax(dim=1).tolist()):
                t, left, h, w = tiles[(i, c)]
                draw.text((left + w / 2, t + h / 2), str(label), font=fonts["class"], fill=(0, 0, 0), anchor="mm")
    for i, sentences in words:
        for c, sentence in enumerate(sentences):
            t, left, h, w = tiles[(i, c)]
            lines = _wrap(sentence, fonts["text"], w - round(4 * s), max_lines=text_lines)
            draw.multiline_text((left + w / 2, t + h / 2), "\n".join(lines), font=fonts["text"], fill=(0, 0, 0),
                                anchor="mm", align="center", spacing=1)
    y = height - margin - len(caption_lines) * line_h
    for line in caption_lines:
        draw.text((margin, y), line, font=fonts["caption"], fill=(64, 64, 64))
        y += line_h
    return Grid(np.asarray(picture), tiles, zoom)


def _draw_vectors(pixels: np.ndarray, xs: torch.Tensor, lefts: list[int], top: int, width: int, height: int,
                  s: float, supersample: int = 4) -> None:
    """Each sample as a line of its values (scaled to the cell), in matplotlib's default colour cycle,
    drawn at ``supersample`` times the size and averaged down (antialiased)."""
    colours = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in TAB10]
    k = supersample
    for c, left in enumerate(lefts):
        v = torch.nan_to_num(xs[c].flatten(), nan=0.0, posinf=0.0, neginf=0.0).double()
        v = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-8)
        px = (0.05 + 0.9 * torch.linspace(0, 1, len(v), dtype=torch.float64)) * width * k
        py = (0.9 - 0.8 * v) * height * k
        patch = Image.new("RGB", (width * k, height * k), "white")
        ImageDraw.Draw(patch).line(list(zip(px.tolist(), py.tolist())), fill=colours[c % len(colours)],
                                   width=max(1, round(k * s)), joint="curve")
        pixels[top:top + height, left:left + width] = np.asarray(patch.reduce(k))


def draw_grid(rows: list[tuple[str, str, torch.Tensor]], specs: dict, path: Path, n: int, dpi: int = 80,
              caption: str | None = None) -> Path:
    """``compose_grid`` written to ``path`` as a PNG, atomically."""
    return _write_png(compose_grid(rows, specs, n, dpi, caption).pixels, path, dpi)


PRIOR_CAPTION = ("prior→ rows: z drawn from the prior p(z) and decoded, with no input. Expect a recognisable "
                 "sample (and the same class in every modality of a column) only from a model whose posteriors "
                 "cover the prior well; after short training, or with a small KL weight, most are blurry blends "
                 "of classes. The rows above decode the posterior of the test inputs in the first rows.")


@torch.no_grad()
def sample_grid(model, data: MultimodalDataset, path: Path, n: int = 8) -> Path:
    """Rows: inputs of each modality; every source -> target translation (source = target is the
    reconstruction); unconditional samples from the prior. Columns: n test rows."""
    device = next(model.parameters()).device
    names = list(data.specs)
    batch = data.batch(spread_rows(data, n, names)).to(device)
    rows: list[tuple[str, str, torch.Tensor]] = [(f"{m}", m, batch.data[m]) for m in names]
    for s in names:
        for t in names:
            try:   # a model may not generate t from s alone (a conditional VAE needs all its conditions)
                out = model.translate({s: batch.data[s]}, [t])[t]
            except (NotImplementedError, ValueError, KeyError):
                continue
            rows.append((f"{s}→{t}" if s != t else f"{s} recon", t, out))
    gen = model.generate(n, names)
    rows += [(f"prior→{m}", m, gen[m]) for m in names]
    return draw_grid(rows, data.specs, path, n, caption=PRIOR_CAPTION)


# ------------------------------------------------------------------------- evaluation pictures
def _tmp_of(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.tmp.png")


def _save(fig, path: Path, dpi: int = 90) -> Path:
    """Write atomically (a reader never sees half a PNG) and close the figure."""
    path = Path(path)
    tmp = _tmp_of(path)
    fig.savefig(tmp, dpi=dpi)
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def _write_png(pixels: np.ndarray, path: Path, dpi: int = 80) -> Path:
    """An RGB array written atomically as a PNG."""
    path = Path(path)
    tmp = _tmp_of(path)
    Image.fromarray(pixels).save(tmp, format="png", dpi=(dpi, dpi), compress_level=3)   # 6: 1.7x the time, 8% smaller
    tmp.replace(path)
    return path


@torch.no_grad()
def cross_generation_grid(model, data: MultimodalDataset, source: str, target: str, path: Path,
                          n: int = 10, draws: int = 3) -> Path:
    """Rows: the source inputs, their true partners, then ``draws`` generations of the target from one
    posterior sample each (the first row of generations decodes the posterior mean)."""
    device = next(model.parameters()).device
    batch = data.batch(spread_rows(data, n, [source, target])).to(device)
    rows = [(f"{source} (input)", source, batch.data[source]), (f"{target} (true)", target, batch.data[target])]
    rows.append((f"{source}→{target} mean", target, model.translate({source: batch.data[source]}, [target])[target]))
    for i in range(draws - 1):
        try:
            out = model.translate({source: batch.data[source]}, [target], sample=True)[target]
        except TypeError:  # a model whose translate has no sampling option
            break
        rows.append((f"{source}→{target} #{i + 1}", target, out))
    return draw_grid(rows, data.specs, path, n)


def distance_histogram(d: torch.Tensor, pair: str, path: Path) -> Path:
    """Histograms of paired (d_ii) and unpaired (d_ij, i ≠ j) W2 distances (MEME, Fig. 4)."""
    n = d.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    paired, unpaired = d.diagonal().numpy(), d[off].numpy()
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(min(paired.min(), unpaired.min()), max(paired.max(), unpaired.max()), 51)
    ax.hist(unpaired, bins=bins, density=True, alpha=0.55, label=f"unpaired ({unpaired.size})")
    ax.hist(paired, bins=bins, density=True, alpha=0.75, label=f"paired ({paired.size})")
    ax.set_xlabel(f"W2 between q(z | {pair.split('~')[0]}) and q(z | {pair.split('~')[1]})")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def class_distance_heatmap(matrix, pair: str, path: Path) -> Path:
    """The class × class mean W2 matrix (rows: class of the first modality's rows)."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(m, cmap="viridis")
    s, t = pair.split("~")
    ax.set_xlabel(f"class of {t}")
    ax.set_ylabel(f"class of {s}")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, label="mean W2")
    fig.tight_layout()
    return _save(fig, path)


def class_dendrogram(matrix, pair: str, path: Path) -> Path:
    """Average-linkage dendrogram of the classes from the symmetrised class distance matrix (scipy)."""
    import numpy as np
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    m = np.asarray(matrix, dtype=float)
    m = np.nan_to_num(0.5 * (m + m.T), nan=np.nanmax(m) if np.isfinite(m).any() else 0.0)
    np.fill_diagonal(m, 0.0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    dendrogram(linkage(squareform(m, checks=False), method="average"), labels=list(range(m.shape[0])), ax=ax)
    ax.set_ylabel("mean W2")
    ax.set_title(f"classes by {pair} distance", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def latent_embedding_figure(latents: dict[str, torch.Tensor], labels: torch.Tensor | None, seed: int = 0,
                            class_names: list[str] | None = None):
    """The t-SNE figure (scikit-learn) of test latent means of every modality together: colour = label,
    with a legend saying which colour is which class (a colour bar above 20 classes); marker = modality."""
    import numpy as np
    from matplotlib.lines import Line2D
    from sklearn.manifold import TSNE

    names = list(latents)
    z = torch.cat([latents[m] for m in names]).numpy()
    which = np.concatenate([np.full(len(latents[m]), i) for i, m in enumerate(names)])
    xy = TSNE(2, init="pca", perplexity=min(30.0, max(2.0, (len(z) - 1) / 3)), random_state=seed).fit_transform(z)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5))
    markers = "o^sDvP*Xh<>"
    colour = None if labels is None else np.tile(labels.numpy(), len(names))
    classes = 0 if colour is None else max(int(colour.max()) + 1, len(class_names or ()))
    cmap = plt.get_cmap("tab10" if classes <= 10 else "tab20" if classes <= 20 else "viridis")
    top = max(9, classes - 1) if classes <= 10 else max(19, classes - 1) if classes <= 20 else classes - 1
    scatter = None
    for i, m in enumerate(names):
        sel = which == i
        scatter = ax.scatter(xy[sel, 0], xy[sel, 1], s=9, marker=markers[i % len(markers)], label=m, alpha=0.7,
                             c=None if colour is None else colour[sel], cmap=cmap if colour is not None else None,
                             vmin=None if colour is None else 0, vmax=None if colour is None else top)
    legend = ax.legend(fontsize=8, markerscale=2, title="modality", title_fontsize=8, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0))
    for handle in legend.legend_handles:  # markers in grey: the colours mean labels, not modalities
        handle.set_color("0.4")
    if colour is not None and classes <= 20:
        ax.add_artist(legend)
        names_of = class_names or [str(c) for c in range(classes)]
        patches = [Line2D([], [], marker="o", linestyle="", markersize=6, color=cmap(c / top if top else 0),
                          label=names_of[c]) for c in range(classes)]
        ax.legend(handles=patches, fontsize=8, title="label", title_fontsize=8, loc="lower left",
                  bbox_to_anchor=(1.01, 0.0), ncol=1 if classes <= 10 else 2)
    elif colour is not None and scatter is not None:
        fig.colorbar(scatter, ax=ax, fraction=0.046, label="label")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of test latent means" + ("" if labels is None else " (colour: label)"), fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.8, 1))  # the legends sit to the right of the axes
    return fig


def latent_embedding(latents: dict[str, torch.Tensor], labels: torch.Tensor | None, path: Path,
                     seed: int = 0, class_names: list[str] | None = None) -> Path:
    """``latent_embedding_figure`` written to ``path``."""
    return _save(latent_embedding_figure(latents, labels, seed, class_names), path)
