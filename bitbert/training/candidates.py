"""Replacement candidates for each word of a text: TinyBERT's augmentation recipe in any Hugging Face
tokenizer's vocabulary (WordPiece, byte-level BPE, SentencePiece).

A *word* is a run of letters that is not a stop word (TinyBERT skips NLTK's English stop words).
A word the tokenizer keeps as one piece gets, with ``mode="mlm"``, the masked LM's ``top_m`` most
likely whole words with that word masked in its text; every other word (several pieces, or beyond
``max_length``), and every word with ``mode="embedding"``, gets the ``top_m`` whole words whose
input embeddings lie nearest to the mean of its pieces' (the fallback; TinyBERT uses GloVe, which is
not at hand offline). All masked copies of a batch of texts go through the model together.

    gen = CandidateGenerator.from_pretrained("runs/mlm-minilm/model")      # a BertForMaskedLM, RobertaForMaskedLM, ...
    [[Word(start=4, end=9, candidates=("movie", ...), source="mlm"), ...]] = gen.words(["the film was good"])
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..core.config import ConfigError
from .augment import _is_wordpiece, nearest

__all__ = ["CandidateGenerator", "Word", "MODES", "STOP_WORDS", "find_words"]

MODES = ("mlm", "embedding")
_WORD = re.compile(r"[^\W\d_]+")  # letters only: numbers, punctuation and '_' are never replaced
# NLTK's English stop words, as in TinyBERT's data_augmentation.py
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
that that'll these those am is are was were be been being have has had having do does did doing a an the and but
if or because as until while of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how all any
both each few more most other some such no nor not only own same so than too very s t can will just don don't
should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn
wasn't weren weren't won won't wouldn wouldn't""".split())


@dataclass(frozen=True)
class Word:
    """A replaceable word of a text: its characters ``text[start:end]``, its candidates (best first)
    and where they came from (``mlm`` or ``neighbours``)."""

    start: int
    end: int
    candidates: tuple[str, ...]
    source: str


def find_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the replaceable words of ``text``: letter runs of two or more letters
    that are not stop words."""
    return [m.span() for m in _WORD.finditer(text) if len(m.group()) > 1 and m.group().lower() not in STOP_WORDS]


def _match_case(candidate: str, word: str) -> str:
    if word.isupper():
        return candidate.upper()
    if word[0].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate


class _Vocabulary:
    """Which token ids are whole words, and their text: a WordPiece token of two or more letters (not
    '##' pieces, not '[unused0]'), or a BPE / SentencePiece token that starts a word (decodes to a
    space followed by two or more letters). Single letters and stop words are never candidates, as they
    are never replaced (`find_words`)."""

    def __init__(self, tokenizer: Any, size: int) -> None:
        tokens = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        wordpiece = _is_wordpiece(tokenizer)
        self.text: dict[int, str] = {}
        for i, tok in enumerate(tokens):
            if tok is None or i in special:
                continue
            if wordpiece:
                if len(tok) > 1 and tok.isalpha() and tok.lower() not in STOP_WORDS:
                    self.text[i] = tok
            else:
                s = tokenizer.convert_tokens_to_string([tok])
                if len(s) > 2 and s[0].isspace() and s[1:].isalpha() and s[1:].lower() not in STOP_WORDS:
                    self.text[i] = s[1:]
        if not self.text:
            raise ConfigError(f"{type(tokenizer).__name__}: no whole-word tokens in the vocabulary")
        self.ids = torch.tensor(sorted(self.text), dtype=torch.long)
        self.is_word = torch.zeros(size, dtype=torch.bool)
        self.is_word[self.ids] = True
        self.index = {t.lower(): j for j, t in reversed(list(enumerate(self.text[i] for i in self.ids.tolist())))}


class CandidateGenerator:
    """``words(texts)``: each text's replaceable words with their candidates (see module doc).

    ``model`` is a masked LM (any ``AutoModelForMaskedLM``) for ``mode="mlm"``, or any model with
    input embeddings for ``mode="embedding"``; ``tokenizer`` must be a fast tokenizer (character
    offsets). Batches of ``batch_size`` masked copies go through the model at once, on ``device``.
    Neighbour candidates are cached per word.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, mode: str = "mlm", top_m: int = 15,
                 max_length: int = 128, batch_size: int = 256, device: str | torch.device | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"candidate mode must be one of {list(MODES)}, got {mode!r}")
        if not isinstance(top_m, int) or top_m < 1 or batch_size < 1 or max_length < 3:
            raise ConfigError("top_m and batch_size must be >= 1 and max_length >= 3")
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(f"{type(tokenizer).__name__} is not a fast tokenizer: word offsets need one "
                              "(a tokenizer.json)")
        if mode == "mlm" and tokenizer.mask_token_id is None:
            raise ConfigError("the masked LM's tokenizer has no mask token")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer, self.mode, self.top_m = tokenizer, mode, top_m
        self.max_length, self.batch_size = max_length, batch_size
        embeddings = model.get_input_embeddings().weight.detach()
        self.vocab = _Vocabulary(tokenizer, embeddings.shape[0])
        if len(self.vocab.ids) <= top_m:
            raise ConfigError(f"top_m={top_m}: the vocabulary has only {len(self.vocab.ids)} whole words")
        self._embeddings = embeddings.float()
        self._keys = self._embeddings[self.vocab.ids.to(embeddings.device)]
        self._cache: dict[str, tuple[str, ...]] = {}
        self._head = self._find_head() if mode == "mlm" else None

    # ---- loading
    @classmethod
    def from_pretrained(cls, path: str | Path, mode: str = "mlm", **kwargs: Any) -> "CandidateGenerator":
        """Load a model directory (or Hub id): a masked LM with its head for ``mode="mlm"`` (an
        error names what is missing otherwise), any model for ``mode="embedding"``."""
        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        from ..core.hub import TOKENIZER_FILES, from_hub_or_dir

        if mode not in MODES:
            raise ConfigError(f"candidate mode must be one of {list(MODES)}, got {mode!r}")
        cfg_path = Path(path, "config.json")
        if cfg_path.is_file() and "bitbert" in json.loads(cfg_path.read_text()):
            raise ConfigError(f"{path} is a bitbert (quantized) model; candidates need a full-precision model")
        tokenizer = from_hub_or_dir(AutoTokenizer.from_pretrained, path, "tokenizer of", TOKENIZER_FILES)
        if mode == "embedding":
            model = from_hub_or_dir(lambda p: AutoModel.from_pretrained(p, dtype=torch.float32), path, "model")
            return cls(model, tokenizer, mode, **kwargs)
        try:
            model, info = from_hub_or_dir(lambda p: AutoModelForMaskedLM.from_pretrained(
                p, dtype=torch.float32, output_loading_info=True), path, "masked LM")
        except ValueError as e:  # an architecture without a masked-LM class
            raise ConfigError(f"{path} is not a masked language model ({str(e).splitlines()[0]}); train a head "
                              "with `bitbert mlm-head`, or use embedding candidates") from None
        prefix = f"{model.base_model_prefix}."
        head_missing = [k for k in info["missing_keys"] if not k.startswith(prefix)]
        if head_missing:
            raise ConfigError(f"{path} has no masked-LM head (missing {head_missing[:3]}): train one with "
                              "`bitbert mlm-head`, or use embedding candidates")
        return cls(model, tokenizer, mode, **kwargs)

    def describe(self) -> dict[str, Any]:
        """The settings that decide the candidates (recorded beside an augmented file)."""
        return {"mode": self.mode, "top_m": self.top_m, "max_length": self.max_length,
                "model": str(getattr(self.model.config, "_name_or_path", "")),
                "architecture": type(self.model).__name__, "vocab_size": int(self._embeddings.shape[0])}

    def _find_head(self) -> torch.nn.Module | None:
        """The module mapping last hidden states to vocabulary logits, when the model has exactly one
        besides its encoder (BERT's ``cls``, RoBERTa's ``lm_head``); None: use the full forward."""
        prefix = self.model.base_model_prefix
        others = [m for name, m in self.model.named_children() if name != prefix]
        return others[0] if len(others) == 1 else None

    # ---- candidates
    def neighbours(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """The ``top_m`` whole words nearest (input-embedding cosine) to each word's mean piece
        embedding, best first, never the word itself (in any case)."""
        todo = sorted({w for w in words if w not in self._cache})
        if todo:
            queries, exclude = [], []
            for w in todo:
                pieces = self.tokenizer(" " + w, add_special_tokens=False)["input_ids"] or [self.tokenizer.unk_token_id]
                queries.append(self._embeddings[torch.tensor(pieces, device=self._embeddings.device)].mean(0))
                exclude.append(self.vocab.index.get(w.lower(), -1))
            # one spare: a cased vocabulary may hold the word in another case too
            top = nearest(torch.stack(queries), self._keys, self.top_m + 1, torch.tensor(exclude)).cpu()
            for w, row in zip(todo, top.tolist()):
                texts = [self.vocab.text[int(self.vocab.ids[j])] for j in row]
                self._cache[w] = tuple(_match_case(t, w) for t in texts if t.lower() != w.lower())[:self.top_m]
        return [self._cache[w] for w in words]

    def words(self, texts: Sequence[str], keep_original: bool = False) -> list[list[Word]]:
        """For each text, its replaceable words (`find_words`) with their candidates. With
        ``keep_original`` the masked LM's list may hold the word itself (to measure recall);
        neighbour lists never do."""
        if not texts:
            return []
        enc = self.tokenizer(list(texts), return_offsets_mapping=True, truncation=True, max_length=self.max_length)
        per_text: list[list[tuple[int, int, int | None]]] = []  # (start, end, token position or None)
        for text, offsets in zip(texts, enc["offset_mapping"]):
            per_text.append(self._locate(find_words(text), offsets))
        masked = [(t, i, pos) for t, spans in enumerate(per_text) for i, (_, _, pos) in enumerate(spans)
                  if pos is not None and self.mode == "mlm"]
        mlm = self._mlm_candidates([enc["input_ids"][t] for t, _, _ in masked], [pos for _, _, pos in masked],
                                   [texts[t][per_text[t][i][0]:per_text[t][i][1]] for t, i, _ in masked],
                                   keep_original)
        from_mlm = {(t, i): c for (t, i, _), c in zip(masked, mlm)}
        rest = [texts[t][s:e] for t, spans in enumerate(per_text) for i, (s, e, _) in enumerate(spans)
                if (t, i) not in from_mlm]
        near = iter(self.neighbours(rest))
        out = []
        for t, spans in enumerate(per_text):
            row = []
            for i, (s, e, _) in enumerate(spans):
                cands, source = (from_mlm[t, i], "mlm") if (t, i) in from_mlm else (next(near), "neighbours")
                if cands:
                    row.append(Word(s, e, cands, source))
            out.append(row)
        return out

    @staticmethod
    def _locate(spans: list[tuple[int, int]], offsets: list[tuple[int, int]]) -> list[tuple[int, int, int | None]]:
        """Each word span with the position of the one token that is exactly the word, or None (several
        pieces, or cut off by truncation). Words a token straddles (part word, part something else)
        are dropped: replacing them would cut a token in two."""
        tokens = [(j, s, e) for j, (s, e) in enumerate(offsets) if e > s]
        out, k = [], 0
        for ws, we in spans:
            while k < len(tokens) and tokens[k][2] <= ws:
                k += 1
            inside = []
            j = k
            while j < len(tokens) and tokens[j][1] < we:
                inside.append(tokens[j])
                j += 1
            if any(s < ws or e > we for _, s, e in inside):
                continue
            single = len(inside) == 1 and inside[0][1:] == (ws, we)
            out.append((ws, we, inside[0][0] if single else None))
        return out

    @torch.inference_mode()
    def _mlm_candidates(self, rows: list[list[int]], positions: list[int], originals: list[str],
                        keep_original: bool) -> list[tuple[str, ...]]:
        """Top-``top_m`` whole words of the masked LM at ``positions[i]`` of ``rows[i]`` masked, in
        batches of ``batch_size`` sequences (one masked word each)."""
        out: list[tuple[str, ...]] = []
        is_word = self.vocab.is_word.to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            pos = torch.tensor(positions[start:start + self.batch_size], device=self.device)
            width = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, r in enumerate(chunk):
                ids[i, :len(r)] = torch.tensor(r)
                mask[i, :len(r)] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            rows_i = torch.arange(len(chunk), device=self.device)
            original = ids[rows_i, pos].clone()
            ids[rows_i, pos] = self.tokenizer.mask_token_id
            logits = self._masked_logits(ids, mask, pos, rows_i).float()
            logits[:, ~is_word[:logits.shape[1]]] = -float("inf")
            if not keep_original:
                logits[rows_i, original] = -float("inf")
            top = logits.topk(self.top_m, dim=-1).indices.cpu().tolist()
            for row, word in zip(top, originals[start:start + self.batch_size]):
                texts = [self.vocab.text[j] for j in row]
                if not keep_original:
                    texts = [t for t in texts if t.lower() != word.lower()]
                out.append(tuple(_match_case(t, word) for t in texts))
        return out

    def _masked_logits(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                       rows: torch.Tensor) -> torch.Tensor:
        if self._head is not None:  # the vocabulary projection only where it is needed
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            return self._head(hidden[rows, pos])
        return self.model(input_ids=ids, attention_mask=mask).logits[rows, pos]
