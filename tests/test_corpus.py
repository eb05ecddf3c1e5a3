import bz2
import gzip
import itertools
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bitbert.tasks.corpus import (CorpusError, CorpusStats, MLMCollator, PackedMLMStream, check_min_sequences,
                            iter_lines, mask_tokens)

TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-h384-fp16"
SEQ_LEN = 32


@pytest.fixture(scope="module")
def tokenizer():
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"{TOKENIZER_DIR} not available")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


# Distinct numbers per line make every packed block unique, so sequences can be traced back to the text.
LINES = [f"line {i} mentions the number {i * 7919 % 10007} and word{i}." for i in range(300)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def token_stream(tokenizer, lines):
    ids = tokenizer(lines, add_special_tokens=False, truncation=False, padding=False)["input_ids"]
    return np.fromiter(itertools.chain.from_iterable(ids), np.int64)


def blocks(tokenizer, size, holdout_every=0):
    """Reference packing: (train, heldout) sets of block tuples in corpus order."""
    tokens = token_stream(tokenizer, LINES)
    all_blocks = [tuple(tokens[i:i + size]) for i in range(0, len(tokens) - size + 1, size)]
    held = {b for j, b in enumerate(all_blocks) if holdout_every and j % holdout_every == holdout_every - 1}
    return [b for b in all_blocks if b not in held], held


def ids_of(stream, n=None):
    return [tuple(item["input_ids"].tolist()) for item in itertools.islice(stream, n)]


def test_packing_exact_length_and_specials(tokenizer, corpus):
    stream = PackedMLMStream([corpus], tokenizer, SEQ_LEN, shuffle=False)
    items = list(stream)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for item in items:
        ids = item["input_ids"]
        assert ids.dtype == torch.int64 and ids.shape == (SEQ_LEN,)
        assert ids[0] == cls and ids[-1] == sep
        assert not torch.isin(ids[1:-1], torch.tensor([cls, sep])).any()
        assert (item["token_type_ids"] == 0).all() and "next_sentence_label" not in item
    # In order, the blocks are exactly the concatenated token stream, tail dropped.
    reference, _ = blocks(tokenizer, SEQ_LEN - 2)
    assert [tuple(item["input_ids"][1:-1].tolist()) for item in items] == reference
    assert stream.stats.lines_read == len(LINES) and stream.stats.tokens > 0


def test_nsp_layout_labels_and_consecutive_text(tokenizer, corpus):
    stream = PackedMLMStream([corpus], tokenizer, SEQ_LEN, nsp=True, seed=3)
    reference, _ = blocks(tokenizer, SEQ_LEN - 3)
    reference = set(reference)
    labels = []
    for item in stream:
        ids, types = item["input_ids"], item["token_type_ids"]
        assert ids.shape == types.shape == (SEQ_LEN,)
        seps = (ids == tokenizer.sep_token_id).nonzero().flatten().tolist()
        assert ids[0] == tokenizer.cls_token_id and len(seps) == 2 and seps[1] == SEQ_LEN - 1
        cut = seps[0]
        assert (types[:cut + 1] == 0).all() and (types[cut + 1:] == 1).all()
        text = tuple(ids[1:cut].tolist()) + tuple(ids[cut + 1:-1].tolist())
        label = int(item["next_sentence_label"])
        assert (text in reference) == (label == 0)  # label 0: A and B are one consecutive block of text
        labels.append(label)
    assert 0.3 < np.mean(labels) < 0.7


def test_iter_lines_compressed_and_stream_from_xz(tokenizer, corpus, tmp_path):
    raw = corpus.read_bytes()
    for suffix, opener in ((".xz", lzma.open), (".gz", gzip.open), (".bz2", bz2.open)):
        path = tmp_path / f"corpus.txt{suffix}"
        with opener(path, "wb") as f:
            f.write(raw)
        assert list(iter_lines([path])) == LINES
    plain = PackedMLMStream([corpus], tokenizer, SEQ_LEN, seed=1, chunk_lines=7)
    packed = PackedMLMStream([tmp_path / "corpus.txt.xz"], tokenizer, SEQ_LEN, seed=1, chunk_lines=100)
    assert ids_of(plain) == ids_of(packed)  # chunk size does not change the packing


def test_iter_lines_skips_and_counts(tmp_path):
    path = tmp_path / "dirty.txt"
    path.write_bytes(b"\xef\xbb\xbffirst line\n\n   \t\nbad \xff\xfe bytes\r\nlast line\r\n")
    stats = CorpusStats()
    assert list(iter_lines([path], stats)) == ["first line", "last line"]
    assert (stats.lines_read, stats.skipped_empty, stats.skipped_non_utf8) == (5, 2, 1)
    with pytest.raises(CorpusError, match="missing.txt"):
        iter_lines([path, tmp_path / "missing.txt"])


def test_sharding_disjoint_complete_equal(tokenizer, corpus):
    full = ids_of(PackedMLMStream([corpus], tokenizer, SEQ_LEN, seed=5, shuffle_buffer=16))
    shards = [ids_of(PackedMLMStream([corpus], tokenizer, SEQ_LEN, seed=5, shuffle_buffer=16,
                                     rank=rank, world_size=2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(full) // 2
    assert not set(shards[0]) & set(shards[1])
    assert shards[0] + shards[1] and sorted(shards[0] + shards[1]) == sorted(full[:len(full) // 2 * 2])
    assert shards[0] == full[0::2][:len(shards[0])]


def test_resume_continues_exactly_across_passes(tokenizer, corpus):
    def make():
        return PackedMLMStream([corpus], tokenizer, SEQ_LEN, nsp=True, seed=7, epochs=3, shuffle_buffer=32)

    full = ids_of(make())
    per_pass = len(full) // 3
    assert full[:per_pass] != full[per_pass:2 * per_pass]  # each pass reshuffles ...
    assert {s[1:5] for s in full[:per_pass]} == {s[1:5] for s in full[per_pass:2 * per_pass]}  # ... same blocks

    for k in (5, per_pass + 3):  # within the first pass (pass length unknown), and after it
        first = make()
        consumed = ids_of(first, k)
        state = first.state_dict()
        assert state["sequences_done"] == k
        resumed = make()
        resumed.load_state_dict(state)
        assert consumed + ids_of(resumed) == full
    assert resumed.sequences_done == 0  # a finished run starts over
    with pytest.raises(ValueError, match="seed"):
        PackedMLMStream([corpus], tokenizer, SEQ_LEN, nsp=True, seed=8, epochs=3,
                        shuffle_buffer=32).load_state_dict(state)


def test_heldout_never_in_train(tokenizer, corpus):
    train_ref, held_ref = blocks(tokenizer, SEQ_LEN - 2, holdout_every=4)
    train = ids_of(PackedMLMStream([corpus], tokenizer, SEQ_LEN, holdout_every=4))
    held = ids_of(PackedMLMStream([corpus], tokenizer, SEQ_LEN, holdout_every=4, split="heldout"))
    assert sorted(s[1:-1] for s in train) == sorted(train_ref)
    assert sorted(s[1:-1] for s in held) == sorted(held_ref) and held_ref
    # With NSP the random B segments too come from the training blocks only.
    train_ref, held_ref = blocks(tokenizer, SEQ_LEN - 3, holdout_every=4)
    for item in PackedMLMStream([corpus], tokenizer, SEQ_LEN, nsp=True, holdout_every=4):
        ids = item["input_ids"].tolist()
        cut = ids.index(tokenizer.sep_token_id)
        head, tail = tuple(ids[1:cut]), tuple(ids[cut + 1:-1])
        assert any(b[:len(head)] == head for b in train_ref)
        assert any(b[len(head):] == tail for b in train_ref)
        assert not any(b[:len(head)] == head or b[len(head):] == tail for b in held_ref)


def test_mask_tokens_rates_specials_and_determinism():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (256, 128), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = special[:, 100:] = True
    masked, labels = mask_tokens(ids, special, 30522, 103, 0.15, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert not chosen[special].any() and (masked[special] == ids[special]).all()
    assert (labels[chosen] == ids[chosen]).all() and (masked[~chosen] == ids[~chosen]).all()
    assert abs(chosen.float().sum() / (~special).sum() - 0.15) < 0.01
    as_mask = (masked[chosen] == 103).float().mean()
    kept = (masked[chosen] == ids[chosen]).float().mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - as_mask - kept - 0.1) < 0.02
    again = mask_tokens(ids, special, 30522, 103, 0.15, torch.Generator().manual_seed(1))
    other = mask_tokens(ids, special, 30522, 103, 0.15, torch.Generator().manual_seed(2))
    assert torch.equal(again[0], masked) and torch.equal(again[1], labels)
    assert not torch.equal(other[1], labels)


def test_collator_with_dataloader(tokenizer, corpus):
    stream = PackedMLMStream([corpus], tokenizer, SEQ_LEN, nsp=True, epochs=None)
    collator = MLMCollator(tokenizer, seed=0)
    loader = DataLoader(stream, batch_size=8, collate_fn=collator)
    batch = next(iter(loader))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}
    assert all(t.dtype == torch.int64 for t in batch.values())
    assert batch["input_ids"].shape == batch["labels"].shape == (8, SEQ_LEN) and batch["attention_mask"].all()
    assert batch["next_sentence_label"].shape == (8,)
    assert (batch["labels"][:, 0] == -100).all() and (batch["labels"][:, -1] == -100).all()
    assert (batch["labels"] != -100).any() and stream.sequences_done == 8
    # Unequal lengths are padded; padding is never a target.
    items = [{"input_ids": torch.tensor([101, 5, 6, 102]), "token_type_ids": torch.zeros(4, dtype=torch.int64)},
             {"input_ids": torch.tensor([101, 7, 102]), "token_type_ids": torch.zeros(3, dtype=torch.int64)}]
    padded = collator(items)
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert padded["input_ids"][1, 3] == tokenizer.pad_token_id and padded["labels"][1, 3] == -100
    state = collator.state_dict()
    first = collator([dict(item) for item in items])
    collator.load_state_dict(state)
    assert torch.equal(collator(items)["labels"], first["labels"])


def test_too_small_corpus(tokenizer, corpus, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("just a few words\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"tiny\.txt.*0 train sequence\(s\) of 128 tokens.*need at least 1"):
        next(iter(PackedMLMStream([tiny], tokenizer, 128, epochs=None)))
    stream = PackedMLMStream([corpus], tokenizer, 128)
    n = len(list(stream))
    check_min_sequences(stream, n)
    with pytest.raises(CorpusError, match=rf"{n} train sequence\(s\).*need at least {n + 1}"):
        check_min_sequences(stream, n + 1)
    with pytest.raises(CorpusError, match="not found"):
        PackedMLMStream([tmp_path / "nope.txt"], tokenizer)
