"""CCA image–text correlation (issue 11, item 7): real pairs score well above shuffled ones on mnist-text
and on a small CUB-format folder; generated pairs are scored by the same fitted CCA (an oracle that returns
the true caption scores exactly the real pairs, a model that ignores its input scores the shuffled ones);
runs without an image–text pair get a note."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import build_tiny
from mmvae.data.registry import load_dataset
from mmvae.data.text import Vocabulary
from mmvae.data.toy import toy_bimodal
from mmvae.evaluation.cca import PairScorer, SentenceFeatures, token_ids
from mmvae.evaluation.evaluate import Options, evaluate_model


@pytest.fixture(scope="module")
def mnist_text():
    return load_dataset("mnist-text", n=3000)


def test_sentence_features_follow_the_captions(mnist_text):
    train = mnist_text.train
    vocab = Vocabulary(tuple(train.specs["text"].vocab))
    ids = token_ids(train.data["text"], torch.arange(len(train)))
    feats = SentenceFeatures(ids, vocab)
    emb = feats(ids)
    assert emb.shape == (len(train), feats.vectors.shape[1]) and np.isfinite(emb).all()
    assert float(np.abs(emb @ feats.pc).max()) < 1e-8                     # the first principal component is removed
    # Two captions of the same digit and phrase are the same sentence; of different digits they differ.
    same = [i for i in range(len(train)) if (ids[i] == ids[0]).all()]
    assert len(same) > 1 and np.allclose(emb[same[0]], emb[same[1]])
    other = next(i for i in range(len(train)) if train.label[i] != train.label[0])
    assert not np.allclose(emb[0], emb[other])


def test_real_pairs_correlate_and_shuffled_pairs_do_not(mnist_text):
    train, test = mnist_text.train, mnist_text.test
    vocab = Vocabulary(tuple(train.specs["text"].vocab))
    tr, te = torch.arange(len(train)), torch.arange(len(test))
    scorer = PairScorer(train.data["image"][tr].numpy(), token_ids(train.data["text"], tr), vocab)
    images, ids = test.data["image"][te].numpy(), token_ids(test.data["text"], te)
    real = scorer.score(images, ids)
    shuffled = scorer.score(images, ids[np.random.default_rng(0).permutation(len(ids))])
    assert real > 0.1 and abs(shuffled) < 0.05 and real > shuffled + 0.1


class Lookup(nn.Module):
    """A model over a fixed dataset: ``oracle`` returns each input's true partner (and whole rows for joint
    generation); otherwise a random row's modality, ignoring the input."""

    def __init__(self, data, oracle: bool):
        super().__init__()
        self.data, self.oracle = data, oracle
        self.images = data.data["image"][torch.arange(len(data))]
        self.texts = data.data["text"][torch.arange(len(data))]

    def _row_of(self, x, pool):
        flat = pool.flatten(1)
        return torch.cdist(x.flatten(1), flat).argmin(1)

    def translate(self, data, targets, sample=False):
        (source, x), = data.items()
        n = x.shape[0]
        rows = self._row_of(x, self.images if source == "image" else self.texts) if self.oracle \
            else torch.randint(0, len(self.data), (n,))
        return {t: (self.images if t == "image" else self.texts)[rows] for t in targets}

    def generate(self, n, modalities):
        rows = torch.randint(0, len(self.data), (n,))
        other = rows if self.oracle else torch.randint(0, len(self.data), (n,))
        return {"image": self.images[rows], "text": self.texts[other]}


def test_generated_pairs_are_scored_by_the_same_cca(tmp_path, mnist_text):
    train, test = mnist_text.train, mnist_text.test
    opts = Options(cca_test_rows=300)
    oracle = evaluate_model(Lookup(test, True), train, test, tmp_path / "o", ["cca"], opts, device="cpu",
                            log=lambda *a: None)
    cca = oracle["cca"]
    assert cca["image_to_text"] == pytest.approx(cca["real"], abs=1e-9)       # the generated caption is the true one
    assert cca["joint"] > cca["shuffled"] + 0.1 and cca["text_to_image"] > cca["shuffled"] + 0.05
    assert oracle["chance"]["cca"]["value"] == cca["shuffled"]
    blind = evaluate_model(Lookup(test, False), train, test, tmp_path / "b", ["cca"], opts, device="cpu",
                           log=lambda *a: None)["cca"]
    for key in ("image_to_text", "text_to_image", "joint"):
        assert abs(blind[key] - blind["shuffled"]) < 0.06                    # no better than chance
    report = (tmp_path / "o" / "report.md").read_text()
    assert "## CCA correlation (image–text)" in report and "real images with shuffled captions" in report
    assert "CCA correlation" in report.split("## Chance levels")[1]


def write_cub_folder(root, per_class: tuple[int, int] = (16, 6), dim: int = 24, seed: int = 0):
    """A CUB-format folder (docs/datasets.md): captions, two per image, and a (N_images, dim) feature array
    per split; five bird classes, each with its own colours and prototype feature vector."""
    rng = np.random.default_rng(seed)
    colours = [("red", "black"), ("yellow", "grey"), ("blue", "white"), ("brown", "orange"), ("green", "pink")]
    protos = rng.normal(0, 2, (len(colours), dim))
    (root / "resnet101_2048").mkdir(parents=True)
    for split, n, text_name in (("train", per_class[0], "text_trainvalclasses.txt"),
                                ("test", per_class[1], "text_testclasses.txt")):
        feats, lines = [], []
        for c, (a, b) in enumerate(colours):
            for _ in range(n):
                feats.append(protos[c] + rng.normal(0, 0.5, dim))
                lines += [f"this bird has a {a} crown and {b} wings .", f"a small {a} bird with a {b} belly ."]
        order = rng.permutation(len(feats))
        np.save(root / "resnet101_2048" / f"{split}.npy", np.asarray(feats, np.float32)[order])
        (root / text_name).write_text("\n".join(line for i in order for line in lines[2 * i:2 * i + 2]) + "\n")


def test_cca_on_a_cub_format_folder(tmp_path):
    write_cub_folder(tmp_path / "cub")
    splits = load_dataset("cub", data_dir=str(tmp_path))
    assert splits.train.specs["image"].kind == "vector" and splits.train.specs["text"].kind == "text"
    model = build_tiny("mmvae", splits.train.specs).eval()
    rec = evaluate_model(model, splits.train, splits.test, tmp_path / "eval", ["cca"], device="cpu",
                         log=lambda *a: None)
    cca = rec["cca"]
    assert cca["image"] == "image" and cca["text"] == "text" and cca["test_rows"] == len(splits.test)
    assert cca["real"] > cca["shuffled"] + 0.2
    for key in ("image_to_text", "text_to_image", "joint"):
        assert -1.0 <= cca[key] <= 1.0


def test_cca_is_a_note_without_an_image_text_pair(tmp_path):
    toy = toy_bimodal(n=200, dim=4)
    rec = evaluate_model(build_tiny("mmvae", toy.specs).eval(), toy.train, toy.test, tmp_path, ["cca"],
                         log=lambda *a: None)
    assert rec["cca"] is None and "text modality" in rec["notes"]["cca"]
