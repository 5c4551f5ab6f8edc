"""Pictures of a model: inputs, reconstructions, cross-modal translations and prior samples in one grid."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..data.dataset import ModalitySpec, MultimodalDataset  # noqa: E402


def draw_cell(ax, spec: ModalitySpec, x: torch.Tensor) -> None:
    """One sample of a modality: an image, a class name, words, or a line for vectors."""
    ax.set_xticks([])
    ax.set_yticks([])
    x = x.detach().float().cpu()
    if spec.kind == "image" and x.dim() == 3:
        img = x.clamp(0, 1)
        ax.imshow(img[0] if img.shape[0] == 1 else img[:3].permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
    elif spec.kind == "categorical":
        ax.text(0.5, 0.5, str(int(x.argmax())), ha="center", va="center", fontsize=14)
    elif spec.kind == "text" and spec.vocab:
        ids = x.argmax(-1).tolist()
        words = [spec.vocab[i] for i, row in zip(ids, x) if float(row.max()) > 0]
        words = [w for w in words if w not in ("<pad>",)]
        if "<eos>" in words:
            words = words[: words.index("<eos>")]
        ax.text(0.5, 0.5, "\n".join(" ".join(words[i:i + 3]) for i in range(0, len(words), 3))[:60],
                ha="center", va="center", fontsize=6)
    else:
        ax.plot(x.flatten().numpy(), lw=0.8)


@torch.no_grad()
def sample_grid(model, data: MultimodalDataset, path: Path, n: int = 8) -> Path:
    """Rows: inputs of each modality; every source -> target translation (source = target is the
    reconstruction); unconditional samples from the prior. Columns: n test rows."""
    device = next(model.parameters()).device
    idx = torch.linspace(0, len(data) - 1, n).long()
    batch = data.batch(idx).to(device)
    names = list(data.specs)
    rows: list[tuple[str, str, torch.Tensor]] = [(f"{m}", m, batch.data[m]) for m in names]
    for s in names:
        out = model.translate({s: batch.data[s]}, names)
        rows += [(f"{s}→{t}" if s != t else f"{s} recon", t, out[t]) for t in names]
    gen = model.generate(n, names)
    rows += [(f"prior→{m}", m, gen[m]) for m in names]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9 + 1.2, len(rows) * 0.9), squeeze=False)
    for r, (title, m, x) in enumerate(rows):
        for c in range(n):
            draw_cell(axes[r, c], data.specs[m], x[c])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.2)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
