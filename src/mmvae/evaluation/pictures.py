"""Pictures of a model: inputs, reconstructions, cross-modal translations and prior samples in one grid."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..data.dataset import ModalitySpec, MultimodalDataset  # noqa: E402
from ..data.partial import spread_rows  # noqa: E402


def _words(x: torch.Tensor, spec: ModalitySpec) -> str:
    from ..data.text import sentences_from

    words = sentences_from(x[None], spec)[0].split()
    return "\n".join(" ".join(words[i:i + 3]) for i in range(0, len(words), 3))[:60]


def draw_row(ax, spec: ModalitySpec, xs: torch.Tensor) -> None:
    """n samples of one modality side by side in one axis (one image strip, not n subplots: a grid of
    separate subplots costs most of a short run's time)."""
    ax.set_xticks([])
    ax.set_yticks([])
    xs = xs.detach().float().cpu()
    n = xs.shape[0]
    if spec.kind == "image" and xs.dim() == 4:
        img = xs.clamp(0, 1)
        img = img[:, :1].expand(-1, 3, -1, -1) if img.shape[1] == 1 else img[:, :3]
        pad = torch.ones(n, 3, img.shape[2], 2)
        strip = torch.cat([img, pad], dim=3).permute(2, 0, 3, 1).reshape(img.shape[2], -1, 3)
        ax.imshow(strip.numpy(), vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        return
    ax.set_xlim(0, n)
    ax.set_ylim(0, 1)
    for c in range(n):
        if spec.kind == "categorical":
            ax.text(c + 0.5, 0.5, str(int(xs[c].argmax())), ha="center", va="center", fontsize=14)
        elif spec.kind == "text" and spec.vocab:
            ax.text(c + 0.5, 0.5, _words(xs[c], spec), ha="center", va="center", fontsize=6)
        else:
            v = xs[c].flatten()
            v = (v - v.min()) / (v.max() - v.min()).clamp_min(1e-8)
            ax.plot(c + 0.05 + 0.9 * torch.linspace(0, 1, len(v)).numpy(), 0.1 + 0.8 * v.numpy(), lw=0.8)
        if c:
            ax.axvline(c, color="0.8", lw=0.5)


def draw_grid(rows: list[tuple[str, str, torch.Tensor]], specs: dict, path: Path, n: int, dpi: int = 80,
              caption: str | None = None) -> Path:
    """One row per (title, modality, samples), an optional caption below; written atomically."""
    import textwrap

    width = n * 0.9 + 1.6
    lines = textwrap.wrap(caption, width=int(width * 15)) if caption else []
    foot = 0.16 * len(lines) + (0.1 if lines else 0.0)    # inches of caption under the rows
    height = len(rows) * 0.9 + foot
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, height), squeeze=False)
    for ax, (title, m, x) in zip(axes[:, 0], rows):
        draw_row(ax, specs[m], x[:n])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=1.5 / width, right=0.99, top=1 - 0.01 * 0.9 * len(rows) / height,
                        bottom=(foot + 0.01 * 0.9 * len(rows)) / height, hspace=0.08)
    if lines:
        fig.text(0.01, 0.05 / height, "\n".join(lines), fontsize=7, va="bottom", ha="left", color="0.25")
    return _save(fig, path, dpi=dpi)


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
def _save(fig, path: Path, dpi: int = 90) -> Path:
    """Write atomically (a reader never sees half a PNG) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
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
