"""Data augmentation for distillation: neighbour table, perturbed copies, unknown labels skipped by
the ground-truth loss."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitbert.core.config import AugmentConfig, ConfigError
from bitbert.tasks.batching import TokenizedSplit
from bitbert.training.augment import UNKNOWN_CLASS, augment_split, copy_draws, neighbour_table, segments
from bitbert.training.losses import ground_truth_loss

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "great", "bad", "##s", "!", "movie", "film", "42", "[unused0]"]
ID = {t: i for i, t in enumerate(VOCAB)}


class Tok:
    all_special_ids = [0, 1, 2, 3]
    wordpiece_tokenizer = "a slow BertTokenizer has one"

    def __init__(self, vocab=VOCAB):
        self.vocab = vocab

    def convert_ids_to_tokens(self, ids):
        return [self.vocab[i] for i in ids]


def embeddings() -> torch.Tensor:
    e = torch.zeros(len(VOCAB), 3)
    e[:, 2] = 1.0  # everything not set below points the same way
    e[ID["good"]] = torch.tensor([1.0, 0.1, 0.0])
    e[ID["great"]] = torch.tensor([1.0, 0.2, 0.0])
    e[ID["bad"]] = torch.tensor([0.8, -0.6, 0.0])
    e[ID["movie"]] = torch.tensor([0.0, 1.0, 0.1])
    e[ID["film"]] = torch.tensor([0.1, 1.0, 0.1])
    return e


def test_neighbour_table_holds_only_whole_words_nearest_first():
    table, is_piece = neighbour_table(embeddings(), Tok(), neighbours=2)
    assert table.shape == (len(VOCAB), 2)
    assert list(table[ID["good"]]) == [ID["great"], ID["bad"]]
    assert list(table[ID["movie"]]) == [ID["film"], ID["great"]]
    for t in ("[PAD]", "[CLS]", "[SEP]", "##s", "!", "42", "[unused0]"):
        assert (table[ID[t]] == -1).all(), t  # never replaced
    words = {ID[w] for w in ("good", "great", "bad", "movie", "film")}
    assert set(table[table >= 0].tolist()) <= words and all(i not in table[i] for i in words)  # never itself
    assert is_piece.tolist() == [t.startswith("##") for t in VOCAB]


def test_neighbour_table_needs_wordpiece_and_enough_words():
    with pytest.raises(ConfigError, match="WordPiece"):
        neighbour_table(embeddings(), type("BPE", (), {"convert_ids_to_tokens": Tok.convert_ids_to_tokens})(), 2)
    with pytest.raises(ConfigError, match="only 5 whole words"):
        neighbour_table(embeddings(), Tok(), 5)


def split(rows, labels):
    ids = [np.array([ID[t] for t in r], np.int32) for r in rows]
    return TokenizedSplit(ids, [np.arange(len(x), dtype=np.int32) % 2 for x in ids], np.asarray(labels), "toy")


ROWS = [["[CLS]", "good", "movie", "[SEP]"],
        ["[CLS]", "bad", "##s", "!", "[SEP]"],  # "bad" + "##s" is a two-piece word: kept
        ["[CLS]", "42", "!", "[SEP]"]]  # nothing replaceable: no copies


def test_every_eligible_word_is_swapped_at_probability_one():
    table, piece = neighbour_table(embeddings(), Tok(), 1)
    out = augment_split(split(ROWS, [1, 0, 1]), table, piece, AugmentConfig(copies=2, replace_prob=1.0))
    assert len(out) == 3 + 2  # the originals, then one changed copy of row 0 per round
    for i in range(3):
        assert (out.input_ids[i] == split(ROWS, [1, 0, 1]).input_ids[i]).all()
    for copy in out.input_ids[3:]:
        assert copy.tolist() == [ID["[CLS]"], ID["great"], ID["film"], ID["[SEP]"]] and copy.dtype == np.int32
    assert out.labels.tolist() == [1, 0, 1, UNKNOWN_CLASS, UNKNOWN_CLASS]
    assert all((t == np.arange(len(t)) % 2).all() for t in out.token_type_ids)  # copied with the ids
    assert out.lengths.tolist() == [4, 5, 4, 4, 4] and "augmented x2" in out.source


def test_copies_are_deterministic_and_follow_the_probability():
    table, piece = neighbour_table(embeddings(), Tok(), 3)
    rows = [["[CLS]"] + ["good", "movie", "film", "bad"] * 10 + ["[SEP]"]] * 20
    data = split(rows, [0.5] * 20)  # a regression task: copies get NaN labels
    cfg = AugmentConfig(copies=3, replace_prob=0.25, seed=7)
    a, b = augment_split(data, table, piece, cfg), augment_split(data, table, piece, cfg)
    assert all((x == y).all() for x, y in zip(a.input_ids, b.input_ids))
    c = augment_split(data, table, piece, AugmentConfig(copies=3, replace_prob=0.25, seed=8))
    assert any((x != y).any() for x, y in zip(a.input_ids[20:], c.input_ids[20:]))
    swapped = np.mean([(x != data.input_ids[0]).mean() * 42 / 40 for x in a.input_ids[20:]])
    assert 0.15 < swapped < 0.35  # about replace_prob of the 40 words; swaps never repeat the word
    assert np.isnan(a.labels[20:]).all() and (a.labels[:20] == 0.5).all() and len(a) == 80


def test_no_copies_returns_the_split_itself():
    data = split(ROWS, [1, 0, 1])
    assert augment_split(data, *neighbour_table(embeddings(), Tok(), 1), AugmentConfig()) is data


@pytest.mark.parametrize("bad, match", [(dict(copies=-1), "copies"), (dict(copies=1.5), "copies"),
                                        (dict(replace_prob=0), "replace_prob"), (dict(neighbours=0), "neighbours")])
def test_config_is_validated(bad, match):
    with pytest.raises(ConfigError, match=match):
        AugmentConfig(**bad)


def test_ground_truth_loss_skips_unknown_labels():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]], requires_grad=True)
    labels = torch.tensor([0, UNKNOWN_CLASS, 1])
    # hand-computed: mean over the two known rows of -log softmax
    want = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(10.0))) / 2
    loss = ground_truth_loss(logits, labels, regression=False)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert (logits.grad[1] == 0).all()
    assert ground_truth_loss(logits, torch.tensor([0, 1, 1]), False).item() == pytest.approx(
        F.cross_entropy(logits, torch.tensor([0, 1, 1])).item(), rel=1e-6)  # no unknowns: the plain mean
    only_copies = ground_truth_loss(logits, torch.full((3,), UNKNOWN_CLASS), False)
    assert only_copies.item() == 0.0


def test_regression_ground_truth_skips_nan_labels():
    pred = torch.tensor([[1.0], [3.0], [0.0]], requires_grad=True)
    loss = ground_truth_loss(pred, torch.tensor([0.5, float("nan"), 2.0]), regression=True)
    assert loss.item() == pytest.approx((0.25 + 4.0) / 2)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1].item() == 0.0


def test_a_pair_copy_perturbs_one_text_and_keeps_the_other():
    assert copy_draws(1, 3) == [0, 0, 0] and copy_draws(2, 2) == [0, 0, 1, 1]
    table, piece = neighbour_table(embeddings(), Tok(), 1)
    pair = ["[CLS]", "good", "movie", "[SEP]", "bad", "film", "[SEP]"]
    data = split([pair, ["[CLS]", "good", "[SEP]"]], [1, 0])
    seg = segments(data, ID["[SEP]"])
    assert seg.tolist() == [0, 0, 0, 0, 1, 1, 1] + [0, 0, 0]  # after the first separator: the second text
    assert segments(data, None).tolist() == [0] * 10
    out = augment_split(data, table, piece, AugmentConfig(copies=1, replace_prob=1.0), seg)
    copies = [c.tolist() for c in out.input_ids[2:]]
    ids = [ID[t] for t in pair]
    # per text one draw: the pair twice (first text swapped, then the second), the single text once
    assert copies == [[ids[0], ID["great"], ID["film"], *ids[3:]], [ID["[CLS]"], ID["great"], ID["[SEP]"]],
                      [*ids[:4], ID["good"], ID["movie"], ids[6]]]
    with pytest.raises(ConfigError, match="segment has 3 entries for 10 tokens"):
        augment_split(data, table, piece, AugmentConfig(copies=1), seg[:3])
