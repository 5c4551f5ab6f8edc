"""Latent accuracy: a linear probe (logistic regression) on latent means predicts the label.

Shi et al. 2019 fit a linear classifier on unimodal posterior samples; Sutter et al. 2021 a logistic
regression on (subset) posterior means. We use the means of each representation the model exposes:
``model.latent_representations(data) -> {key: (B, d)}`` when it has one (the factorised MMVAE gives
"<m>/shared" and "<m>/private"), otherwise ``embed({m: x_m})`` per modality (key "<m>") and
``embed(all)`` (key "joint") when the model has a fused posterior. Fitted on (up to ``max_train``)
training rows, scored on the test rows.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import MultimodalDataset


def has_fused_posterior(model) -> bool:
    """True when the model fuses any subset of modalities into one posterior (not MEME)."""
    flag = getattr(model, "has_fused_posterior", None)
    return bool(flag) if flag is not None else callable(getattr(model, "posterior", None))


@torch.no_grad()
def representations(model, data: MultimodalDataset, device, batch_size: int = 1000) -> dict[str, Tensor]:
    """{key: (N, d)} latent means for rows that observe what the key needs (NaN rows otherwise)."""
    names = data.modalities
    own = getattr(model, "latent_representations", None)
    chunks: dict[str, list[Tensor]] = {}
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size))
        x = {m: batch.data[m].to(device) for m in names}
        if callable(own):
            reps = own(x)
        else:
            reps = {m: model.embed({m: x[m]}) for m in names}
            if len(names) > 1 and has_fused_posterior(model):
                reps["joint"] = model.embed(x)
        for key, value in reps.items():
            chunks.setdefault(key, []).append(value.detach().float().cpu())
    return {key: torch.cat(v) for key, v in chunks.items()}


def _observed_rows(key: str, data: MultimodalDataset) -> Tensor:
    needed = [m for m in data.modalities if key == m or key.startswith(m + "/")]
    if not needed:  # joint or a key the model names freely: rows observing every modality
        needed = data.modalities
    return torch.stack([data.mask[m] for m in needed]).all(0)


def linear_probe(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, test_y: np.ndarray,
                 seed: int = 0) -> float:
    """Test accuracy of a standardised multinomial logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0])) if len(train_y) else float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(train_z, train_y)
    return float(probe.score(test_z, test_y))


def latent_accuracy(model, train: MultimodalDataset, test: MultimodalDataset, device, max_train: int = 5000,
                    seed: int = 0) -> dict[str, float]:
    """{key: test accuracy} of a linear probe per latent representation."""
    if len(train) > max_train:
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:max_train].sort().values
        train = train.subset(idx)
    z_train = representations(model, train, device)
    z_test = representations(model, test, device)
    out = {}
    for key in z_train:
        tr, te = _observed_rows(key, train), _observed_rows(key, test)
        if not bool(tr.any()) or not bool(te.any()):
            continue
        out[key] = linear_probe(z_train[key][tr].numpy(), train.label[tr].numpy(),
                                z_test[key][te].numpy(), test.label[te].numpy(), seed)
    return out

