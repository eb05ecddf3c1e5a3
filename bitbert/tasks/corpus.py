"""Pretraining text: streamed corpus lines, packed fixed-length MLM/NSP sequences, dynamic BERT masking."""
from __future__ import annotations

import bz2
import gzip
import itertools
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

__all__ = ["CorpusError", "CorpusStats", "iter_lines", "PackedMLMStream", "check_min_sequences",
           "mask_tokens", "MLMCollator", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # label of unmasked positions: the default ignore_index of cross-entropy

PathLike = str | Path
_OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)  # what a truncated/corrupt archive raises
# One sequence before collation: input ids, token type ids, NSP label (None without NSP).
_Sequence = tuple[np.ndarray, np.ndarray, "int | None"]


class CorpusError(ValueError):
    """A corpus file is missing or unreadable, or the corpus is too small for what was asked."""


@dataclass
class CorpusStats:
    """Counts of one pass over a corpus. ``lines_read`` counts every line, skipped ones included."""

    lines_read: int = 0
    skipped_empty: int = 0
    skipped_non_utf8: int = 0
    tokens: int = 0  # filled by PackedMLMStream; iter_lines leaves it at 0


# --------------------------------------------------------------------------- lines
def _checked_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    checked = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not checked:
        raise CorpusError("no corpus files given")
    for path in checked:
        if not path.is_file():
            raise CorpusError(f"corpus file not found: {path}")
    return checked


def iter_lines(paths: Sequence[PathLike] | PathLike, stats: CorpusStats | None = None) -> Iterator[str]:
    """Stream the stripped, non-empty lines of plain, .xz, .gz or .bz2 text files, in order.

    Files are read line by line, never whole. Whitespace-only lines and lines that are not valid
    UTF-8 are skipped and counted in ``stats`` (pass one to report them). Missing files raise
    `CorpusError` here, before the first line; unreadable archives raise it while streaming.
    """
    checked = _checked_paths(paths)  # now, not at the first next() of a generator
    return _lines(checked, CorpusStats() if stats is None else stats)


def _lines(paths: list[Path], stats: CorpusStats) -> Iterator[str]:
    for path in paths:
        try:
            # Binary mode: a bad byte sequence costs its line only, not the rest of the file.
            with _OPENERS.get(path.suffix.lower(), open)(path, "rb") as f:
                for raw in f:
                    stats.lines_read += 1
                    try:
                        line = raw.decode("utf-8").lstrip("\ufeff").strip()
                    except UnicodeDecodeError:
                        stats.skipped_non_utf8 += 1
                        continue
                    if not line:
                        stats.skipped_empty += 1
                        continue
                    yield line
        except _READ_ERRORS as e:
            raise CorpusError(f"{path}: cannot read: {e}") from e


# --------------------------------------------------------------------------- packing
class PackedMLMStream(IterableDataset):
    """Fixed-length pretraining sequences packed from a streamed corpus; deterministic and resumable.

    Each pass tokenizes lines in chunks of ``chunk_lines``, concatenates all token ids (across
    lines and files) and cuts them into blocks of ``seq_len - 2`` tokens (``seq_len - 3`` with
    ``nsp``); the tail shorter than a block is dropped, so every sequence has exactly ``seq_len``
    tokens: ``[CLS] block [SEP]``, or with ``nsp`` ``[CLS] A [SEP] B [SEP]`` (token types 0 then 1),
    A the head of a block cut at a random point in its middle half and B, with p=0.5, the rest of
    that block (label 0, consecutive text) or else the same-length tail of another block in the
    buffer (label 1). Memory is bounded by one tokenizer chunk plus the buffer.

    Held-out split: with ``holdout_every=k`` block k-1, 2k-1, ... (in corpus order) belongs to
    ``split="heldout"`` and all others to ``"train"``; NSP negatives come from the same split, so
    held-out text never reaches training. Both streams must share the corpus, tokenizer,
    ``seq_len``, ``nsp`` and ``holdout_every``.

    Blocks pass through a buffer of ``shuffle_buffer`` blocks, drawn at random (``shuffle``, the
    default for train) or in order; each pass (epoch) reseeds it from ``(seed, epoch)``. Every
    rank computes the same global order and keeps sequence i when ``i % world_size == rank``; a
    last incomplete group of ``world_size`` is dropped so all ranks get equally many. DataLoader
    workers split a rank's share further.

    Iterating yields dicts of int64 tensors ``input_ids``, ``token_type_ids`` (and
    ``next_sentence_label`` with ``nsp``) for ``epochs`` passes (None: forever), counting them
    in ``sequences_done``; a finished run starts over on the next ``iter()``, an interrupted one
    continues. `state_dict`/`load_state_dict` carry that count: a restored stream skips the
    sequences already consumed and continues identically. With a DataLoader worker the copy in
    the worker counts, not this object: restore ``{"sequences_done": steps * batch_size}`` before
    creating the DataLoader iterator; exact resume needs ``num_workers <= 1``.
    ``stats`` holds the `CorpusStats` of the latest (or current) pass.
    """

    def __init__(self, paths: Sequence[PathLike] | PathLike, tokenizer: Any, seq_len: int = 128, *,
                 nsp: bool = False, seed: int = 0, split: Literal["train", "heldout"] = "train",
                 holdout_every: int = 0, rank: int = 0, world_size: int = 1, epochs: int | None = 1,
                 shuffle: bool | None = None, shuffle_buffer: int = 10_000, chunk_lines: int = 1000):
        if seq_len < (5 if nsp else 3):
            raise ValueError(f"seq_len={seq_len} leaves no room for text between the special tokens")
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
        if holdout_every < 0 or holdout_every == 1 or (split == "heldout" and not holdout_every):
            raise ValueError(f"holdout_every={holdout_every}: use 0 (no held-out set) or k >= 2, and k >= 2 "
                             "for split='heldout'")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is outside 0..world_size-1 (world_size={world_size})")
        if (epochs is not None and epochs < 1) or shuffle_buffer < 1 or chunk_lines < 1:
            raise ValueError("epochs (or None), shuffle_buffer and chunk_lines must be >= 1")
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the tokenizer needs a CLS and a SEP token")
        self.paths = _checked_paths(paths)
        self.tokenizer, self.seq_len, self.nsp, self.seed = tokenizer, seq_len, nsp, seed
        self.split, self.holdout_every, self.rank, self.world_size = split, holdout_every, rank, world_size
        self.epochs, self.shuffle_buffer, self.chunk_lines = epochs, shuffle_buffer, chunk_lines
        self.shuffle = split == "train" if shuffle is None else shuffle
        self.block_len = seq_len - (3 if nsp else 2)
        self.stats = CorpusStats()
        self.sequences_done = 0
        self.sequences_per_pass: int | None = None  # known once a pass has completed

    # ---- resumable iteration
    def _config(self) -> dict[str, Any]:
        # What fixes the sequence order (rank excluded: ranks get equal counts, so one state fits all).
        return {"seq_len": self.seq_len, "nsp": self.nsp, "seed": self.seed, "split": self.split,
                "holdout_every": self.holdout_every, "world_size": self.world_size, "shuffle": self.shuffle,
                "shuffle_buffer": self.shuffle_buffer}

    def state_dict(self) -> dict[str, Any]:
        """The count of sequences consumed in the current run, and the settings it depends on."""
        return {"sequences_done": self.sequences_done, "sequences_per_pass": self.sequences_per_pass,
                "config": self._config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after ``state["sequences_done"]`` sequences; a ``config`` that differs is an error."""
        config = state.get("config")
        if config is not None and config != self._config():
            diff = {k: (config.get(k), v) for k, v in self._config().items() if config.get(k) != v}
            raise ValueError(f"state is for a differently configured stream (saved, current): {diff}")
        done = int(state["sequences_done"])
        if done < 0:
            raise ValueError(f"sequences_done={done} is negative")
        self.sequences_done, self.sequences_per_pass = done, state.get("sequences_per_pass")

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard, shards = self._shard()
        if self.sequences_done and shards > self.world_size:
            raise ValueError("exact resume needs DataLoader num_workers <= 1: each worker yields its own "
                             "share of every batch, so a skip count per worker is not defined")
        per_pass = self.sequences_per_pass
        # A known pass length skips whole passes without reading them.
        epoch, skip = divmod(self.sequences_done, per_pass) if per_pass else (0, self.sequences_done)
        while self.epochs is None or epoch < self.epochs:
            self.stats = CorpusStats()
            count = 0
            for seq in _take_shard(self._pass(epoch, self.stats), shard, shards):
                count += 1
                if skip:
                    skip -= 1
                    continue
                # Counted before the yield: a checkpoint taken while the caller holds it must not replay it.
                self.sequences_done += 1
                yield self._item(seq)
            if count == 0:  # else an endless run would spin without ever yielding
                raise CorpusError(self._too_small(0, 1, self.stats))
            self.sequences_per_pass = count
            epoch += 1
        self.sequences_done = 0

    def _shard(self) -> tuple[int, int]:
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        return self.rank * workers + worker_id, self.world_size * workers

    def _item(self, seq: _Sequence) -> dict[str, torch.Tensor]:
        ids, types, label = seq
        item = {"input_ids": torch.from_numpy(ids.astype(np.int64)),
                "token_type_ids": torch.from_numpy(types.astype(np.int64))}
        if label is not None:
            item["next_sentence_label"] = torch.tensor(label, dtype=torch.int64)
        return item

    # ---- one pass, the same global order on every rank
    def _blocks(self, stats: CorpusStats) -> Iterator[np.ndarray]:
        """This split's blocks of ``block_len`` token ids, in corpus order."""
        size, k = self.block_len, self.holdout_every
        want_heldout = self.split == "heldout"
        carry, index = np.zeros(0, np.int32), 0
        lines = iter_lines(self.paths, stats)
        while chunk := list(itertools.islice(lines, self.chunk_lines)):
            # Explicit no-truncation/no-padding: a tokenizer.json may bake in fixed ones. Literal
            # "[SEP]" in the text stays text; verbose=False: the too-long warning is moot when packing.
            ids = self.tokenizer(chunk, add_special_tokens=False, truncation=False, padding=False,
                                 return_attention_mask=False, return_token_type_ids=False,
                                 split_special_tokens=True, verbose=False)["input_ids"]
            tokens = np.concatenate([carry, np.fromiter(itertools.chain.from_iterable(ids), np.int32)])
            stats.tokens += len(tokens) - len(carry)
            n = len(tokens) // size
            for block in tokens[:n * size].reshape(n, size):
                if (bool(k) and index % k == k - 1) == want_heldout:
                    yield block
                index += 1
            carry = tokens[n * size:]

    def _pass(self, epoch: int, stats: CorpusStats) -> Iterator[_Sequence]:
        rng = np.random.default_rng([self.seed, epoch])
        cap = self.shuffle_buffer
        buf = np.empty((cap, self.block_len), np.int32)  # copies: views would pin whole token chunks
        size = head = 0  # head: the oldest block, for in-order draws
        for block in self._blocks(stats):
            if size < cap:
                buf[size] = block
                size += 1
                continue
            j = int(rng.integers(cap)) if self.shuffle else head
            yield self._sequence(buf, size, j, rng)
            buf[j] = block
            head = (head + 1) % cap
        order = rng.permutation(size) if self.shuffle else (head + np.arange(size)) % size
        for j in order:
            yield self._sequence(buf, size, int(j), rng)

    def _sequence(self, buf: np.ndarray, size: int, j: int, rng: np.random.Generator) -> _Sequence:
        cls, sep, block = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, buf[j]
        if not self.nsp:
            return np.concatenate(([cls], block, [sep])), np.zeros(self.seq_len, np.int32), None
        n = self.block_len
        lo = max(1, n // 4)
        cut = int(rng.integers(lo, n - lo + 1))  # mid-block, so neither segment is trivially short
        label = int(rng.random() < 0.5 and size > 1)
        if label:
            other = int(rng.integers(size - 1))
            tail = buf[other + (other >= j), cut:]  # any buffered block but this one
        else:
            tail = block[cut:]
        ids = np.concatenate(([cls], block[:cut], [sep], tail, [sep]))
        types = np.concatenate((np.zeros(cut + 2, np.int32), np.ones(n - cut + 1, np.int32)))
        return ids, types, label

    def _too_small(self, found: int, needed: int, stats: CorpusStats) -> str:
        usable = stats.lines_read - stats.skipped_empty - stats.skipped_non_utf8
        names = ", ".join(str(p) for p in self.paths)
        return (f"{names}: {usable} usable lines, {stats.tokens} tokens give {found} {self.split} sequence(s) "
                f"of {self.seq_len} tokens for rank {self.rank} of {self.world_size}"
                f"{f' (holdout_every={self.holdout_every})' if self.holdout_every else ''}; "
                f"need at least {needed}. Use more text, a smaller seq_len or batch size, or fewer ranks.")


def _take_shard(sequences: Iterator[_Sequence], shard: int, shards: int) -> Iterator[_Sequence]:
    """Sequence i if ``i % shards == shard``, leaving out a last group of ``shards`` that is incomplete."""
    mine = None
    for i, seq in enumerate(sequences):
        if i % shards == shard:
            mine = seq
        if i % shards == shards - 1 and mine is not None:
            yield mine
            mine = None


def check_min_sequences(stream: PackedMLMStream, batch_size: int) -> None:
    """Raise `CorpusError` unless ``stream`` yields at least ``batch_size`` sequences per pass.

    Reads only as far as needed (a whole pass only when the corpus is too small); the stream's
    progress is untouched.
    """
    stats = CorpusStats()
    sequences = _take_shard(stream._pass(0, stats), stream.rank, stream.world_size)
    found = sum(1 for _ in itertools.islice(sequences, batch_size))
    if found < batch_size:
        raise CorpusError(stream._too_small(found, batch_size, stats))


# --------------------------------------------------------------------------- masking
def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, vocab_size: int, mask_id: int,
                prob: float = 0.15, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose each non-special token with probability ``prob`` as an MLM target.

    Of the chosen, 80% become ``mask_id``, 10% a uniformly random id below ``vocab_size`` and 10%
    stay. Returns new ``(input_ids, labels)``, labels being the original ids at chosen positions and
    -100 elsewhere. ``special_mask`` (bool, same shape) marks positions never chosen. Tensors and
    ``generator`` live on the CPU; the same generator state gives the same result.
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"masking probability {prob} is outside (0, 1)")
    shape = input_ids.shape
    chosen = (torch.rand(shape, generator=generator) < prob) & ~special_mask
    action = torch.rand(shape, generator=generator)
    random_ids = torch.randint(vocab_size, shape, generator=generator, dtype=input_ids.dtype)
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    masked = torch.where(chosen & (action < 0.8), mask_id, input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


class MLMCollator:
    """Collate stream items into an MLM batch with fresh (dynamic) masking every time.

    Returns int64 ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (and
    ``next_sentence_label`` when the items carry it). Items of unequal length are right-padded.
    Special tokens and padding are never masked. The masking generator is seeded with ``seed``;
    `state_dict`/`load_state_dict` carry its state for an exact resume.
    """

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15, seed: int = 0):
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a MASK and a PAD token")
        self.pad_id, self.mask_id, self.vocab_size = tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.int64)
        self.mlm_probability = mlm_probability
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.int64)
        token_type_ids = torch.zeros((len(items), width), dtype=torch.int64)
        attention_mask = torch.zeros((len(items), width), dtype=torch.int64)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.as_tensor(item["input_ids"])
            token_type_ids[row, :n] = torch.as_tensor(item["token_type_ids"])
            attention_mask[row, :n] = 1
        special = torch.isin(input_ids, self.special_ids) | (attention_mask == 0)
        input_ids, labels = mask_tokens(input_ids, special, self.vocab_size, self.mask_id,
                                        self.mlm_probability, self.generator)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "labels": labels}
        if "next_sentence_label" in items[0]:
            batch["next_sentence_label"] = torch.as_tensor([int(item["next_sentence_label"]) for item in items],
                                                           dtype=torch.int64)
        return batch

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The masking generator's state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the masking generator's state."""
        self.generator.set_state(state["generator"])
