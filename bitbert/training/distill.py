"""Knowledge distillation and BiT's multi-distillation schedule (Algorithm 1).

Each stage quantizes the previous student (the full-precision teacher for the first stage),
distills from it and hands it on as the next stage's teacher and initialization.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.atomic import atomic_write
from ..core.config import METHODS, AugmentConfig, ConfigError, QuantConfig
from ..quant import model_files
from ..quant.calibration import calibrate
from ..quant.convert import binarize
from ..quant.schedule import QuantInit, Schedule, task_overrides
from ..tasks.specs import TaskSpec
from .augment import augment_for_teacher
from .evaluation import make_evaluator
from .losses import (attention_kl, attention_mse, capture_qkv, dmd_loss, ground_truth_loss, hidden_direction,
                     hidden_mse, logit_loss)
from .rundir import claim
from .task_data import TaskData, run_identity
from .train import RunReport, TrainConfig, finished_report, make_accelerator, run_settings, should_compile, train

log = logging.getLogger("bitbert")


HIDDEN_LOSSES = ("mse", "direction")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the distillation terms. Defaults per method: :func:`method_losses`.

    ``hidden_loss`` picks the hidden-state term: ``mse`` (BiT eq. 2) or ``direction`` (BiBERT's
    scale-free ‖Ĥ_s − Ĥ_t‖).
    """

    logits: float = 1.0
    hidden: float = 1.0
    attention: float = 0.0
    attention_kl: float = 0.0
    dmd: float = 0.0
    ground_truth: float = 0.0
    temperature: float = 1.0
    hidden_loss: str = "mse"

    def __post_init__(self) -> None:
        if self.hidden_loss not in HIDDEN_LOSSES:
            raise ConfigError(f"hidden_loss must be one of {list(HIDDEN_LOSSES)}, got {self.hidden_loss!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "hidden_loss" and (not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"loss weight {f.name} must be a number >= 0, got {v!r}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")

    def with_overrides(self, text: str | None) -> "LossWeights":
        """Apply ``"key=value,key=value"`` (e.g. ``"dmd=0.5,hidden_loss=mse"``) with clear errors."""
        if not text:
            return self
        known = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, float | str] = {}
        for item in text.split(","):
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or key not in known:
                raise ConfigError(f"--loss: {item.strip()!r} is not key=value with key in {sorted(known)}")
            if key == "hidden_loss":
                changes[key] = value
                continue
            try:
                changes[key] = float(value)
            except ValueError:
                raise ConfigError(f"--loss: {key} needs a number, got {value!r}") from None
        return dataclasses.replace(self, **changes)


def method_losses(method: str) -> LossWeights:
    """BiT: logits + hidden-state MSE. BiBERT (its code's recipe): + DMD on Q/K/V, direction-only
    hidden states and a 0.5-weighted ground-truth CE (hard-coded there, a visible default here).
    Baseline (BinaryBERT-style): + attention MSE."""
    losses = {"bit": LossWeights(), "bibert": LossWeights(dmd=1.0, ground_truth=0.5, hidden_loss="direction"),
              "baseline": LossWeights(attention=1.0), "fp": LossWeights()}
    if method not in losses:
        raise ConfigError(f"unknown method {method!r}; valid methods: {list(METHODS)}")
    return losses[method]


class DistillLoss:
    """loss(student, batch) against a frozen teacher that is always in eval mode."""

    def __init__(self, teacher: nn.Module, spec: TaskSpec, weights: LossWeights, compile: bool = False) -> None:
        self.teacher, self.spec, self.w = teacher.eval(), spec, weights
        self.compilable = not weights.dmd
        self.teacher_fwd = torch.compile(teacher, dynamic=True) if compile and self.compilable else teacher
        for p in teacher.parameters():
            p.requires_grad_(False)
        if self.wants_attention:
            _eager_attention(teacher)
        self.heads = teacher.config.num_attention_heads
        self.hidden_fn = hidden_mse if weights.hidden_loss == "mse" else hidden_direction

    def disable_compile(self) -> None:
        self.teacher_fwd = self.teacher

    @property
    def wants_attention(self) -> bool:
        return bool(self.w.attention or self.w.attention_kl)

    def _forward(self, model: nn.Module, inputs: dict):
        want_attn = self.wants_attention
        if want_attn:
            _eager_attention(model)
        if self.w.dmd:
            with capture_qkv(model) as cap:
                out = model(**inputs, output_hidden_states=True, output_attentions=want_attn)
            return out, cap.tensors
        return model(**inputs, output_hidden_states=True, output_attentions=want_attn), []

    def __call__(self, student: nn.Module, batch: dict) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        self.teacher.eval()
        with torch.no_grad():
            t_out, t_qkv = self._forward(self.teacher_fwd, inputs)
        s_out, s_qkv = self._forward(student, inputs)
        mask = inputs["attention_mask"]
        w = self.w
        loss = w.logits * logit_loss(s_out.logits, t_out.logits, self.spec.is_regression, w.temperature)
        if w.hidden:
            loss = loss + w.hidden * self.hidden_fn(s_out.hidden_states, t_out.hidden_states, mask)
        if w.attention:
            loss = loss + w.attention * attention_mse(s_out.attentions, t_out.attentions)
        if w.attention_kl:
            loss = loss + w.attention_kl * attention_kl(s_out.attentions, t_out.attentions, mask)
        if w.dmd:
            loss = loss + w.dmd * dmd_loss(s_qkv, t_qkv, self.heads, mask)
        if w.ground_truth:
            loss = loss + w.ground_truth * ground_truth_loss(s_out.logits, batch["labels"], self.spec.is_regression)
        return loss


def _eager_attention(model: nn.Module) -> None:
    """Attention maps for the attention losses: sdpa and flash attention return none; bitbert's and
    eager attention do."""
    if model.config._attn_implementation not in ("eager", "bitbert"):
        model.config._attn_implementation = "eager"


@dataclass
class StageResult:
    bits: str
    method: str
    report: RunReport | None
    model_dir: str
    skipped: bool = False

    def to_dict(self) -> dict:
        d = {"bits": self.bits, "method": self.method, "model_dir": self.model_dir, "skipped": self.skipped}
        if self.report is not None:
            d.update(best=self.report.best, final=self.report.final, steps=self.report.steps,
                     wall_s=self.report.wall_s, examples_per_s=self.report.examples_per_s)
        return d


@dataclass
class ScheduleResult:
    stages: list[StageResult] = field(default_factory=list)
    student: nn.Module | None = None


def stage_configs(method: str, schedule: str | list[str] | Schedule,
                  quant_overrides: dict | None = None) -> list[QuantConfig]:
    """Each stage's `QuantConfig` (`bitbert.quant.schedule.Schedule.configs`)."""
    return Schedule.parse(schedule).configs(method, quant_overrides)


def stage_dir_name(index: int, bits: str) -> str:
    """The folder of a schedule's stage ``index`` (E-W-A ``bits``) inside the run's folder."""
    return f"stage{index}-{bits}"


def run_schedule(teacher: nn.Module, data: TaskData, method: str, schedule: str | list[str] | Schedule,
                 cfg: TrainConfig, out_dir: str | Path, tokenizer=None, losses: LossWeights | None = None,
                 quant_overrides: dict | None = None, resume: bool = False,
                 augment: AugmentConfig | None = None, augmented_file: dict | None = None,
                 quant_init: QuantInit = QuantInit()) -> ScheduleResult:
    """BiT Algorithm 1: for each E-W-A stage, quantize the current teacher into a student, distill,
    and make the student the next teacher. Stage ``i`` lives in ``out_dir/stage{i}-{bits}`` with
    its checkpoint, metrics and final model; ``resume`` skips finished stages and continues the
    interrupted one from its checkpoint. ``quant_overrides`` changes `QuantConfig` fields of every
    stage (an ablation, e.g. ``{"binarize_pooler": False}``), on top of the task's own
    (`bitbert.quant.schedule.task_overrides`: wider first layers for sentence pairs); ``quant_init`` how each stage's
    quantizers start (`bitbert.quant.schedule.QuantInit`). ``augment`` extends the training set once, with the
    full-precision teacher's embedding neighbours, for every stage (`bitbert.training.augment`). ``augmented_file``
    (`bitbert.training.augmented.file_record`) says which augmented file ``data`` was loaded from, for the records."""
    out_dir = Path(out_dir)
    result = ScheduleResult()
    weights = losses or method_losses(method)
    acc = make_accelerator(cfg)
    current = teacher.to(acc.device).eval()
    stages = Schedule.parse(schedule)
    quant_overrides = task_overrides(data.spec.is_pair, quant_overrides)
    configs = stages.configs(method, quant_overrides)  # before any work: a bad combination fails now
    augment = augment if augment is not None and augment.copies else None
    data.check_fits(current.config)
    identity = run_identity(data, current)

    def stage_settings(bits: str) -> dict:
        """What a stage computes; a resume with other settings must not reuse or continue it."""
        extra = {**identity, "method": method, "bits": bits, "losses": dataclasses.asdict(weights),
                 "quant_overrides": quant_overrides or {}}
        if not quant_init.is_default:  # absent when default: runs from before it existed still resume
            extra["quant_init"] = dataclasses.asdict(quant_init)
        if augment:  # absent when off
            extra["augment"] = dataclasses.asdict(augment)
        if augmented_file:
            extra["augmented_file"] = augmented_file
        return extra

    for i, (bits, qcfg) in enumerate(zip(stages, configs)):  # every stage's folder, before any work
        if not qcfg.is_identity:
            claim(out_dir / stage_dir_name(i, bits), run_settings(cfg, stage_settings(bits)), resume)
    if augment:
        data = dataclasses.replace(data, train=augment_for_teacher(data._train_split(), current, tokenizer, augment))
        log.info("training set augmented to %d examples (%s)", len(data.train), data.train.source)
    for i, (bits, qcfg) in enumerate(zip(stages, configs)):
        stage_dir = out_dir / stage_dir_name(i, bits)
        if qcfg.is_identity:
            log.info("stage %s is the full-precision teacher itself: nothing to distill", bits)
            result.stages.append(StageResult(bits, method, None, "", skipped=True))
            continue
        extra = stage_settings(bits)
        done = finished_report(stage_dir, run_settings(cfg, extra)) if resume else None
        if done is not None:
            log.info("stage %s already finished: loading %s", bits, stage_dir / "model")
            current = model_files.load(stage_dir / "model", device=acc.device)
            result.stages.append(StageResult(bits, method, done, str(stage_dir / "model")))
            continue
        if acc.is_main_process:
            log.info("stage %d/%d: %s student at %s bits (embeddings-weights-activations), distilled from the %s",
                     i + 1, len(stages), method, bits, "teacher" if i == 0 else f"{stages.stages[i - 1]} student")
        student = copy.deepcopy(current)
        binarize(student, qcfg, inherit_quantizers=quant_init.inherit_quantizers)
        student.train()
        for p in student.parameters():
            p.requires_grad_(True)
        # fresh quantizers only: those quant_init.inherit_quantizers carried over keep their α
        calibrate(student, data.calibration_batches(cfg.batch_size), only_uncalibrated=True,
                  alpha_init=quant_init.alpha_init)
        loss = DistillLoss(current, data.spec, weights, compile=should_compile(cfg, acc.device))
        report = train(student, loss,
                       data.train_batches(cfg.batch_size, cfg.seed, acc.device.type == "cuda"),
                       make_evaluator(data, cfg.eval_batch_size), cfg, stage_dir,
                       main_metric=data.spec.main_key, resume=resume, accelerator=acc, settings=extra)
        if not report.finished:  # stopped by max_steps: resume later
            result.stages.append(StageResult(bits, method, report, ""))
            result.student = student
            return result
        student = acc.unwrap_model(student)
        if acc.is_main_process:
            model_files.save(student, stage_dir / "model", tokenizer)
        acc.wait_for_everyone()  # no process moves on (or may be killed and resumed) before the stage is saved
        result.stages.append(StageResult(bits, method, report, str(stage_dir / "model")))
        current = student.eval()
    result.student = current
    if acc.is_main_process:
        atomic_write(out_dir / "schedule.json", lambda p: p.write_text(json.dumps(
            {"method": method, "schedule": list(stages), "losses": dataclasses.asdict(weights),
             "augment": dataclasses.asdict(augment) if augment else None,
             **({"augmented_file": augmented_file} if augmented_file else {}),
             "stages": [s.to_dict() for s in result.stages]}, indent=2)))
    return result


# Names that lived here before fine-tuning, run identity and the task losses got their own modules.
_MOVED = {"finetune": "finetune", "supervised_loss": "finetune", "ground_truth_loss": "losses",
          "finished_report": "train", "run_identity": "task_data"}


def __getattr__(name: str):
    if name in _MOVED:
        from importlib import import_module

        return getattr(import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
