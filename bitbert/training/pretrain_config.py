"""`PretrainConfig`: everything that defines one BiPFT pretraining run (`bitbert.training.pretraining`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.config import METHODS, ConfigError, QuantConfig, require
from ..core.validate import SEED_MAX, finite, integer
from ..quant.schedule import stage_config
from .train import TrainConfig


def option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines one pretraining run (the CLI exposes each field as ``--field-name``).

    The budget is ``max_tokens`` (it fixes the learning-rate schedule; ``max_steps`` then stops
    early, checkpointed, and ``resume`` continues to the budget) or else ``max_steps``. Token
    counts are of every process together; ``batch_size`` is per process.
    """

    method: str = option("bit", "quantization preset of the student (BiPFT uses BiT's quantizers)")
    bits: str = option("1-1-1", "E-W-A precision of the student")
    ffn2_input: str = option("signed", "binarizer of the FFN2 input: signed (BiPFT) or unsigned (BiT)")
    residual_rank: int = option(1, "BiPFT low-rank residual estimators: 0 = BiPFT-A, 1 = BiPFT-B")
    early_layers: int = option(0, "first encoder layers with wider activations (2: what sentence-pair tasks "
                                  "need, QuantConfig.early_layers; 0: fully binary, BiPFT's model)")
    early_act_bits: int = option(4, "activation bits of those first layers (2, 4, 8 or 32)")
    nsp: bool = option(True, "next sentence prediction (BiPFT); the pooler is then pretrained too")
    seq_len: int = option(128, "tokens per packed sequence")
    batch_size: int = option(64, "sequences per step and process")
    mlm_probability: float = option(0.15, "share of tokens chosen as MLM targets (80/10/10 BERT masking)")
    max_tokens: int = option(0, "token budget of all processes (fixes the LR schedule)")
    max_steps: int = option(0, "stop after this many steps (the budget when max_tokens is 0)")
    max_seconds: float = option(0.0, "stop after this many seconds of the training loop (0 = no limit); "
                                   "the model is saved anyway: for fixed-time benchmarks")
    lr: float = option(2e-4, "peak learning rate (BiPFT: 2e-4)")
    quant_lr: float = option(1e-4, "learning rate of the quantizers' α/β")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of the steps with linear warm-up")
    schedule: str = option("linear", "learning-rate decay after warm-up: linear or constant")
    max_grad_norm: float = option(1.0, "gradient clipping (0 = off)")
    mlm_weight: float = option(1.0, "weight of the MLM (and NSP) cross-entropy")
    hidden_weight: float = option(1.0, "weight of the hidden-state MSE to the teacher")
    kd_weight: float = option(1.0, "weight of the soft CE to the teacher's MLM/NSP logits (when it has them)")
    holdout_every: int = option(100, "every k-th block of the corpus is held out for evaluation (0 = none)")
    heldout_sequences: int = option(512, "held-out sequences evaluated (the first ones, masked once)")
    eval_every: int = option(500, "steps between held-out evaluations and checkpoints")
    eval_batch_size: int = option(128, "sequences per held-out batch")
    log_every: int = option(50, "steps between training-loss log lines")
    calibration_batches: int = option(4, "batches that set the activation scales α before training")
    shuffle_buffer: int = option(10_000, "packed blocks drawn from at random")
    num_workers: int = option(1, "0: tokenize in the training process; 1: in a DataLoader worker")
    seed: int = option(42, "seed of initialisation, data order, masking and dropout")
    mixed_precision: str = option("auto", "auto (bf16 on GPU), no, bf16 or fp16")
    compile: str = option("off", "torch.compile the forwards: off, on, auto (on GPU); compiling takes minutes")

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
        """The student's QuantConfig: the preset with BiPFT's FFN2 binarizer and estimators, and the
        wider first layers when asked for (fine-tuning keeps the pretrained model's layers as they are)."""
        return stage_config(self.method, self.bits, {"ffn2_input": self.ffn2_input, "residual_rank": self.residual_rank,
                                                     "early_layers": self.early_layers,
                                                     "early_act_bits": self.early_act_bits})

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
