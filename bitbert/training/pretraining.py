"""BiPFT binary pretraining: a 1-bit BERT learns masked language modelling (+ next sentence
prediction) on a streamed corpus while matching the hidden states of its full-precision teacher.

The student is the teacher's copy, binarized (BiT's quantizers with the signed FFN2 input and,
for BiPFT-B, low-rank residual estimators in attention). Losses, weights 1:1:1 as in the paper:
MLM cross-entropy (+ NSP cross-entropy), Σ hidden-state MSE over the embedding output and every
layer, and the soft cross-entropy to the teacher's MLM (and NSP) logits when the teacher has those
heads. Data: packed fixed-length sequences from `bitbert.tasks.corpus`, fresh masking every batch, each
process a disjoint shard of the stream (``accelerate launch --num_processes N``). The loop is
`bitbert.training.train.train`: atomic checkpoints, and ``resume`` continues exactly (on CPU) — the corpus
position and the masking generator are part of the checkpoint.

    report = pretrain("minilm-dir", ["corpus.txt.xz"], "runs/bipft", PretrainConfig(max_tokens=10**8))

Outputs in ``out_dir``: ``model/`` (`bitbert.save` + tokenizer), ``report.json``,
``metrics.jsonl``, ``checkpoint.pt``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..core.atomic import atomic_write
from ..core.hub import TOKENIZER_FILES, from_hub_or_dir
from ..quant import model_files
from ..quant.calibration import calibrate
from ..tasks.corpus import MLMCollator, check_min_sequences
from .pretrain_config import PretrainConfig
from .pretrain_data import StreamBatches, corpus_stream, fixed_batches, scan_corpus
from .pretrain_metrics import Throughput, heldout_evaluator
from .pretrain_objective import PretrainingObjective, PretrainLoss, build_student, mlm_loss
from .rundir import METRICS, claim, digest_files
from .train import make_accelerator, run_settings, should_compile, train

__all__ = ["PretrainConfig", "pretrain", "PretrainingObjective", "PretrainLoss", "build_student", "mlm_loss",
           "StreamBatches", "Throughput", "heldout_evaluator", "scan_corpus"]

log = logging.getLogger("bitbert")


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
    if not config.early_layers:  # a fully binary run is what runs from before these settings recorded: they resume
        settings.pop("early_layers"), settings.pop("early_act_bits")
    claim(out_dir, run_settings(tcfg, settings), resume)

    tokenizer = from_hub_or_dir(AutoTokenizer.from_pretrained, teacher_path, "tokenizer of", TOKENIZER_FILES)
    lines = scan_corpus(paths)
    if acc.is_main_process:
        (log.warning if lines.skipped_non_utf8 or lines.skipped_empty else log.info)(
            "corpus: %d lines read, skipped %d empty and %d non-UTF-8 lines",
            lines.lines_read, lines.skipped_empty, lines.skipped_non_utf8)
    train_stream = corpus_stream(paths, tokenizer, config, rank=rank, world_size=world, epochs=None)
    check_min_sequences(train_stream, config.batch_size)
    heldout = []
    if config.holdout_every:
        held_stream = corpus_stream(paths, tokenizer, config, split="heldout")
        check_min_sequences(held_stream, 1)
        heldout = fixed_batches(held_stream, tokenizer, config, config.heldout_sequences,
                                 config.eval_batch_size, config.seed)

    torch.manual_seed(config.seed)  # fresh heads start identically in every process and run
    student, teacher, heads = build_student(teacher_path, config)
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model only {student.config.vocab_size}")
    objective = PretrainingObjective(student, mlm=True, nsp=config.nsp)
    # The same calibration batches in every process (corpus order, rank 0's view): identical α. The
    # encoder holds every quantizer (the heads stay full precision) and skips the full-vocab logits.
    calib_stream = corpus_stream(paths, tokenizer, config, epochs=1, shuffle=False)
    calib = fixed_batches(calib_stream, tokenizer, config, config.calibration_batches * config.batch_size,
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
        model_files.save(student, model_dir, tokenizer)
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
        atomic_write(out_dir / "report.json", lambda p: p.write_text(json.dumps(report, indent=2)))
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
