"""BiPFT binary pretraining: a 1-bit BERT learns masked language modelling (+ next sentence
prediction) on a streamed corpus while matching the hidden states of its full-precision teacher.

The student is the teacher's copy, binarized (BiT's quantizers with the signed FFN2 input and,
for BiPFT-B, low-rank residual estimators in attention). Losses, weights 1:1:1 as in the paper:
MLM cross-entropy (+ NSP cross-entropy), Σ hidden-state MSE over the embedding output and every
layer, and the soft cross-entropy to the teacher's MLM (and NSP) logits when the teacher has those
heads. Data: packed fixed-length sequences from `bitbert.corpus`, fresh masking every batch, each
process a disjoint shard of the stream (``accelerate launch --num_processes N``). The loop is
`bitbert.train.train`: atomic checkpoints, and ``resume`` continues exactly (on CPU) — the corpus
position and the masking generator are part of the checkpoint.

    report = pretrain("minilm-dir", ["corpus.txt.xz"], "runs/bipft", PretrainConfig(max_tokens=10**8))

Outputs in ``out_dir``: ``model/`` (`bitbert.save` + tokenizer), ``report.json``,
``metrics.jsonl``, ``checkpoint.pt``.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import io
from .calibration import calibrate
from .config import METHODS, ConfigError, QuantConfig, require
from .convert import UnsupportedModelError, binarize
from .corpus import IGNORE_INDEX, CorpusStats, MLMCollator, PackedMLMStream, check_min_sequences, iter_lines
from .losses import hidden_mse, soft_cross_entropy
from .rundir import METRICS, claim, digest_files
from .train import TrainConfig, make_accelerator, run_settings, should_compile, train
from .validate import SEED_MAX, finite, integer

__all__ = ["PretrainConfig", "pretrain", "PretrainingObjective", "PretrainLoss", "build_student"]

log = logging.getLogger("bitbert")

def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines one pretraining run (the CLI exposes each field as ``--field-name``).

    The budget is ``max_tokens`` (it fixes the learning-rate schedule; ``max_steps`` then stops
    early, checkpointed, and ``resume`` continues to the budget) or else ``max_steps``. Token
    counts are of every process together; ``batch_size`` is per process.
    """

    method: str = _opt("bit", "quantization preset of the student (BiPFT uses BiT's quantizers)")
    bits: str = _opt("1-1-1", "E-W-A precision of the student")
    ffn2_input: str = _opt("signed", "binarizer of the FFN2 input: signed (BiPFT) or unsigned (BiT)")
    residual_rank: int = _opt(1, "BiPFT low-rank residual estimators: 0 = BiPFT-A, 1 = BiPFT-B")
    nsp: bool = _opt(True, "next sentence prediction (BiPFT); the pooler is then pretrained too")
    seq_len: int = _opt(128, "tokens per packed sequence")
    batch_size: int = _opt(64, "sequences per step and process")
    mlm_probability: float = _opt(0.15, "share of tokens chosen as MLM targets (80/10/10 BERT masking)")
    max_tokens: int = _opt(0, "token budget of all processes (fixes the LR schedule)")
    max_steps: int = _opt(0, "stop after this many steps (the budget when max_tokens is 0)")
    max_seconds: float = _opt(0.0, "stop after this many seconds of the training loop (0 = no limit); "
                                   "the model is saved anyway: for fixed-time benchmarks")
    lr: float = _opt(2e-4, "peak learning rate (BiPFT: 2e-4)")
    quant_lr: float = _opt(1e-4, "learning rate of the quantizers' α/β")
    weight_decay: float = _opt(0.01, "AdamW weight decay")
    warmup_ratio: float = _opt(0.05, "share of the steps with linear warm-up")
    schedule: str = _opt("linear", "learning-rate decay after warm-up: linear or constant")
    max_grad_norm: float = _opt(1.0, "gradient clipping (0 = off)")
    mlm_weight: float = _opt(1.0, "weight of the MLM (and NSP) cross-entropy")
    hidden_weight: float = _opt(1.0, "weight of the hidden-state MSE to the teacher")
    kd_weight: float = _opt(1.0, "weight of the soft CE to the teacher's MLM/NSP logits (when it has them)")
    holdout_every: int = _opt(100, "every k-th block of the corpus is held out for evaluation (0 = none)")
    heldout_sequences: int = _opt(512, "held-out sequences evaluated (the first ones, masked once)")
    eval_every: int = _opt(500, "steps between held-out evaluations and checkpoints")
    eval_batch_size: int = _opt(128, "sequences per held-out batch")
    log_every: int = _opt(50, "steps between training-loss log lines")
    calibration_batches: int = _opt(4, "batches that set the activation scales α before training")
    shuffle_buffer: int = _opt(10_000, "packed blocks drawn from at random")
    num_workers: int = _opt(1, "0: tokenize in the training process; 1: in a DataLoader worker")
    seed: int = _opt(42, "seed of initialisation, data order, masking and dropout")
    mixed_precision: str = _opt("auto", "auto (bf16 on GPU), no, bf16 or fp16")
    compile: str = _opt("off", "torch.compile the forwards: off, on, auto (on GPU); compiling takes minutes")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        self.quant_config()  # validates bits, ffn2_input, residual_rank
        for name in ("lr", "mlm_probability"):
            finite(name, getattr(self, name), 0, above=True)
        for name in ("quant_lr", "weight_decay", "max_grad_norm", "mlm_weight", "hidden_weight", "kd_weight",
                     "max_seconds"):
            finite(name, getattr(self, name), 0)
        finite("warmup_ratio", self.warmup_ratio, 0, high=1, below=True)
        integer("seed", self.seed, 0, SEED_MAX)
        for name in ("seq_len", "batch_size", "max_tokens", "max_steps", "residual_rank", "holdout_every",
                     "heldout_sequences", "eval_every", "eval_batch_size", "log_every", "calibration_batches",
                     "shuffle_buffer", "num_workers"):
            integer(name, getattr(self, name), 0)
        checks = [(self.seq_len >= (5 if self.nsp else 3), "seq_len is too short for the special tokens"),
                  (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1"),
                  (min(self.max_tokens, self.max_steps, self.max_seconds) >= 0,
                   "max_tokens, max_steps and max_seconds must be >= 0"),
                  (0.0 < self.mlm_probability < 1.0, "mlm_probability must be in (0, 1)"),
                  (self.holdout_every == 0 or self.holdout_every >= 2, "holdout_every must be 0 or >= 2"),
                  (self.heldout_sequences >= 1 and self.calibration_batches >= 1 and self.eval_every >= 1
                   and self.log_every >= 1, "heldout_sequences, calibration_batches, eval_every, log_every must be >= 1"),
                  (self.num_workers in (0, 1), "num_workers must be 0 or 1 (exact resume needs at most one worker)"),
                  (self.schedule in ("linear", "constant"), "schedule must be linear or constant")]
        require(checks)

    def quant_config(self) -> QuantConfig:
        """The student's QuantConfig: the preset with BiPFT's FFN2 binarizer and estimators."""
        return QuantConfig.from_preset(self.method, self.bits).replace(ffn2_input=self.ffn2_input,
                                                                        residual_rank=self.residual_rank)

    def tokens_per_step(self, world_size: int) -> int:
        return self.batch_size * self.seq_len * world_size

    def total_steps(self, world_size: int) -> int:
        """Steps of the whole schedule for ``world_size`` processes."""
        if self.max_tokens:
            return max(1, self.max_tokens // self.tokens_per_step(world_size))
        if self.max_steps:
            return self.max_steps
        raise ConfigError("give a budget: max_tokens or max_steps")

    def train_config(self) -> TrainConfig:
        """The loop's settings (one 'epoch' is the whole budget: the stream never ends)."""
        return TrainConfig(epochs=1.0, lr=self.lr, quant_lr=self.quant_lr, weight_decay=self.weight_decay,
                           batch_size=self.batch_size, eval_batch_size=self.eval_batch_size,
                           max_length=self.seq_len, warmup_ratio=self.warmup_ratio, schedule=self.schedule,
                           max_grad_norm=self.max_grad_norm, eval_every=self.eval_every, log_every=self.log_every,
                           seed=self.seed, mixed_precision=self.mixed_precision, compile=self.compile,
                           max_steps=self.max_steps if self.max_tokens else 0)


# --------------------------------------------------------------------------- model
class PretrainingObjective(nn.Module):
    """A BertForMaskedLM / BertForPreTraining whose forward returns what the losses need:
    ``(hidden_states, mlm_logits, nsp_logits)``, the vocabulary projection applied only at the
    masked positions (``labels != -100``; a third of a small model's FLOPs at all positions).
    ``mlm`` / ``nsp`` False skip a head (a teacher without it). Training goes through this
    module's forward, so DistributedDataParallel sees every step."""

    def __init__(self, model: nn.Module, mlm: bool = True, nsp: bool = False) -> None:
        super().__init__()
        if getattr(model.config, "model_type", None) != "bert" or not hasattr(model, "cls"):
            raise UnsupportedModelError(f"pretraining needs a BERT model with a 'cls' head, got {type(model).__name__}")
        self.model, self.mlm, self.nsp = model, mlm, nsp

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                labels: torch.Tensor, next_sentence_label: torch.Tensor | None = None):
        out = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              output_hidden_states=True)
        mlm_logits = self.model.cls.predictions(out.last_hidden_state[labels != IGNORE_INDEX]) if self.mlm else None
        nsp_logits = self.model.cls.seq_relationship(out.pooler_output) if self.nsp else None
        return out.hidden_states, mlm_logits, nsp_logits


def build_student(teacher_path: str | Path, config: PretrainConfig) -> tuple[nn.Module, nn.Module, dict[str, bool]]:
    """(student, teacher, teacher_heads): both BertForMaskedLM (BertForPreTraining with ``nsp``)
    loaded in float32 from the full-precision checkpoint ``teacher_path``; the student binarized
    with ``config.quant_config()``. ``teacher_heads`` says which heads the checkpoint really has
    (``mlm``, ``nsp``): a missing head starts fresh in the student and is not distilled."""
    from transformers import AutoConfig, BertForMaskedLM, BertForPreTraining
    from transformers.activations import ACT2FN

    teacher_path = Path(teacher_path)
    hf_config = io.from_hub_or_dir(AutoConfig.from_pretrained, teacher_path, "teacher")
    if getattr(hf_config, "bitbert", None):
        raise ValueError(f"{teacher_path} is a bitbert (quantized) model; the teacher must be full precision")
    if hf_config.model_type != "bert":
        raise UnsupportedModelError(f"pretraining supports BERT teachers; {teacher_path} is {hf_config.model_type!r}")
    cls = BertForPreTraining if config.nsp else BertForMaskedLM
    model, info = io.from_hub_or_dir(lambda p: cls.from_pretrained(p, dtype=torch.float32, output_loading_info=True),
                                  teacher_path, "teacher")
    missing = set(info["missing_keys"])
    encoder_missing = sorted(k for k in missing if k.startswith("bert.") and not k.startswith("bert.pooler."))
    if encoder_missing:
        raise ValueError(f"{teacher_path}: the checkpoint lacks encoder weights {encoder_missing[:5]}")
    heads = {"mlm": not any(k.startswith("cls.predictions.transform.") for k in missing),
             "nsp": config.nsp and not any(k.startswith("cls.seq_relationship.") for k in missing)}
    # Without an MLM head in the checkpoint the student's starts fresh; its decoder stays tied to
    # the word embeddings. With 1-bit word embeddings the tied decoder multiplies by the
    # full-precision latent weights (the decoder is not binarized), not by their binarized rows.
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    student = binarize(model, config.quant_config())
    # binarize() rewrites config.hidden_act (e.g. to relu) so a saved model rebuilds its FFN; the
    # MLM head reads it too when rebuilt, so give the head that activation now: what is trained is
    # what `bitbert.load` returns.
    student.cls.predictions.transform.transform_act_fn = ACT2FN[student.config.hidden_act]
    return student.train(), teacher, heads


# --------------------------------------------------------------------------- losses
class PretrainLoss:
    """``loss(student_objective, batch)``: MLM (+ NSP) CE + hidden-state MSE to the teacher + soft CE
    to the teacher's logits where it has the heads. The teacher is always in eval mode, no grad."""

    compilable = True  # read by train(): no per-step hooks
    graphable = False  # masked positions are selected by boolean indexing, a data-dependent shape

    def __init__(self, teacher: nn.Module, heads: dict[str, bool], config: PretrainConfig, compile: bool = False) -> None:
        self.teacher = PretrainingObjective(teacher.eval(), mlm=heads["mlm"], nsp=heads["nsp"])
        self.teacher_fwd = torch.compile(self.teacher, dynamic=True) if compile else self.teacher
        self.config = config

    def disable_compile(self) -> None:
        self.teacher_fwd = self.teacher

    def __call__(self, student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        self.teacher.eval()
        with torch.no_grad():
            t_hidden, t_mlm, t_nsp = self.teacher_fwd(**batch)
        s_hidden, s_mlm, s_nsp = student(**batch)
        loss = c.mlm_weight * mlm_loss(s_mlm, batch["labels"])
        if s_nsp is not None:
            loss = loss + c.mlm_weight * F.cross_entropy(s_nsp.float(), batch["next_sentence_label"])
        if c.hidden_weight:
            loss = loss + c.hidden_weight * hidden_mse(s_hidden, t_hidden, batch["attention_mask"])
        if c.kd_weight and t_mlm is not None and len(t_mlm):
            loss = loss + c.kd_weight * soft_cross_entropy(s_mlm, t_mlm)
        if c.kd_weight and t_nsp is not None and s_nsp is not None:
            loss = loss + c.kd_weight * soft_cross_entropy(s_nsp, t_nsp)
        return loss


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of masked-position logits (N, V) against the labels != -100 of (B, L) labels;
    a batch without a masked token gives 0, not NaN."""
    target = labels[labels != IGNORE_INDEX]
    total = F.cross_entropy(logits.float(), target, reduction="sum")
    return total if reduction == "sum" else total / max(target.numel(), 1)


# --------------------------------------------------------------------------- data
class StreamBatches:
    """`bitbert.train.Batches` over an endless packed stream, masked on the fly: ``len`` is the
    step budget of this process. The state (batches consumed, masking generator) restores the
    exact continuation; with ``num_workers=1`` packing runs in a DataLoader worker."""

    def __init__(self, stream: PackedMLMStream, collator: MLMCollator, batch_size: int, steps: int,
                 num_workers: int = 0) -> None:
        self.stream, self.collator, self.batch_size = stream, collator, batch_size
        self.steps, self.num_workers = steps, num_workers
        self.batches_done = 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """No-op: corpus passes are the stream's own (it reshuffles each one)."""

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": 0, "batches_done": self.batches_done, "stream": self._stream_state(),
                "masking": self.collator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])  # raises if the stream is configured differently
        self.collator.load_state_dict(state["masking"])
        self.batches_done = int(state["batches_done"])

    def _stream_state(self) -> dict[str, Any]:
        # The main process's stream does not count what a worker consumed: derive it.
        return {**self.stream.state_dict(), "sequences_done": self.batches_done * self.batch_size}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.stream.load_state_dict(self._stream_state())
        if self.num_workers:
            from torch.utils.data import DataLoader

            # Own generator: creating the iterator must not draw from the global RNG (dropout).
            groups: Iterator[list] = iter(DataLoader(self.stream, batch_size=self.batch_size, collate_fn=list,
                                                     num_workers=self.num_workers, prefetch_factor=4,
                                                     generator=torch.Generator()))
        else:
            items = iter(self.stream)
            groups = iter(lambda: list(itertools.islice(items, self.batch_size)), [])
        for group in groups:
            batch = self.collator(group)  # masking here, in this process: its generator is checkpointed
            self.batches_done += 1
            yield batch


def _stream(paths: Sequence[Path], tokenizer, config: PretrainConfig, **kwargs) -> PackedMLMStream:
    return PackedMLMStream(paths, tokenizer, config.seq_len, nsp=config.nsp, seed=config.seed,
                           holdout_every=config.holdout_every, shuffle_buffer=config.shuffle_buffer, **kwargs)


def _fixed_batches(stream: PackedMLMStream, tokenizer, config: PretrainConfig, n: int, batch_size: int,
                   seed: int) -> list[dict[str, torch.Tensor]]:
    """The first ``n`` sequences of ``stream``, masked once with their own seed, in batches."""
    items = list(itertools.islice(stream, n))
    collator = MLMCollator(tokenizer, config.mlm_probability, seed=seed)
    return [collator(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]


def scan_corpus(paths: Sequence[Path]) -> CorpusStats:
    """Count lines, empty ones and non-UTF-8 ones (one untokenized read of the files)."""
    stats = CorpusStats()
    for _ in iter_lines(paths, stats):
        pass
    return stats


# --------------------------------------------------------------------------- evaluation
class Throughput:
    """Steady-state tokens/s: step intervals after the first ``warmup`` of this invocation (compilation,
    shuffle-buffer fill), leaving out those that held an evaluation or a checkpoint."""

    def __init__(self, tokens_per_step: int, warmup: int = 5) -> None:
        self.tokens_per_step, self.warmup = tokens_per_step, warmup
        self.steps_seen, self.tokens, self.seconds = 0, 0, 0.0
        self.last: float | None = None
        self.paused = False

    def on_step(self, step: int) -> None:
        now = time.perf_counter()
        if self.last is not None and self.steps_seen >= self.warmup and not self.paused:
            self.tokens += self.tokens_per_step
            self.seconds += now - self.last
        self.steps_seen += 1
        self.last, self.paused = now, False

    def pause(self) -> None:
        self.paused = True

    @property
    def rate(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 else None


def heldout_evaluator(batches: list[dict[str, torch.Tensor]], throughput: Throughput | None = None):
    """``evaluate(objective) -> {"mlm_loss", "mlm_accuracy"[, "nsp_accuracy"], "tokens_per_s"}`` on
    fixed masked held-out batches (the same masks every time, so the curve compares like with like)."""

    def evaluate(objective: nn.Module) -> dict[str, float]:
        if throughput is not None:
            throughput.pause()
        device = next(objective.parameters()).device
        loss = correct = count = nsp_correct = nsp_count = 0.0
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            _, logits, nsp = objective(**batch)
            target = batch["labels"][batch["labels"] != IGNORE_INDEX]
            loss += float(mlm_loss(logits, batch["labels"], reduction="sum"))
            correct += float((logits.argmax(-1) == target).sum())
            count += target.numel()
            if nsp is not None:
                nsp_correct += float((nsp.argmax(-1) == batch["next_sentence_label"]).sum())
                nsp_count += len(nsp)
        metrics = {"mlm_loss": loss / max(count, 1), "mlm_accuracy": correct / max(count, 1)}
        if nsp_count:
            metrics["nsp_accuracy"] = nsp_correct / nsp_count
        if throughput is not None and throughput.rate is not None:
            metrics["tokens_per_s"] = throughput.rate
        return metrics

    return evaluate


# --------------------------------------------------------------------------- the run
def pretrain(teacher_path: str | Path, corpus_paths: Sequence[str | Path] | str | Path, out_dir: str | Path,
             config: PretrainConfig = PretrainConfig(), resume: bool = False) -> dict[str, Any]:
    """Binary-pretrain a student initialised from ``teacher_path`` on ``corpus_paths`` (plain,
    .xz, .gz, .bz2 text, one paragraph or sentence a line). Returns the report also written to
    ``out_dir/report.json``; the model is saved to ``out_dir/model`` once the budget is reached, or
    when ``max_seconds`` ran out (``report["stopped_by"]`` says which); not after ``max_steps``.

    Raises `CorpusError` when a file is missing or the corpus cannot fill one batch (or, with a
    held-out split, one held-out sequence); `ConfigError` for a bad config or budget.
    """
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    paths = [Path(p) for p in ([corpus_paths] if isinstance(corpus_paths, (str, Path)) else corpus_paths)]
    tcfg = config.train_config()
    acc = make_accelerator(tcfg)
    rank, world = acc.process_index, acc.num_processes
    total = config.total_steps(world)
    # what the run computes: a resume from another teacher, corpus or setting is refused before any work
    settings = {**dataclasses.asdict(config), "teacher": digest_files([teacher_path]), "corpus": digest_files(paths)}
    claim(out_dir, run_settings(tcfg, settings), resume)

    tokenizer = io.from_hub_or_dir(AutoTokenizer.from_pretrained, teacher_path, "tokenizer of", io.TOKENIZER_FILES)
    lines = scan_corpus(paths)
    if acc.is_main_process:
        (log.warning if lines.skipped_non_utf8 or lines.skipped_empty else log.info)(
            "corpus: %d lines read, skipped %d empty and %d non-UTF-8 lines",
            lines.lines_read, lines.skipped_empty, lines.skipped_non_utf8)
    train_stream = _stream(paths, tokenizer, config, rank=rank, world_size=world, epochs=None)
    check_min_sequences(train_stream, config.batch_size)
    heldout = []
    if config.holdout_every:
        held_stream = _stream(paths, tokenizer, config, split="heldout")
        check_min_sequences(held_stream, 1)
        heldout = _fixed_batches(held_stream, tokenizer, config, config.heldout_sequences,
                                 config.eval_batch_size, config.seed)

    torch.manual_seed(config.seed)  # fresh heads start identically in every process and run
    student, teacher, heads = build_student(teacher_path, config)
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model only {student.config.vocab_size}")
    objective = PretrainingObjective(student, mlm=True, nsp=config.nsp)
    # The same calibration batches in every process (corpus order, rank 0's view): identical α. The
    # encoder holds every quantizer (the heads stay full precision) and skips the full-vocab logits.
    calib_stream = _stream(paths, tokenizer, config, epochs=1, shuffle=False)
    calib = _fixed_batches(calib_stream, tokenizer, config, config.calibration_batches * config.batch_size,
                           config.batch_size, config.seed + 1)
    calibrate(student.to(acc.device).base_model, calib, max_batches=config.calibration_batches)

    batches = StreamBatches(train_stream, MLMCollator(tokenizer, config.mlm_probability, seed=config.seed + rank),
                            config.batch_size, total, config.num_workers)
    throughput = Throughput(config.tokens_per_step(world))
    clock = _TimeLimit(config.max_seconds, acc)
    loss = PretrainLoss(teacher.to(acc.device), heads, config, compile=should_compile(tcfg, acc.device))

    def on_step(step: int) -> bool:
        throughput.on_step(step)
        return clock.expired()

    run = train(objective, loss, batches, heldout_evaluator(heldout, throughput) if heldout else None, tcfg,
                out_dir, main_metric="mlm_accuracy", resume=resume, accelerator=acc, on_step=on_step,
                presharded=True, settings=settings)

    model_dir = out_dir / "model"
    save = run.finished or clock.stopped
    if save and acc.is_main_process:
        io.save(student, model_dir, tokenizer)
    stopped = "budget" if run.finished else "max_seconds" if clock.stopped else "max_steps"
    report = {
        "teacher": str(teacher_path), "corpus": [str(p) for p in paths], "world_size": world,
        "finished": run.finished, "stopped_by": stopped, "steps": run.steps, "total_steps": run.total_steps,
        "tokens_seen": run.steps * config.tokens_per_step(world),
        "tokens_per_s": throughput.rate or run.examples_per_s * config.seq_len,
        "tokens_per_s_with_startup": run.examples_per_s * config.seq_len, "wall_s": run.wall_s,
        "heldout": [{**h, "tokens": h["step"] * config.tokens_per_step(world)} for h in run.history],
        "best": run.best, "final": run.final, "train_loss": _train_curve(out_dir / METRICS),
        "corpus_lines": dataclasses.asdict(lines), "teacher_heads": heads,
        "config": dataclasses.asdict(config), "quant_config": config.quant_config().to_dict(),
        "model_dir": str(model_dir) if save else None,
    }
    if acc.is_main_process:
        io.atomic_write(out_dir / "report.json", lambda p: p.write_text(json.dumps(report, indent=2)))
    acc.wait_for_everyone()
    return report


class _TimeLimit:
    """``expired()`` once ``seconds`` have passed since construction, agreed by all processes (one
    stopping a step before another would hang the gradient all-reduce)."""

    def __init__(self, seconds: float, accelerator) -> None:
        self.seconds, self.acc = seconds, accelerator
        self.start = time.perf_counter()
        self.stopped = False

    def expired(self) -> bool:
        if not self.seconds:
            return False
        over = time.perf_counter() - self.start > self.seconds
        if self.acc.num_processes > 1:
            flag = torch.tensor([float(over)], device=self.acc.device)
            over = bool(self.acc.reduce(flag, reduction="sum").item() > 0)
        self.stopped = self.stopped or over
        return over


def _train_curve(metrics: Path) -> list[list[float]]:
    """[[step, training loss], ...] from the JSONL log; after a resume the latest value of a step wins."""
    curve: dict[int, float] = {}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "train/loss" in row:
                curve[int(row["step"])] = row["train/loss"]
    return [[s, curve[s]] for s in sorted(curve)]
