"""Text as a modality: vocabulary, padding, one-hot round trip, likelihood masking, text networks."""
from __future__ import annotations

import pytest
import torch

from mmvae.data.lazy import LazyDataset, OneHotRows
from mmvae.data.text import (END, PAD, UNK, Vocabulary, ids_from_rows, one_hot_tokens, sentences_from,
                             text_spec, tokenize)
from mmvae.distributions.likelihoods import make_likelihood
from mmvae.nets.registry import default_networks
from mmvae.nets.text import TextDecoder, TextEncoder

CAPTIONS = ["a small red bird .", "a small blue bird", "the bird is red", "a tiny bird, blue wings"]


def test_tokenize_splits_words_and_punctuation():
    assert tokenize("A bird, RED.") == ["a", "bird", ",", "red", "."]


def test_vocabulary_min_count_specials_and_unknown_words():
    v = Vocabulary.build(CAPTIONS, min_count=2)
    assert v.words[:3] == (PAD, END, UNK)
    assert "bird" in v.words and "red" in v.words and "tiny" not in v.words  # tiny occurs once
    ids = v.encode(["a tiny bird"], max_len=6)
    assert ids[0].tolist() == [v.index["a"], v.index[UNK], v.index["bird"], v.index[END], 0, 0]


def test_encode_truncates_to_max_len_with_end_token_and_decodes_back():
    v = Vocabulary.build(CAPTIONS, min_count=1)
    ids = v.encode(CAPTIONS, max_len=5)
    assert ids.shape == (4, 5)
    assert (ids[:, :].eq(v.index[END]).sum(1) == 1).all()        # exactly one end token per row
    assert ids[0].tolist()[-1] == v.index[END]                       # 5 words truncated to 4 + end
    assert v.decode(ids)[2] == "the bird is red"
    assert v.decode(v.encode(["a small blue bird"], 9)) == ["a small blue bird"]


def test_one_hot_rows_are_zero_at_padding_and_round_trip():
    v = Vocabulary.build(CAPTIONS)
    ids = v.encode(CAPTIONS, max_len=9)
    x = one_hot_tokens(ids, len(v))
    assert x.shape == (4, 9, len(v))
    assert torch.equal(x.sum(-1) == 0, ids == 0)                     # padding <=> all-zero row
    assert torch.equal(ids_from_rows(x), ids)
    spec = text_spec("text", v, 9)
    assert spec.kind == "text" and spec.shape == (9, len(v)) and spec.vocab == v.words
    assert sentences_from(x, spec) == [" ".join(tokenize(c)) for c in CAPTIONS]


def test_categorical_likelihood_ignores_padding_positions():
    v = Vocabulary.build(CAPTIONS)
    ids = v.encode(CAPTIONS, max_len=9)
    x = one_hot_tokens(ids, len(v))
    lik = make_likelihood("categorical", (9, len(v)), "text")
    logits = torch.randn(4, 9, len(v))
    base = lik.log_prob(logits, x)
    changed = logits.clone()
    changed[ids == 0] = torch.randn_like(changed[ids == 0]) * 10      # anything at padding positions
    assert torch.allclose(lik.log_prob(changed, x), base)
    # and it equals the sum over real tokens of log softmax
    lsm = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(base, (lsm * (ids != 0)).sum(1), atol=1e-5)


def test_lazy_one_hot_matches_dense_and_subsets_stay_lazy():
    v = Vocabulary.build(CAPTIONS)
    ids = v.encode(CAPTIONS, max_len=7)
    lazy = OneHotRows(ids, len(v))
    dense = one_hot_tokens(ids, len(v))
    assert lazy.shape == dense.shape and torch.equal(lazy[1:3], dense[1:3])
    idx = torch.tensor([3, 0])
    assert torch.equal(lazy[idx], dense[idx]) and torch.equal(lazy[torch.tensor([True, False, True, False])], dense[[0, 2]])
    ds = LazyDataset({"text": text_spec("text", v, 7)}, {"text": lazy})
    sub = ds.subset(torch.tensor([2, 1]))
    assert isinstance(sub.data["text"], OneHotRows) and torch.equal(sub.batch(slice(None)).data["text"], dense[[2, 1]])


@pytest.mark.parametrize("length", [4, 8, 9, 32])
def test_text_networks_map_shapes_for_any_length(length):
    enc, dec = TextEncoder((length, 50), 6), TextDecoder((length, 50), 6)
    x = one_hot_tokens(torch.randint(0, 50, (3, length)), 50)
    loc, raw = enc(x)
    assert loc.shape == raw.shape == (3, 6)
    assert dec(loc).shape == (3, length, 50)


def test_registry_gives_text_networks_for_text_kind():
    v = Vocabulary.build(CAPTIONS)
    enc, dec = default_networks(text_spec("text", v, 8), 4)
    assert isinstance(enc, TextEncoder) and isinstance(dec, TextDecoder)


def test_text_autoencoder_learns_captions():
    """Encoder + decoder through a bottleneck reproduce the words of generated captions."""
    from mmvae.data.mnist_text import captions

    torch.manual_seed(0)
    labels = torch.randint(0, 10, (400,)).numpy()
    text = captions(labels, seed=0)
    v = Vocabulary.build(text)
    ids = v.encode(text, 8)
    x = one_hot_tokens(ids, len(v))
    enc, dec = TextEncoder((8, len(v)), 8), TextDecoder((8, len(v)), 8)
    lik = make_likelihood("categorical", (8, len(v)), "text")
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    for step in range(150):
        b = torch.randint(0, 400, (64,))
        loss = -lik.log_prob(dec(enc(x[b])[0]), x[b]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = ids_from_rows(lik.mean(dec(enc(x)[0])))
    real = ids != 0
    accuracy = (pred[real] == ids[real]).float().mean().item()
    assert accuracy > 0.9, accuracy
