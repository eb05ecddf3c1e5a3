"""A masked-LM head for a BERT encoder that has none (MiniLM-L6 ships as a bare encoder), trained on
a plain-text corpus, so that data augmentation can draw TinyBERT's masked-LM candidates in the
teacher's own vocabulary (`bitbert.training.candidates`).

The model is ``BertForMaskedLM`` started from the encoder: a fresh transform (dense + LayerNorm) and
bias, the decoder tied to the word embeddings. Only the head learns unless ``train_encoder``; a
frozen encoder also freezes the tied decoder, so the head learns to map the last hidden states
back into the embedding space. Data, masking, loop and held-out loss are the pretraining code's
(`bitbert.tasks.corpus`, `bitbert.training.pretraining`): resumable, atomic checkpoints, ``max_seconds``.

The measurement (`candidate_recall`, any masked LM): on held-out corpus text, each replaceable
single-piece word is masked in turn; recall@k is the share whose word is among the masked LM's k
best whole-word candidates. Beside it, for the same words, the share of the embedding-neighbour
fallback's candidates that the masked LM also ranks in its top ``top_m`` at that position (a
neighbour list never holds the word itself, so its own recall is not defined).

Outputs in ``out_dir``: ``model/`` (an ordinary HF ``BertForMaskedLM`` + tokenizer),
``recall.json``, ``report.json``, ``metrics.jsonl``, ``checkpoint.pt``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..core.atomic import atomic_write
from ..core.config import ConfigError, require
from ..core.hub import TOKENIZER_FILES, from_hub_or_dir
from ..tasks.corpus import MLMCollator, PackedMLMStream, check_min_sequences
from .candidates import CandidateGenerator
from .pretrain_config import option
from .pretrain_data import StreamBatches, fixed_batches
from .pretrain_metrics import heldout_evaluator
from .pretrain_objective import PretrainingObjective, mlm_loss
from .pretraining import _TimeLimit
from .train import TrainConfig, make_accelerator, train

__all__ = ["MLMHeadConfig", "train_mlm_head", "candidate_recall", "heldout_texts"]

log = logging.getLogger("bitbert")


@dataclass(frozen=True)
class MLMHeadConfig:
    """One head-training run (the CLI exposes each field as ``--field-name``)."""

    train_encoder: bool = option(False, "train the encoder (and the tied embeddings) too, not only the head")
    seq_len: int = option(128, "tokens per packed sequence")
    batch_size: int = option(32, "sequences per step")
    max_steps: int = option(1000, "training steps (the budget; fixes the learning-rate schedule)")
    max_seconds: float = option(0.0, "stop after this many seconds of training (0 = no limit); the model is saved")
    lr: float = option(1e-3, "peak learning rate (a fresh head learns fast; use ~1e-4 with --train-encoder)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of the steps with linear warm-up")
    mlm_probability: float = option(0.15, "share of tokens chosen as MLM targets (80/10/10 BERT masking)")
    holdout_every: int = option(100, "every k-th block of the corpus is held out (loss and recall; >= 2)")
    heldout_sequences: int = option(256, "held-out sequences for the held-out MLM loss/accuracy")
    recall_texts: int = option(300, "held-out 32-token texts on which candidate recall is measured")
    top_m: int = option(15, "candidates per word (TinyBERT's M)")
    eval_every: int = option(200, "steps between held-out evaluations and checkpoints")
    eval_batch_size: int = option(64, "sequences per held-out batch")
    log_every: int = option(50, "steps between training-loss log lines")
    num_workers: int = option(0, "0: tokenize in the training process; 1: in a DataLoader worker (GPU)")
    seed: int = option(42, "seed of initialisation, data order and masking")
    mixed_precision: str = option("auto", "auto (bf16 on GPU), no, bf16 or fp16")

    def __post_init__(self) -> None:
        checks = [(self.seq_len >= 8, "seq_len must be >= 8"),
                  (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1"),
                  (self.max_steps >= 1, "max_steps must be >= 1"),
                  (self.num_workers in (0, 1), "num_workers must be 0 or 1 (exact resume needs at most one worker)"), (self.max_seconds >= 0, "max_seconds must be >= 0"),
                  (0.0 < self.mlm_probability < 1.0, "mlm_probability must be in (0, 1)"),
                  (self.holdout_every >= 2, "holdout_every must be >= 2: recall is measured on held-out text"),
                  (min(self.heldout_sequences, self.recall_texts, self.top_m, self.eval_every, self.log_every) >= 1,
                   "heldout_sequences, recall_texts, top_m, eval_every and log_every must be >= 1")]
        require(checks)

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=1.0, lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size,
                           eval_batch_size=self.eval_batch_size, max_length=self.seq_len,
                           warmup_ratio=self.warmup_ratio, eval_every=self.eval_every, log_every=self.log_every,
                           seed=self.seed, mixed_precision=self.mixed_precision, cuda_graphs="off")


class MLMLoss:
    """Cross-entropy at the masked positions (the head is trained alone: no teacher)."""

    compilable = True
    graphable = False  # masked positions are selected by boolean indexing

    def __call__(self, objective: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        _, logits, _ = objective(**batch)
        return mlm_loss(logits, batch["labels"])


def _load_encoder_with_head(model_dir: str | Path, train_encoder: bool):
    from transformers import AutoConfig, BertForMaskedLM

    hf_config = from_hub_or_dir(AutoConfig.from_pretrained, model_dir, "model")
    if getattr(hf_config, "bitbert", None):
        raise ConfigError(f"{model_dir} is a bitbert (quantized) model; the head is trained on a full-precision one")
    if hf_config.model_type != "bert":
        raise ConfigError(f"mlm-head trains heads for BERT encoders; {model_dir} is {hf_config.model_type!r} "
                          "(RoBERTa and other masked LMs ship with their head: use them directly)")
    model, info = from_hub_or_dir(lambda p: BertForMaskedLM.from_pretrained(
        p, dtype=torch.float32, output_loading_info=True), model_dir, "model")
    missing = [k for k in info["missing_keys"] if k.startswith("bert.")]
    if missing:
        raise ConfigError(f"{model_dir}: the checkpoint lacks encoder weights {missing[:5]}")
    if not train_encoder:
        model.bert.requires_grad_(False)
    return model


def train_mlm_head(model_dir: str | Path, corpus: Sequence[str | Path] | str | Path, out_dir: str | Path,
                   config: MLMHeadConfig = MLMHeadConfig(), resume: bool = False) -> dict[str, Any]:
    """Train a masked-LM head on ``model_dir``'s BERT encoder with ``corpus`` (plain/.xz/.gz/.bz2
    text), save ``out_dir/model`` and measure `candidate_recall` on held-out text. Returns the
    report also written to ``out_dir/report.json``."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    paths = [Path(p) for p in ([corpus] if isinstance(corpus, (str, Path)) else corpus)]
    tcfg = config.train_config()
    acc = make_accelerator(tcfg)
    torch.manual_seed(config.seed)  # the fresh head's initialisation
    model = _load_encoder_with_head(model_dir, config.train_encoder)  # a wrong model fails before the corpus is read
    tokenizer = from_hub_or_dir(AutoTokenizer.from_pretrained, model_dir, "tokenizer of", TOKENIZER_FILES)
    stream = dict(seq_len=config.seq_len, seed=config.seed, holdout_every=config.holdout_every)
    train_stream = PackedMLMStream(paths, tokenizer, epochs=None, **stream)
    check_min_sequences(train_stream, config.batch_size)
    held = PackedMLMStream(paths, tokenizer, split="heldout", **stream)
    check_min_sequences(held, 1)
    heldout = fixed_batches(held, tokenizer, config, config.heldout_sequences, config.eval_batch_size, config.seed)

    objective = PretrainingObjective(model, mlm=True, nsp=False)
    batches = StreamBatches(train_stream, MLMCollator(tokenizer, config.mlm_probability, seed=config.seed),
                            config.batch_size, config.max_steps, config.num_workers)
    clock = _TimeLimit(config.max_seconds, acc)
    settings = {"mlm_head": dataclasses.asdict(config), "model": str(model_dir), "corpus": [str(p) for p in paths]}
    for key in ("max_seconds", "num_workers", "eval_every", "log_every"):  # none changes the trajectory
        settings["mlm_head"].pop(key)
    run = train(objective, MLMLoss(), batches, heldout_evaluator(heldout), tcfg, out_dir, main_metric="mlm_accuracy",
                resume=resume, accelerator=acc, on_step=lambda step: clock.expired(), presharded=True,
                settings=settings)
    report: dict[str, Any] = {"model": str(model_dir), "corpus": [str(p) for p in paths], "steps": run.steps,
                              "total_steps": run.total_steps, "finished": run.finished,
                              "stopped_by": "budget" if run.finished else "max_seconds" if clock.stopped else "max_steps",
                              "tokens_seen": run.steps * config.batch_size * config.seq_len, "wall_s": run.wall_s,
                              "heldout": run.history, "config": dataclasses.asdict(config), "model_dir": None}
    if run.finished or clock.stopped:
        model_out = out_dir / "model"
        unwrapped = acc.unwrap_model(objective).model
        unwrapped.save_pretrained(model_out)
        tokenizer.save_pretrained(model_out)
        report["model_dir"] = str(model_out)
        texts = heldout_texts(paths, tokenizer, config.recall_texts, config.seq_len, config.holdout_every, config.seed)
        generator = CandidateGenerator.from_pretrained(model_out, "mlm", top_m=config.top_m)
        report["recall"] = candidate_recall(generator, texts)
        atomic_write(out_dir / "recall.json", lambda p: p.write_text(json.dumps(report["recall"], indent=2)))
    atomic_write(out_dir / "report.json", lambda p: p.write_text(json.dumps(report, indent=2)))
    return report


def heldout_texts(paths: Sequence[Path], tokenizer: Any, n: int, seq_len: int = 128, holdout_every: int = 100,
                  seed: int = 42, window: int = 32) -> list[str]:
    """``n`` texts of ``window`` tokens cut from the held-out blocks of the corpus (the split
    `train_mlm_head` never trains on with the same ``seq_len`` and ``holdout_every``), decoded:
    sentence-length contexts, as a task's examples give the masked LM."""
    held = PackedMLMStream(paths, tokenizer, seq_len, split="heldout", holdout_every=holdout_every, seed=seed)
    texts: list[str] = []
    for item in held:
        ids = item["input_ids"][1:-1].tolist()  # no [CLS] / [SEP]
        step = min(window, len(ids))
        texts += [tokenizer.decode(ids[i:i + step]) for i in range(0, len(ids) - step + 1, step)]
        if len(texts) >= n:
            return texts[:n]
    return texts


def candidate_recall(generator: CandidateGenerator, texts: Sequence[str], ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Masked-word recall of ``generator``'s masked LM on ``texts`` (see module doc), with the
    embedding-neighbour fallback's agreement beside it."""
    if generator.mode != "mlm":
        raise ConfigError("candidate_recall measures a masked LM: load the generator with mode='mlm'")
    t0 = time.perf_counter()
    found = [(text[w.start:w.end], w.candidates) for text, words in zip(texts, generator.words(texts, keep_original=True))
             for w in words if w.source == "mlm"]
    if not found:
        raise ConfigError("no single-piece words to mask in the held-out texts")
    m = generator.top_m
    hits = {k: sum(word.lower() in (c.lower() for c in cands[:k]) for word, cands in found) / len(found)
            for k in sorted({*ks, m})}
    neighbours = generator.neighbours([word for word, _ in found])
    agree = [len({c.lower() for c in near} & {c.lower() for c in cands}) / max(len(near), 1)
             for (word, cands), near in zip(found, neighbours)]
    return {"masked_words": len(found), "texts": len(texts), "top_m": m,
            "mlm": {f"recall_at_{k}": round(v, 4) for k, v in hits.items()},
            "embedding_neighbours": {f"share_in_mlm_top_{m}": round(sum(agree) / len(agree), 4)},
            "candidates": generator.describe(), "seconds": round(time.perf_counter() - t0, 2)}
