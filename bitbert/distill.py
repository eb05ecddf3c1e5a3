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
import torch.nn.functional as F
from torch import nn

from . import io
from .augment import UNKNOWN_CLASS, augment_for_teacher
from .calibration import calibrate
from .config import METHODS, AugmentConfig, ConfigError, QuantConfig
from .convert import binarize
from .losses import attention_kl, attention_mse, capture_qkv, dmd_loss, hidden_direction, hidden_mse, logit_loss
from .pipeline import TaskData, make_evaluator
from .tasks import TaskSpec
from .rundir import REPORT, RunDirError, check_same_run, claim, digest_module, read_json
from .train import RunReport, TrainConfig, make_accelerator, run_settings, should_compile, train
from .validate import SettingError

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


def ground_truth_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Cross-entropy (MSE for regression) averaged over the examples whose label is known: augmented
    copies carry `UNKNOWN_CLASS` / NaN. Sums over a clamped count, so a batch of copies only gives 0
    without a host sync."""
    if regression:
        known = ~torch.isnan(labels)
        err = (logits.float().squeeze(-1) - labels.float().nan_to_num()) ** 2 * known
        return err.sum() / known.sum().clamp_min(1)
    n = (labels != UNKNOWN_CLASS).sum().clamp_min(1)
    return F.cross_entropy(logits.float(), labels, ignore_index=UNKNOWN_CLASS, reduction="sum") / n


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


def supervised_loss(spec: TaskSpec):
    """Plain task loss: fine-tuning a teacher, or a binary pretrained model without distillation."""

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch.get("token_type_ids"))
        return ground_truth_loss(out.logits, batch["labels"], spec.is_regression)

    return loss


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


def parse_schedule(schedule: str | list[str]) -> list[str]:
    stages = schedule.split(",") if isinstance(schedule, str) else list(schedule)
    stages = [s.strip() for s in stages if s.strip()]
    if not stages:
        raise SettingError("schedule", "must list E-W-A stages, e.g. 32-32-32,1-1-2,1-1-1", schedule)
    for s in stages:
        QuantConfig.from_preset("bit", s)  # validates the E-W-A string with a clear message
    return stages


def stage_configs(method: str, schedule: str | list[str], quant_overrides: dict | None = None) -> list[QuantConfig]:
    """Each stage's `QuantConfig`: the method's preset at the stage's bits, with ``quant_overrides``
    (`bitbert.config.parse_quant_overrides`) applied; raises `ConfigError` for an invalid one."""
    return [QuantConfig.from_preset(method, bits).replace(**(quant_overrides or {}))
            for bits in parse_schedule(schedule)]


def stage_dir_name(index: int, bits: str) -> str:
    """The folder of a schedule's stage ``index`` (E-W-A ``bits``) inside the run's folder."""
    return f"stage{index}-{bits}"


def finished_report(run_dir: Path, settings: dict) -> RunReport | None:
    """The report of a run (a schedule stage or a fine-tune) that ran to the end and saved its model
    in ``run_dir/model``, else None; raises `ConfigError` if it was trained with other ``settings``
    (`run_settings`) or the report is corrupt."""
    path = run_dir / REPORT
    if not (path.is_file() and (run_dir / "model" / "model.safetensors").is_file()):
        return None
    saved = read_json(path)
    try:
        report = RunReport(**saved)
    except TypeError:
        raise RunDirError(f"{path}: not a bitbert run report") from None
    if report.finished:
        check_same_run(report.config, settings, path)
        return report
    return None


def run_identity(data: TaskData, teacher: nn.Module | None = None) -> dict[str, str]:
    """What a run is computed from besides its settings: the task, the data (tokenized: the files,
    columns, subsample and tokenizer all show) and the teacher's weights."""
    identity = {"task": data.spec.name, **data.digests()}
    if teacher is not None:
        identity["teacher"] = digest_module(teacher)
    return identity


def run_schedule(teacher: nn.Module, data: TaskData, method: str, schedule: str | list[str], cfg: TrainConfig,
                 out_dir: str | Path, tokenizer=None, losses: LossWeights | None = None,
                 quant_overrides: dict | None = None, resume: bool = False,
                 augment: AugmentConfig | None = None, augmented_file: dict | None = None) -> ScheduleResult:
    """BiT Algorithm 1: for each E-W-A stage, quantize the current teacher into a student, distill,
    and make the student the next teacher. Stage ``i`` lives in ``out_dir/stage{i}-{bits}`` with
    its checkpoint, metrics and final model; ``resume`` skips finished stages and continues the
    interrupted one from its checkpoint. ``quant_overrides`` changes `QuantConfig` fields of every
    stage (an ablation, e.g. ``{"binarize_pooler": False}``). ``augment`` extends the training set once, with the
    full-precision teacher's embedding neighbours, for every stage (`bitbert.augment`). ``augmented_file``
    (`bitbert.augmented.file_record`) says which augmented file ``data`` was loaded from, for the records."""
    out_dir = Path(out_dir)
    result = ScheduleResult()
    weights = losses or method_losses(method)
    acc = make_accelerator(cfg)
    current = teacher.to(acc.device).eval()
    stages = parse_schedule(schedule)
    configs = stage_configs(method, stages, quant_overrides)  # before any work: a bad combination fails now
    augment = augment if augment is not None and augment.copies else None
    data.check_fits(current.config)
    identity = run_identity(data, current)

    def stage_settings(bits: str) -> dict:
        """What a stage computes; a resume with other settings must not reuse or continue it."""
        extra = {**identity, "method": method, "bits": bits, "losses": dataclasses.asdict(weights),
                 "quant_overrides": quant_overrides or {}}
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
            current = io.load(stage_dir / "model", device=acc.device)
            result.stages.append(StageResult(bits, method, done, str(stage_dir / "model")))
            continue
        if acc.is_main_process:
            log.info("stage %d/%d: %s student at %s bits (embeddings-weights-activations), distilled from the %s",
                     i + 1, len(stages), method, bits, "teacher" if i == 0 else f"{stages[i - 1]} student")
        student = copy.deepcopy(current)
        binarize(student, qcfg)
        student.train()
        for p in student.parameters():
            p.requires_grad_(True)
        # fresh quantizers only: those QuantConfig.inherit_quantizers carried over keep their α
        calibrate(student, data.calibration_batches(cfg.batch_size), only_uncalibrated=True)
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
            io.save(student, stage_dir / "model", tokenizer)
        acc.wait_for_everyone()  # no process moves on (or may be killed and resumed) before the stage is saved
        result.stages.append(StageResult(bits, method, report, str(stage_dir / "model")))
        current = student.eval()
    result.student = current
    if acc.is_main_process:
        io.atomic_write(out_dir / "schedule.json", lambda p: p.write_text(json.dumps(
            {"method": method, "schedule": stages, "losses": dataclasses.asdict(weights),
             "augment": dataclasses.asdict(augment) if augment else None,
             **({"augmented_file": augmented_file} if augmented_file else {}),
             "stages": [s.to_dict() for s in result.stages]}, indent=2)))
    return result


def finetune(model: nn.Module, data: TaskData, cfg: TrainConfig, out_dir: str | Path, tokenizer=None,
             resume: bool = False, identity: dict[str, str] | None = None) -> RunReport:
    """Supervised fine-tuning (a full-precision teacher, or a BiPFT binary model without a teacher).
    The model is saved to ``out_dir/model``. ``identity`` (e.g. ``{"model": digest of its files}``)
    joins the task and data digests in what a resume must match."""
    out_dir = Path(out_dir)
    acc = make_accelerator(cfg)
    data.check_fits(model.config)
    settings = {**run_identity(data), **(identity or {})}
    claim(out_dir, run_settings(cfg, settings), resume)
    # Only fresh quantizers (e.g. a new pooler's) are calibrated: α learned in pretraining is kept.
    calibrate(model, data.calibration_batches(cfg.batch_size), only_uncalibrated=True)
    report = train(model, supervised_loss(data.spec), data.train_batches(cfg.batch_size, cfg.seed,
                   acc.device.type == "cuda"), make_evaluator(data, cfg.eval_batch_size), cfg, out_dir,
                   main_metric=data.spec.main_key, resume=resume, accelerator=acc, settings=settings)
    if report.finished and acc.is_main_process:
        io.save(acc.unwrap_model(model), out_dir / "model", tokenizer)
    acc.wait_for_everyone()  # every process may load the saved model next (the default job's teacher)
    return report
