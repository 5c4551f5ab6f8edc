"""CCA correlation of image–text pairs: how well generated captions match their images and generated
images their captions (MMVAE, Shi et al. 2019, §5 CUB and its official ``analyse_cub.py``; MEME, Joy et
al. 2022, uses the same measure on CUB).

Features, all fitted on training rows only:

* **sentences**: word vectors learnt from the dataset's own training captions, then SIF sentence
  embeddings (Arora et al. 2017). The MMVAE authors train FastText (window 3) on the captions; offline,
  without gensim, we factorise the captions' positive pointwise mutual information instead: symmetric
  co-occurrence counts within ±3 tokens, PPMI, ``sklearn.decomposition.TruncatedSVD`` to at most 300
  dimensions, word vector = U·√Σ (Levy & Goldberg 2014 show this is the matrix that skip-gram
  factorises implicitly). A sentence is Σ_w a/(a + p(w)) · v_w / n over its n words (a = 1e-3, p the
  word frequency in the training captions; words up to the first end token, ``<unk>`` included, the end
  token and padding excluded), minus its projection on the first principal component of the training
  sentences (as the authors' ``apply_weights`` / ``apply_pc``).
* **images**: the image modality flattened (pixels, or the dataset's features for CUB's ResNet vectors),
  reduced by ``sklearn.decomposition.PCA`` to at most 128 dimensions.
* **CCA**: ``sklearn.cross_decomposition.CCA`` with at most 40 components (the authors' k = 40) fitted
  on the training pairs. The score of a set of pairs is the authors': the mean over pairs of the cosine
  similarity of the image's and the sentence's projections.

Pairs scored on the test rows: ``real`` (true pairs, the ceiling), ``image_to_text`` (each test image
with the caption generated from it), ``text_to_image`` (the image generated from each caption, with that
caption), ``joint`` (both generated from the same z ~ p(z)), and ``shuffled`` (test images with the
captions of other rows, a seeded permutation): the chance level. Generations decode one posterior sample
per row (``translate(..., sample=True)``, as the coherence protocol) and take the most likely word at each
position.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import MultimodalDataset
from ..data.text import END, PAD, Vocabulary, ids_from_rows

WINDOW = 3          # the authors' FastText window
WORD_DIMS = 300     # the authors' embedding size (at most; fewer for small vocabularies)
SIF_A = 1e-3        # the authors' SIF constant
IMAGE_DIMS = 128    # PCA of the image features
COMPONENTS = 40     # the authors' k

DEFINITION = ("CCA (scikit-learn, ≤ 40 components) fitted on training pairs of PCA image features (≤ 128 dims) and "
              "SIF sentence embeddings of word vectors learnt from the training captions (PPMI of ±3-token "
              "co-occurrences factorised by truncated SVD, the offline stand-in for the authors' FastText); score: "
              "mean cosine similarity of a pair's projections (Shi et al. 2019's measure). Generations decode one "
              "posterior sample per test row; joint pairs come from z ~ p(z); shuffled pairs are the chance level.")


def image_text_pair(data: MultimodalDataset) -> tuple[str, str] | None:
    """(image modality, text modality): the first image-like (image or vector) and the first text one."""
    images = [m for m, s in data.specs.items() if s.kind in ("image", "vector")]
    texts = [m for m, s in data.specs.items() if s.kind == "text"]
    return (images[0], texts[0]) if images and texts else None


def token_ids(column, rows: Tensor, chunk: int = 2048) -> np.ndarray:
    """Token ids (N, L) of a text column (one-hot rows, lazy or dense), without materialising it all."""
    if hasattr(column, "ids") and hasattr(column, "positions"):                 # lazy one-hot (OneHotRows)
        return column.ids[column.positions[rows]].numpy()
    return torch.cat([ids_from_rows(column[rows[i:i + chunk]]) for i in range(0, len(rows), chunk)]).numpy()


def _words(ids: np.ndarray, first_word: int) -> np.ndarray:
    """Mask (N, L) of the word positions: ids ≥ ``first_word`` up to the first end or padding token."""
    return np.cumprod(ids >= first_word, axis=1).astype(bool)


class SentenceFeatures:
    """SIF sentence embeddings over word vectors learnt from training captions (see the module docstring)."""

    def __init__(self, train_ids: np.ndarray, vocab: Vocabulary, dims: int = WORD_DIMS, window: int = WINDOW,
                 seed: int = 0):
        from scipy.sparse import coo_matrix
        from sklearn.decomposition import TruncatedSVD

        v = len(vocab)
        self.first_word = max(vocab.words.index(PAD), vocab.words.index(END)) + 1   # <unk> and the words
        words = _words(train_ids, self.first_word)
        rows, cols = [], []
        for offset in range(1, window + 1):                      # symmetric co-occurrences within ±window
            both = words[:, :-offset] & words[:, offset:]
            a, b = train_ids[:, :-offset][both], train_ids[:, offset:][both]
            rows += [a, b]
            cols += [b, a]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        counts = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(v, v)).tocsr()
        total, marginal = counts.sum(), np.asarray(counts.sum(1)).ravel()
        coo = counts.tocoo()
        pmi = np.log(coo.data * total / (marginal[coo.row] * marginal[coo.col]))
        keep = pmi > 0
        ppmi = coo_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(v, v)).tocsr()
        k = max(1, min(dims, v - 1))
        svd = TruncatedSVD(k, random_state=seed)
        self.vectors = svd.fit_transform(ppmi) / np.sqrt(np.maximum(svd.singular_values_, 1e-12))   # U·√Σ
        freq = np.bincount(train_ids[words], minlength=v).astype(float)
        self.weights = SIF_A / (SIF_A + freq / max(1.0, freq.sum()))
        plain = self._weighted(train_ids)
        centred = plain - plain.mean(0)
        self.pc = np.linalg.svd(centred, full_matrices=False)[2][0] if len(centred) > 1 else np.zeros(k)

    def _weighted(self, ids: np.ndarray) -> np.ndarray:
        words = _words(ids, self.first_word)
        w = self.weights[ids] * words                                             # (N, L)
        emb = np.einsum("nl,nld->nd", w, self.vectors[ids])
        return emb / np.maximum(words.sum(1, keepdims=True), 1)

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        emb = self._weighted(ids)
        return emb - np.outer(emb @ self.pc, self.pc)


class PairScorer:
    """Image PCA + sentence features + CCA, fitted on training pairs; ``score(images, ids)`` is the mean
    cosine similarity of the pairs' canonical projections."""

    def __init__(self, images: np.ndarray, ids: np.ndarray, vocab: Vocabulary, seed: int = 0):
        from sklearn.cross_decomposition import CCA
        from sklearn.decomposition import PCA

        self.sentences = SentenceFeatures(ids, vocab, seed=seed)
        flat = images.reshape(len(images), -1)
        self.pca = PCA(min(IMAGE_DIMS, flat.shape[1], len(flat) - 1), random_state=seed).fit(flat)
        x, y = self.pca.transform(flat), self.sentences(ids)
        k = max(1, min(COMPONENTS, x.shape[1], y.shape[1]))
        self.cca = CCA(k, max_iter=1000)
        with warnings.catch_warnings():                # rank-deficient text features (few distinct captions)
            warnings.simplefilter("ignore")
            self.cca.fit(x, y)

    def score(self, images: np.ndarray, ids: np.ndarray) -> float:
        x = self.pca.transform(images.reshape(len(images), -1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xs, ys = self.cca.transform(x, self.sentences(ids))
        cos = (xs * ys).sum(1) / np.maximum(np.linalg.norm(xs, axis=1) * np.linalg.norm(ys, axis=1), 1e-12)
        return float(cos.mean())


def _seeded(n: int, limit: int, seed: int) -> Tensor:
    if n <= limit:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@torch.no_grad()
def image_text_cca(model, train: MultimodalDataset, test: MultimodalDataset, device, fit_rows: int = 5000,
                   test_rows: int = 1000, joint_samples: int = 1000, seed: int = 0,
                   batch_size: int = 500) -> dict | None:
    """{"real", "image_to_text", "text_to_image", "joint", "shuffled", ...}: CCA correlations of test pairs;
    None when the data has no image-like + text pair of modalities."""
    pair = image_text_pair(test)
    if pair is None:
        return None
    img, txt = pair
    vocab = Vocabulary(tuple(test.specs[txt].vocab))
    both = lambda data: torch.nonzero(data.mask[img] & data.mask[txt]).squeeze(1)  # noqa: E731
    tr = both(train)
    tr = tr[_seeded(len(tr), fit_rows, seed)]
    scorer = PairScorer(train.data[img][tr].numpy(), token_ids(train.data[txt], tr), vocab, seed)
    te = both(test)
    te = te[_seeded(len(te), test_rows, seed)]
    images, ids = test.data[img][te], token_ids(test.data[txt], te)
    gen_ids, gen_images = [], []
    torch.manual_seed(seed)
    for i in range(0, len(te), batch_size):
        rows = te[i:i + batch_size]
        x_img, x_txt = test.data[img][rows].to(device), test.data[txt][rows].to(device)
        gen_ids.append(ids_from_rows(model.translate({img: x_img}, [txt], sample=True)[txt].cpu()))
        gen_images.append(model.translate({txt: x_txt}, [img], sample=True)[img].cpu())
    joint_ids, joint_images = [], []
    for i in range(0, joint_samples, batch_size):
        out = model.generate(min(batch_size, joint_samples - i), [img, txt])
        joint_ids.append(ids_from_rows(out[txt].cpu()))
        joint_images.append(out[img].cpu())
    shuffle = torch.randperm(len(te), generator=torch.Generator().manual_seed(seed + 1)).numpy()
    images_np = images.numpy()
    result = {"image": img, "text": txt, "fit_rows": len(tr), "test_rows": len(te), "joint_samples": joint_samples,
              "real": scorer.score(images_np, ids),
              "image_to_text": scorer.score(images_np, torch.cat(gen_ids).numpy()),
              "text_to_image": scorer.score(torch.cat(gen_images).float().numpy(), ids),
              "joint": scorer.score(torch.cat(joint_images).float().numpy(), torch.cat(joint_ids).numpy())
              if joint_samples else None,
              "shuffled": scorer.score(images_np, ids[shuffle]),
              "components": int(scorer.cca.n_components), "definition": DEFINITION}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()}
