"""`PackedEngine`: a built packed model behind a checked boundary (logits on ids, predict on text)
and :func:`load_packed`. Inputs are validated here, so the kernels only ever see ids below the
vocabulary, positions below the table's rows and token types below theirs."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from ..packing import PackedFormatError, PackedModel, read_packed
from .builder import build
from .errors import EngineError
from .threads import idle_threads

_ROWS_PER_THREAD = 256  # tokens per thread processed together (see PackedEngine._forward)


class PackedEngine:
    """A packed 1-bit-weight BERT/RoBERTa sequence classifier on the CPU, 1- to 8-bit activations
    (see `bitbert.deploy.engine`).

    Use :func:`load_packed`. ``logits`` takes token ids; ``predict`` takes text (needs the
    tokenizer embedded at export). ``threads`` applies to every call; None (the default) picks, at
    each call, as many threads as there are idle cores (see `bitbert.deploy.engine.threads`), so a busy
    machine never makes the engine slower than at 1 thread.
    """

    def __init__(self, packed: PackedModel, threads: int | None = None) -> None:
        self.path, self.config, self.architecture = packed.path, packed.config, packed.architecture
        self.spec, self.quant = packed.spec, packed.quant
        self.threads = _check_threads(threads)
        self.model = build(packed)
        self._tokenizer_json = packed.tokenizer_json
        self._tokenizer = None
        self._warned_truncation = False

    # -- the model's dimensions (ModelSpec)

    vocab_size = property(lambda self: self.spec.vocab)
    type_vocab_size = property(lambda self: self.spec.type_vocab)
    hidden = property(lambda self: self.spec.hidden)
    heads = property(lambda self: self.spec.heads)
    pad_id = property(lambda self: self.spec.pad_id)
    max_length = property(lambda self: self.spec.max_length)
    num_labels = property(lambda self: self.spec.num_labels)
    regression = property(lambda self: self.spec.regression)

    @property
    def labels(self) -> dict[int, str]:
        """Class names by output index, as stored in the file."""
        return dict(enumerate(self.spec.labels))

    # -- inference on ids

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
               token_type_ids: np.ndarray | None = None) -> np.ndarray:
        """(B, num_labels) float32 logits for (B, L) token ids (numpy ints); masks default to ones/zeros."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be a non-empty (batch, length) integer array, got {ids.shape} "
                             f"{ids.dtype}")
        mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        types_ = np.zeros(ids.shape, np.int64) if token_type_ids is None else np.asarray(token_type_ids, np.int64)
        if mask.shape != ids.shape or types_.shape != ids.shape:
            raise ValueError(f"attention_mask / token_type_ids must have the shape of input_ids {ids.shape}")
        if ids.shape[1] > self.max_length:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds the model's maximum {self.max_length}; "
                             "truncate the input (predict() does)")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]")
        if types_.min() < 0 or types_.max() >= self.type_vocab_size:
            raise ValueError(f"token_type_ids must be in [0, {self.type_vocab_size})")
        threads = self.threads or idle_threads(numba.config.NUMBA_NUM_THREADS)
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return self._forward(ids.astype(np.int64), np.ascontiguousarray(mask), types_, threads)
        finally:
            numba.set_num_threads(previous)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, types_: np.ndarray, threads: int) -> np.ndarray:
        # Large batches run a few sequences at a time: each chunk's activations stay in the L2
        # caches, and the 1-bit weights (~10 MB for BERT-base) in L3. Measured on BERT-base, seq 128:
        # 16 ms/sequence in chunks of 256 rows per thread against 26 ms/sequence at batch 32 whole.
        per_chunk = max(1, _ROWS_PER_THREAD * threads // ids.shape[1])
        return np.concatenate([self.model(*_trailing_padding_dropped(ids[i : i + per_chunk], mask[i : i + per_chunk],
                                                                     types_[i : i + per_chunk]), threads)
                               for i in range(0, ids.shape[0], per_chunk)])

    # -- inference on text

    @property
    def tokenizer(self):
        """The embedded ``tokenizers.Tokenizer`` (no padding; truncation at the model's maximum)."""
        if self._tokenizer is None:
            if self._tokenizer_json is None:
                raise EngineError(f"{self.path} has no tokenizer: export with tokenizer=... or call logits() with ids")
            from tokenizers import Tokenizer

            try:
                tok = Tokenizer.from_str(self._tokenizer_json)
            except Exception as e:  # the tokenizers library raises plain Exceptions for bad JSON
                raise PackedFormatError(f"{self.path}: metadata 'tokenizer' is not a usable tokenizer.json "
                                        f"({str(e)[:200]})") from None
            if tok.get_vocab_size() > self.vocab_size:
                raise PackedFormatError(f"{self.path}: metadata 'tokenizer' has {tok.get_vocab_size()} tokens, more "
                                        f"than the model's vocabulary of {self.vocab_size}")
            tok.no_padding()
            tok.enable_truncation(max_length=self.max_length)
            self._tokenizer = tok
        return self._tokenizer

    def encode(self, texts: Sequence[str] | Sequence[tuple[str, str]]) -> list:
        """Tokenize single texts or (text, text_pair) pairs; warns once if any is truncated."""
        if isinstance(texts, (str, tuple)) or not all(isinstance(t, str) or _is_pair(t) for t in texts):
            raise TypeError("texts must be a list of strings or of (text, text_pair) tuples")
        batch = [tuple(t) if not isinstance(t, str) else t for t in texts]
        encodings = self.tokenizer.encode_batch(batch)
        if not self._warned_truncation and any(e.overflowing for e in encodings):
            self._warned_truncation = True
            warnings.warn(f"some texts are longer than the model's maximum of {self.max_length} tokens and were "
                          "truncated", stacklevel=3)
        return encodings

    def predict(self, texts: Sequence[str] | Sequence[tuple[str, str]], batch_size: int = 32) -> list[dict[str, Any]]:
        """[{"label": name, "scores": softmax probabilities}] per text (regression: label None, scores [value])."""
        encodings = self.encode(texts)
        out: list[dict[str, Any]] = [{}] * len(encodings)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))  # little padding per batch
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            L = max(len(encodings[i].ids) for i in chunk)
            ids = np.full((len(chunk), L), self.pad_id, np.int64)
            mask = np.zeros((len(chunk), L), np.int64)
            types_ = np.zeros((len(chunk), L), np.int64)
            for r, i in enumerate(chunk):
                e = encodings[i]
                n = len(e.ids)
                ids[r, :n], mask[r, :n], types_[r, :n] = e.ids, e.attention_mask, e.type_ids
            if types_.max() >= self.type_vocab_size:
                raise PackedFormatError(f"{self.path}: metadata 'tokenizer' gives token type {types_.max()}; the "
                                        f"model has {self.type_vocab_size} token type(s)")
            for i, row in zip(chunk, self.logits(ids, mask, types_)):
                out[i] = self._label(row)
        return out

    def _label(self, logits: np.ndarray) -> dict[str, Any]:
        if self.regression:
            return {"label": None, "scores": [float(logits[0])]}
        z = logits.astype(np.float64) - logits.max()
        p = np.exp(z) / np.exp(z).sum()
        return {"label": self.spec.labels[int(np.argmax(logits))], "scores": [float(v) for v in p]}


def _trailing_padding_dropped(ids: np.ndarray, mask: np.ndarray, types_: np.ndarray) -> tuple[np.ndarray, ...]:
    """The columns up to the last one any sequence attends to: padded batches cost what their
    longest sequence costs. Exact: a masked key adds an exp of 0 to its row's sum (in every order),
    and no kept token reads a padded one; the head reads token 0."""
    kept = np.flatnonzero(mask.any(axis=0))
    length = int(kept[-1]) + 1 if kept.size else 1
    return ids[:, :length], np.ascontiguousarray(mask[:, :length]), types_[:, :length]


def _is_pair(t: Any) -> bool:
    return isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t)


def _check_threads(threads: int | None) -> int | None:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return None  # idle cores at each call
    if not 1 <= int(threads) <= limit:
        raise ValueError(f"threads must be in [1, {limit}], got {threads}")
    return int(threads)


def load_packed(path: str | Path, threads: int | None = None, sha256: str | None = None) -> PackedEngine:
    """Load a packed model written by :func:`bitbert.export`, validated before any kernel runs.

    Raises FileNotFoundError for a missing file, :class:`bitbert.deploy.packing.PackedFormatError` for a
    corrupted, truncated or inconsistent file, an unknown format version, or (with ``sha256``, the
    hex digest ``bitbert export`` prints) a file that is not the one expected; and
    :class:`EngineError` for a model the packed engine does not run (full-precision activations or
    weights, ...).
    """
    return PackedEngine(read_packed(path, sha256=sha256), threads)
