"""Tokenize a split once (cached on disk) and serve it as length-bucketed, resumable padded batches."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .specs import Examples

__all__ = ["TokenizedSplit", "tokenize", "default_cache_dir", "BucketBatcher"]

log = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when the cached layout or the tokenization call changes
_CHUNK = 8192  # examples per tokenizer call: bounds the memory of the Python lists it returns


@dataclass
class TokenizedSplit:
    """Unpadded token ids per example (int32 arrays, [CLS] a [SEP] (b [SEP])) and the labels."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray
    source: str = ""
    lengths: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lengths = np.fromiter((len(x) for x in self.input_ids), np.int64, len(self.input_ids))
        if len(self.token_type_ids) != len(self.input_ids) or len(self.labels) != len(self.input_ids):
            raise ValueError(f"{self.source}: input_ids, token_type_ids and labels differ in length")

    def __len__(self) -> int:
        return len(self.input_ids)


# --------------------------------------------------------------------------- tokenization + cache
def default_cache_dir() -> Path:
    """``$BITBERT_CACHE/tokenized``, else ``~/.cache/bitbert/tokenized``."""
    root = os.environ.get("BITBERT_CACHE") or Path.home() / ".cache" / "bitbert"
    return Path(root).expanduser() / "tokenized"


def tokenize(tokenizer: Any, examples: Examples, max_length: int,
             cache_dir: str | Path | None = "auto") -> TokenizedSplit:
    """Tokenize every example (pairs as [CLS] a [SEP] b [SEP]), truncated to ``max_length``.

    The result is cached as an .npz in ``cache_dir`` ("auto": `default_cache_dir()`, None: no cache)
    under a key of the tokenizer's vocabulary and rules, ``max_length``, the source file's path,
    size and mtime, and the texts themselves, so a second call with the same inputs does not
    tokenize again. Labels always come from ``examples``.
    """
    if cache_dir == "auto":
        cache_dir = default_cache_dir()
    path = None if cache_dir is None else Path(cache_dir) / _cache_name(tokenizer, examples, max_length)
    if path is not None and (cached := _load_cached(path)) is not None:
        input_ids, token_type_ids = cached
    else:
        input_ids, token_type_ids = _encode(tokenizer, examples, max_length)
        if path is not None:
            _save_cached(path, input_ids, token_type_ids)
    return TokenizedSplit(input_ids, token_type_ids, examples.labels, examples.source)


def _encode(tokenizer: Any, examples: Examples, max_length: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    input_ids: list[np.ndarray] = []
    token_type_ids: list[np.ndarray] = []
    for start in range(0, len(examples), _CHUNK):
        stop = start + _CHUNK
        texts_b = None if examples.texts_b is None else examples.texts_b[start:stop]
        # Padding/truncation are passed explicitly: a tokenizer.json may carry fixed ones baked in.
        enc = tokenizer(examples.texts_a[start:stop], texts_b, truncation=True, max_length=max_length,
                        padding=False, return_token_type_ids=True, return_attention_mask=False)
        ids = enc["input_ids"]
        types = enc.get("token_type_ids") or [[0] * len(x) for x in ids]  # e.g. RoBERTa has none
        input_ids.extend(np.asarray(x, np.int32) for x in ids)
        token_type_ids.extend(np.asarray(x, np.int32) for x in types)
    return input_ids, token_type_ids


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        config = json.loads(backend.to_str())
        # Truncation/padding are per-call state that tokenizer(...) itself rewrites: not identity.
        config.pop("truncation", None)
        config.pop("padding", None)
    else:  # a pure-Python tokenizer: its vocabulary and constructor options
        config = {"vocab": sorted(tokenizer.get_vocab().items()),
                  "init": sorted((k, str(v)) for k, v in getattr(tokenizer, "init_kwargs", {}).items())}
    return hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=16).hexdigest()


def _cache_name(tokenizer: Any, examples: Examples, max_length: int) -> str:
    key = hashlib.blake2b(digest_size=16)
    source = Path(examples.source)
    stat = source.stat() if source.is_file() else None
    key.update(json.dumps({
        "version": _CACHE_VERSION, "tokenizer": _tokenizer_fingerprint(tokenizer),
        "max_length": max_length, "source": str(source.resolve()) if stat else examples.source,
        "size": stat.st_size if stat else None, "mtime_ns": stat.st_mtime_ns if stat else None,
        "n": len(examples), "pair": examples.texts_b is not None,
    }, sort_keys=True).encode())
    # The texts too: one file can be read with different columns, and Hub splits have no file stat.
    for texts in (examples.texts_a, examples.texts_b or []):
        key.update("\0".join(texts).encode("utf-8", "surrogatepass"))
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name or "split")[:60]
    return f"{stem}-{max_length}-{key.hexdigest()}.npz"


def _flatten(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(arrays) + 1, np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
    return flat.astype(np.int32, copy=False), offsets


def _save_cached(path: Path, input_ids: list[np.ndarray], token_type_ids: list[np.ndarray]) -> None:
    ids_flat, offsets = _flatten(input_ids)
    types_flat, _ = _flatten(token_type_ids)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a concurrent reader or a crash never sees a half-written cache file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, input_ids=ids_flat, token_type_ids=types_flat, offsets=offsets)
        os.replace(tmp, path)
    except OSError as e:  # an unwritable cache costs time, not correctness
        log.warning("could not write tokenization cache %s: %s", path, e)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _load_cached(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            ids_flat, types_flat, offsets = npz["input_ids"], npz["token_type_ids"], npz["offsets"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable tokenization cache %s: %s", path, e)
        return None
    cuts = offsets[1:-1]
    return np.split(ids_flat, cuts), np.split(types_flat, cuts)


# --------------------------------------------------------------------------- batching
class BucketBatcher:
    """Padded batches of similar-length examples, deterministic per (seed, epoch) and resumable.

    With ``shuffle``, each epoch permutes the examples, sorts chunks of
    ``batch_size * bucket_size_multiplier`` by length, cuts them into batches and shuffles the batch
    order. Without it, batches are consecutive in dataset order (so predictions line up with the
    examples). Iterating yields the current epoch's remaining batches, then moves to the next
    epoch; `set_epoch` to another epoch restarts progress, to the current one keeps it (so a
    ``for epoch ...: set_epoch(epoch)`` loop resumes correctly after `load_state_dict`).
    """

    def __init__(self, split: TokenizedSplit, batch_size: int, shuffle: bool, seed: int, pad_id: int,
                 drop_last: bool = False, bucket_size_multiplier: int = 50,
                 pad_to_multiple_of: int | None = None):
        if batch_size < 1 or bucket_size_multiplier < 1 or (pad_to_multiple_of or 1) < 1:
            raise ValueError("batch_size, bucket_size_multiplier and pad_to_multiple_of must be >= 1")
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.seed, self.pad_id, self.drop_last = seed, pad_id, drop_last
        self.bucket_size_multiplier, self.pad_to_multiple_of = bucket_size_multiplier, pad_to_multiple_of
        self.epoch, self.batches_done = 0, 0

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce; progress resets only if the epoch changes."""
        if epoch != self.epoch:
            self.epoch, self.batches_done = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state["batches_done"])
        if not 0 <= done <= len(self):
            raise ValueError(f"batches_done={done} is outside this batcher's 0..{len(self)} batches")
        self.epoch, self.batches_done = int(state["epoch"]), done

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        """Example indices of every batch of ``epoch`` (default: the current one), in order."""
        n, size = len(self.split), self.batch_size
        if not self.shuffle:
            batches = [np.arange(start, min(start + size, n)) for start in range(0, n, size)]
        else:
            rng = np.random.default_rng((self.seed, self.epoch if epoch is None else epoch))
            order, chunk = rng.permutation(n), size * self.bucket_size_multiplier
            batches = []
            for start in range(0, n, chunk):
                idx = order[start:start + chunk]
                idx = idx[np.argsort(self.split.lengths[idx], kind="stable")]
                batches.extend(idx[i:i + size] for i in range(0, len(idx), size))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.drop_last:  # chunks hold whole batches, so at most one batch is short
            batches = [b for b in batches if len(b) == size]
        return batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = self.batch_indices()
        for i in range(self.batches_done, len(batches)):
            # Counted before the yield: a checkpoint taken while the caller holds this batch
            # must not replay it.
            self.batches_done = i + 1
            yield self.collate(batches[i])
        self.epoch, self.batches_done = self.epoch + 1, 0

    def collate(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Pad the given examples to their longest (rounded up to ``pad_to_multiple_of``)."""
        lengths = self.split.lengths[indices]
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = np.full((len(indices), width), self.pad_id, np.int64)
        token_type_ids = np.zeros((len(indices), width), np.int64)
        for row, (i, n) in enumerate(zip(indices, lengths)):
            input_ids[row, :n] = self.split.input_ids[i]
            token_type_ids[row, :n] = self.split.token_type_ids[i]
        labels = self.split.labels[indices]
        labels = labels.astype(np.float32 if np.issubdtype(labels.dtype, np.floating) else np.int64)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy((np.arange(width) < lengths[:, None]).astype(np.int64)),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "labels": torch.from_numpy(labels),
        }
