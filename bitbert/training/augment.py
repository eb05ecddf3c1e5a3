"""Data augmentation for distillation (BiT §5.1.1, following TinyBERT's recipe).

Each training example gets ``copies`` perturbed versions in which every single-piece word is, with
probability ``replace_prob``, swapped for one of its ``neighbours`` nearest words in the teacher's
word-embedding space. The teacher labels every version itself (the distillation loss needs only its
outputs), so a swap that flips the sentiment ("good" -> "bad") is a useful example, not label noise.

TinyBERT draws single-piece candidates from BERT's masked-LM head and GloVe for the rest; a
fine-tuned classifier has no MLM head and GloVe is not at hand offline, so the candidates here are
the teacher's own embedding neighbours, and multi-piece words are kept as they are. Copies have
their labels marked unknown (`UNKNOWN_CLASS` / NaN), which the ground-truth loss skips.

A pair task's copy perturbs one of its texts and keeps the other (`copy_draws`, TinyBERT's rule:
``copies`` draws for each text in turn). Perturbing both texts at once breaks the relation the
label describes: on MRPC, with both texts 40% rewritten, the teacher called most copies
non-paraphrases and the students learned to answer "no" (F1 below the all-"yes" 81.2).

This is the in-memory variant (``bitbert distill --augment N``). The full recipe, with masked-LM
candidates and neighbours for multi-piece words too, written once to a file, is `bitbert.training.augmented`
(``bitbert augment``); both mark copies with `mark_copies` / `unknown_label`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.config import AugmentConfig, ConfigError
from ..tasks.batching import TokenizedSplit

UNKNOWN_CLASS = -100  # F.cross_entropy's ignore_index
COPY_COLUMN = "aug_copy"  # augmented files (`bitbert.training.augmented`): 0 on an original row, k on its k-th copy
_CHUNK = 4096  # candidate rows per similarity matmul: bounds its memory
COPY_RULE = "one text per copy"  # `copy_draws`; recorded with augmented files so older ones are not mixed in


def copy_draws(n_texts: int, copies: int) -> list[int]:
    """Which text each of an example's draws perturbs (the others are kept): ``copies`` draws for
    text 0, then ``copies`` for text 1, ... (module doc)."""
    return [t for t in range(n_texts) for _ in range(copies)]


def unknown_label(dtype: np.dtype) -> float | int:
    """The label of an augmented copy, which the ground-truth loss skips: NaN for a regression
    task, `UNKNOWN_CLASS` for a classification one. The teacher's outputs label the copy."""
    return np.nan if np.issubdtype(dtype, np.floating) else UNKNOWN_CLASS


def mark_copies(labels: np.ndarray, is_copy: np.ndarray) -> np.ndarray:
    """``labels`` with the rows where ``is_copy`` holds set to `unknown_label`."""
    out = labels.copy()
    out[np.asarray(is_copy, bool)] = unknown_label(labels.dtype)
    return out


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (Q, k) of the ``k`` rows of ``keys`` (N, H) most cosine-similar to each of ``queries``
    (Q, H), nearest first; ``exclude`` (Q,) names a key index per query never returned (-1: none)."""
    q = torch.nn.functional.normalize(queries.detach().float(), dim=-1)
    keys = torch.nn.functional.normalize(keys.detach().float(), dim=-1)
    out = []
    for start in range(0, len(q), _CHUNK):
        sim = q[start:start + _CHUNK] @ keys.T
        if exclude is not None:
            ex = exclude[start:start + _CHUNK].to(sim.device)
            rows = torch.nonzero(ex >= 0).squeeze(-1)
            sim[rows, ex[rows]] = -float("inf")
        out.append(sim.topk(k, dim=-1).indices)
    return torch.cat(out) if out else torch.zeros((0, k), dtype=torch.long)


def _is_wordpiece(tokenizer: Any) -> bool:
    """A BERT-style tokenizer, whose '##' pieces continue the previous word (fast or slow)."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    return type(model).__name__ == "WordPiece" or hasattr(tokenizer, "wordpiece_tokenizer")


def _vocab_tokens(tokenizer: Any, size: int) -> list[str]:
    if not _is_wordpiece(tokenizer):
        raise ConfigError(f"augmentation needs a WordPiece tokenizer (BERT-style '##' continuation pieces) "
                          f"to tell whole words from word pieces; got {type(tokenizer).__name__}")
    return tokenizer.convert_ids_to_tokens(list(range(size)))


def neighbour_table(embeddings: torch.Tensor, tokenizer: Any, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """For each vocabulary id, its ``neighbours`` nearest whole words by cosine similarity of the
    word-embedding rows ``embeddings`` (V, H), or -1 for ids that are not replaceable words
    (special tokens, '##' pieces, punctuation, numbers). Returns (table (V, k) int32, is_piece (V,) bool)."""
    size = embeddings.shape[0]
    tokens = _vocab_tokens(tokenizer, size)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    # isalpha() also leaves out bracketed placeholders such as [unused0] and [MASK]
    words = np.array([i for i, t in enumerate(tokens) if t and t.isalpha() and i not in special], np.int64)
    if len(words) <= neighbours:
        raise ConfigError(f"augment neighbours={neighbours}: the vocabulary has only {len(words)} whole words")
    cand = embeddings[torch.from_numpy(words).to(embeddings.device)]
    table = np.full((size, neighbours), -1, np.int32)
    # a word is not its own replacement
    table[words] = words[nearest(cand, cand, neighbours, torch.arange(len(words))).cpu().numpy()]
    is_piece = np.array([bool(t) and t.startswith("##") for t in tokens])
    return table, is_piece


def segments(split: TokenizedSplit, sep_id: int | None) -> np.ndarray:
    """Which text each token of ``split`` (flattened) belongs to: 0 up to the first separator, 1
    after it ([CLS] a [SEP] b [SEP], <s> a </s></s> b </s>); all 0 without a separator token."""
    flat = np.concatenate(split.input_ids).astype(np.int64)
    if sep_id is None:
        return np.zeros(len(flat), np.int64)
    is_sep = (flat == sep_id).astype(np.int64)
    before = np.cumsum(is_sep) - is_sep  # separators before each token, over the whole split
    starts = np.r_[0, np.cumsum(split.lengths)[:-1]]
    return (before - np.repeat(before[starts], split.lengths) > 0).astype(np.int64)


def augment_split(split: TokenizedSplit, table: np.ndarray, is_piece: np.ndarray,
                  cfg: AugmentConfig, segment: np.ndarray | None = None) -> TokenizedSplit:
    """``split`` followed by up to ``cfg.copies`` perturbed versions of each example and of each of
    its texts (``segment``: the text of each flattened token, see `segments`; None: one text) (see
    module doc). Lengths never change: a single-piece word is replaced by a single-piece word."""
    if cfg.copies == 0 or len(split) == 0:
        return split
    flat = np.concatenate(split.input_ids).astype(np.int64)
    if flat.max() >= len(table):
        raise ConfigError(f"token id {int(flat.max())} is outside the teacher's vocabulary of {len(table)}")
    segment = np.zeros(len(flat), np.int64) if segment is None else segment
    if segment.shape != flat.shape:
        raise ConfigError(f"segment has {segment.size} entries for {flat.size} tokens")
    piece = is_piece[flat]
    # a single-piece word: replaceable and not followed by a '##' piece of the same word
    eligible = (table[flat, 0] >= 0) & ~np.r_[piece[1:], False]
    bounds = np.cumsum(split.lengths)[:-1]
    example_of = np.repeat(np.arange(len(split)), split.lengths)
    rng = np.random.default_rng((cfg.seed, len(split), cfg.copies))
    ids, types, labels = list(split.input_ids), list(split.token_type_ids), [split.labels]
    unknown = unknown_label(split.labels.dtype)
    for text in copy_draws(int(segment.max()) + 1, cfg.copies):
        swap = eligible & (segment == text) & (rng.random(len(flat)) < cfg.replace_prob)
        new = flat.copy()
        new[swap] = table[flat[swap], rng.integers(0, table.shape[1], int(swap.sum()))]
        changed = np.unique(example_of[swap])
        pieces = np.split(new.astype(split.input_ids[0].dtype), bounds)
        ids.extend(pieces[i] for i in changed)
        types.extend(split.token_type_ids[i] for i in changed)
        labels.append(np.full(len(changed), unknown, split.labels.dtype))
    return TokenizedSplit(ids, types, np.concatenate(labels),
                          f"{split.source}[augmented x{cfg.copies}, p={cfg.replace_prob}, k={cfg.neighbours}]")


def augment_for_teacher(split: TokenizedSplit, teacher: torch.nn.Module, tokenizer: Any,
                        cfg: AugmentConfig) -> TokenizedSplit:
    """`augment_split` with the neighbours of ``teacher``'s word embeddings."""
    if cfg.copies == 0:
        return split
    if tokenizer is None:
        raise ConfigError("data augmentation needs the teacher's tokenizer")
    table, is_piece = neighbour_table(teacher.get_input_embeddings().weight, tokenizer, cfg.neighbours)
    return augment_split(split, table, is_piece, cfg, segments(split, getattr(tokenizer, "sep_token_id", None)))
