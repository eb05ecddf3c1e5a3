"""Tokenization (and its cache) and the bucketed, resumable batcher."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertTokenizer

from bitbert.tasks import Examples, load_glue
from bitbert.tasks.batching import BucketBatcher, TokenizedSplit, tokenize

SHARED = Path(__file__).resolve().parents[2] / "shared"
GLUE_DIR = SHARED / "data" / "glue"
MINILM = SHARED / "models" / "minilm-l6-h384-fp16"

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
CLS, SEP = 2, 3


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


def examples(source: str, pair: bool = False, n: int = 5) -> Examples:
    texts_a = [" ".join(["the cat sat"] * (i % 4 + 1)) for i in range(n)]
    texts_b = [f"a dog ran {i}" for i in range(n)] if pair else None
    return Examples(texts_a, texts_b, np.arange(n, dtype=np.int64) % 2, source)


# --------------------------------------------------------------------------- tokenize
def test_tokenize_single_and_pair(tokenizer, tmp_path):
    single = tokenize(tokenizer, examples("mem"), max_length=8, cache_dir=None)
    assert single.input_ids[0].tolist() == [CLS, 5, 6, 7, SEP]
    assert single.input_ids[0].dtype == np.int32 and single.token_type_ids[0].dtype == np.int32
    assert max(single.lengths) == 8 and single.input_ids[3][-1] == SEP  # truncated, still closed
    pair = tokenize(tokenizer, examples("mem", pair=True), max_length=64, cache_dir=None)
    assert pair.input_ids[0].tolist() == [CLS, 5, 6, 7, SEP, 10, 11, 12, 1, SEP]
    assert pair.token_type_ids[0].tolist() == [0] * 5 + [1] * 5
    np.testing.assert_array_equal(pair.labels, [0, 1, 0, 1, 0])


def call_spy(tokenizer):
    cls = type(tokenizer)
    return mock.patch.object(cls, "__call__", autospec=True, side_effect=cls.__call__)


def test_tokenize_cache_hit_skips_tokenizer(tokenizer, tmp_path):
    source = tmp_path / "train.tsv"
    source.write_text("stand-in for the split's file\n")
    ex = examples(str(source), pair=True)
    with call_spy(tokenizer) as spy:
        first = tokenize(tokenizer, ex, 16, cache_dir=tmp_path / "cache")
        assert spy.call_count == 1
        second = tokenize(tokenizer, ex, 16, cache_dir=tmp_path / "cache")
        assert spy.call_count == 1  # served from the .npz
        tokenize(tokenizer, ex, 12, cache_dir=tmp_path / "cache")  # another max_length: another key
        assert spy.call_count == 2
        tokenize(tokenizer, ex, 16, cache_dir=None)
        assert spy.call_count == 3
    for a, b in zip(first.input_ids + first.token_type_ids, second.input_ids + second.token_type_ids):
        np.testing.assert_array_equal(a, b)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.startswith("train.tsv-") and f.endswith(".npz") for f in files)  # no temp files


def test_tokenize_cache_invalidated_by_source_change(tokenizer, tmp_path):
    source = tmp_path / "dev.tsv"
    source.write_text("v1\n")
    ex = examples(str(source))
    tokenize(tokenizer, ex, 16, cache_dir=tmp_path)
    source.write_text("version 2, a different size\n")
    with call_spy(tokenizer) as spy:
        tokenize(tokenizer, ex, 16, cache_dir=tmp_path)
        assert spy.call_count == 1


def test_tokenize_unreadable_cache_is_a_miss(tokenizer, tmp_path):
    ex = examples("mem")
    tokenize(tokenizer, ex, 16, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.npz")
    cached.write_bytes(b"garbage")
    again = tokenize(tokenizer, ex, 16, cache_dir=tmp_path)
    assert again.input_ids[0].tolist() == [CLS, 5, 6, 7, SEP]


@pytest.mark.skipif(not (MINILM.is_dir() and GLUE_DIR.is_dir()), reason="shared model/data not available")
def test_real_tokenizer_ignores_baked_in_padding(tmp_path):
    tok = AutoTokenizer.from_pretrained(str(MINILM))
    ex = load_glue("mrpc", GLUE_DIR / "MRPC", "dev")
    ex = Examples(ex.texts_a[:16], ex.texts_b[:16], ex.labels[:16], ex.source)
    split = tokenize(tok, ex, max_length=32, cache_dir=tmp_path)
    assert split.lengths.max() == 32 and split.lengths.min() > 3
    ids = split.input_ids[0].tolist()
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and ids.count(tok.sep_token_id) == 2
    short = tokenize(tok, Examples(["good"], None, np.zeros(1, np.int64), "mem"), 128, cache_dir=None)
    assert short.input_ids[0].tolist() == [tok.cls_token_id, tok.convert_tokens_to_ids("good"), tok.sep_token_id]


# --------------------------------------------------------------------------- batching
def synthetic_split(n: int = 103, regression: bool = False, seed: int = 0) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 40, n)
    ids = [np.arange(1, k + 1, dtype=np.int32) + 100 * i for i, k in enumerate(lengths)]  # id encodes example
    types = [(np.arange(k) >= k // 2).astype(np.int32) for k in lengths]
    labels = rng.random(n).astype(np.float32) if regression else np.arange(n, dtype=np.int64)
    return TokenizedSplit(ids, types, labels, "synthetic")


def example_index(batch: dict[str, torch.Tensor]) -> list[int]:
    return ((batch["input_ids"][:, 0] - 1) // 100).tolist()


def test_batches_pad_to_batch_max_and_cover_once():
    split = synthetic_split()
    batcher = BucketBatcher(split, batch_size=8, shuffle=True, seed=1, pad_id=0, bucket_size_multiplier=4)
    batches = list(batcher)
    assert len(batches) == len(batcher) == 13
    seen = []
    for batch in batches:
        idx = example_index(batch)
        seen += idx
        lengths = split.lengths[idx]
        assert batch["input_ids"].shape == (len(idx), lengths.max())  # padded to this batch's longest only
        assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
        assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
        for row, i in enumerate(idx):
            assert batch["token_type_ids"][row, :lengths[row]].tolist() == split.token_type_ids[i].tolist()
        assert batch["labels"].tolist() == idx  # labels follow their examples
        assert all(t.dtype == torch.int64 for t in batch.values())
    assert sorted(seen) == list(range(len(split)))


def test_bucketing_groups_similar_lengths():
    split = synthetic_split(n=96)
    batcher = BucketBatcher(split, batch_size=8, shuffle=True, seed=0, pad_id=0, bucket_size_multiplier=100)
    # One chunk holds everything, so batches are consecutive runs of the length-sorted examples.
    runs = sorted((sorted(split.lengths[b]) for b in batcher.batch_indices()), key=lambda r: r[0])
    assert np.concatenate(runs).tolist() == sorted(split.lengths.tolist())


def test_determinism_epochs_and_resume():
    split = synthetic_split()
    make = lambda: BucketBatcher(split, 8, shuffle=True, seed=3, pad_id=0, bucket_size_multiplier=2)  # noqa: E731
    a, b = make(), make()
    epoch0 = [example_index(x) for x in a]
    assert epoch0 == [example_index(x) for x in b]
    assert a.state_dict() == {"epoch": 1, "batches_done": 0}  # an exhausted epoch moves on
    epoch1 = [example_index(x) for x in a]
    assert epoch1 != epoch0
    assert BucketBatcher(split, 8, shuffle=True, seed=4, pad_id=0).batch_indices(0)[0].tolist() != epoch0[0]

    # Stop after 5 batches of epoch 1, restore into a fresh batcher: the rest is identical.
    c = make()
    c.set_epoch(1)
    it = iter(c)
    head = [example_index(next(it)) for _ in range(5)]
    state = c.state_dict()
    assert state == {"epoch": 1, "batches_done": 5}
    d = make()
    d.load_state_dict(state)
    d.set_epoch(1)  # a `for epoch in ...: set_epoch(epoch)` loop keeps the restored progress
    assert head + [example_index(x) for x in d] == epoch1
    assert d.state_dict() == {"epoch": 2, "batches_done": 0}
    d.set_epoch(7)
    assert d.state_dict() == {"epoch": 7, "batches_done": 0}
    with pytest.raises(ValueError):
        d.load_state_dict({"epoch": 0, "batches_done": 99})


def test_no_shuffle_keeps_order_drop_last_and_multiple_of():
    split = synthetic_split(n=21, regression=True)
    batcher = BucketBatcher(split, 4, shuffle=False, seed=0, pad_id=7, drop_last=True, pad_to_multiple_of=8)
    batches = list(batcher)
    assert len(batches) == len(batcher) == 5
    assert sum((example_index(x) for x in batches), []) == list(range(20))
    for batch in batches:
        width = batch["input_ids"].shape[1]
        assert width % 8 == 0 and width - 8 < batch["attention_mask"].sum(1).max() <= width
        assert (batch["input_ids"][batch["attention_mask"] == 0] == 7).all()
        assert batch["labels"].dtype == torch.float32
    shuffled = BucketBatcher(split, 4, shuffle=True, seed=0, pad_id=0, drop_last=True)
    assert len(shuffled) == 5 and all(len(b) == 4 for b in shuffled.batch_indices())
    assert len(BucketBatcher(split, 4, shuffle=True, seed=0, pad_id=0)) == 6
