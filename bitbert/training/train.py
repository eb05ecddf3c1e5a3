"""The training loop shared by fine-tuning, distillation and pretraining.

On accelerate: CPU, one GPU (bf16 autocast) or several GPUs under ``accelerate launch``.
Checkpoints hold everything needed to continue bit-for-bit on CPU (weights, optimizer, schedule,
RNG, data position, the logged loss average) and are written atomically; ``resume=True`` continues
from the last one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..core.atomic import atomic_write
from ..core.validate import SEED_MAX, finite, integer, one_of
from ..quant.convert import quantizer_parameters
from .graphs import GraphCaptureError, GraphedStep, graphs_wanted
from .rundir import CHECKPOINT, METRICS, PROGRESS, REPORT, RunDirError, check_same_run, read_json, resume_settings

log = logging.getLogger("bitbert")


LR_SCHEDULES = ("linear", "constant")
MIN_LENGTH = 3  # [CLS], one token, [SEP]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run (one stage of a schedule)."""

    epochs: float = 3.0
    lr: float = 5e-5
    quant_lr: float = 1e-4  # α/β: own group, no weight decay (BiT)
    weight_decay: float = 0.01
    batch_size: int = 32
    eval_batch_size: int = 256
    max_length: int = 128
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # or "constant" (BiPFT fine-tuning)
    max_grad_norm: float = 1.0
    eval_every: int = 0  # steps; 0 = at the end of every epoch
    log_every: int = 50
    seed: int = 42
    mixed_precision: str = "auto"  # auto: bf16 on GPU, none on CPU
    # torch.compile the forward ("auto" = on GPU). Off by default: with bucketed variable-length
    # batches the compile time (minutes, several graphs) outweighed the gain in our runs.
    compile: str = "off"
    # Replay each step's forward + backward as a CUDA graph ("auto" = single-process CUDA): the
    # eager step is launch-bound (thousands of tiny quantizer kernels), see bitbert/training/graphs.py.
    cuda_graphs: str = "auto"
    max_steps: int = 0  # > 0: stop (checkpointed) after this many steps; resume continues the schedule

    def __post_init__(self) -> None:
        finite("epochs", self.epochs, 0, above=True)
        finite("lr", self.lr, 0, above=True)
        finite("quant_lr", self.quant_lr, 0)
        finite("weight_decay", self.weight_decay, 0)
        finite("warmup_ratio", self.warmup_ratio, 0, high=1, below=True)
        finite("max_grad_norm", self.max_grad_norm, 0)
        integer("batch_size", self.batch_size, 1)
        integer("eval_batch_size", self.eval_batch_size, 1)
        integer("max_length", self.max_length, MIN_LENGTH)
        integer("eval_every", self.eval_every, 0)
        integer("log_every", self.log_every, 1)
        integer("seed", self.seed, 0, SEED_MAX)
        integer("max_steps", self.max_steps, 0)
        one_of("schedule", self.schedule, LR_SCHEDULES)
        one_of("mixed_precision", self.mixed_precision, ("auto", "no", "bf16", "fp16"))
        one_of("compile", self.compile, ("auto", "on", "off"))
        one_of("cuda_graphs", self.cuda_graphs, ("auto", "on", "off"))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class Batches(Protocol):
    def __iter__(self): ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class RunReport:
    """What a run achieved: metrics at every evaluation, the best and the final one."""

    main_metric: str
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    final: dict | None = None
    steps: int = 0
    total_steps: int = 0
    wall_s: float = 0.0  # training-loop time summed over resumed segments
    examples_per_s: float = 0.0  # of the last segment
    config: dict = field(default_factory=dict)  # what the run was trained with (see `run_settings`)

    @property
    def finished(self) -> bool:
        return self.total_steps > 0 and self.steps >= self.total_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_settings(cfg: TrainConfig, extra: Mapping[str, Any] | None = None) -> dict:
    """The JSON-able settings a run records (``cfg``'s and ``extra``'s: the teacher's and the data's
    digests, loss weights, ...) less those a resume may change, so that a resume can refuse a
    different run (`bitbert.training.rundir.claim`)."""
    return resume_settings({**dataclasses.asdict(cfg), **(extra or {})})


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def remove_checkpoint(run_dir: str | Path) -> int:
    """Delete a finished run's resume checkpoint (its model and report stay); returns the bytes freed."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return 0
    size = path.stat().st_size
    path.unlink()
    return size


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    quant = {id(p) for p in quantizer_parameters(model)}
    decay, no_decay, qparams = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in quant:
            qparams.append(p)
        elif p.dim() < 2 or "LayerNorm" in name or name.endswith("bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr}]
    if qparams:
        groups.append({"params": qparams, "weight_decay": 0.0, "lr": cfg.quant_lr})
    groups = [g for g in groups if g["params"]]
    try:  # fused AdamW: one kernel on GPU, and ~2x faster than the default loop on CPU
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError):  # a device without a fused kernel
        return torch.optim.AdamW(groups)


def lr_lambda(total: int, cfg: TrainConfig) -> Callable[[int], float]:
    warmup = int(total * cfg.warmup_ratio)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


class MetricsLog:
    """JSONL (always) and TensorBoard (when installed) logging of scalars. Rows after ``start_step``
    (written by a segment that was cut after its last checkpoint) are dropped first: a resume
    logs them again."""

    def __init__(self, out_dir: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        self.path = out_dir / METRICS
        self.tb = None
        if enabled:
            self._drop_after(start_step)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
            except Exception:  # tensorboard is optional
                self.tb = None

    def _drop_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line + "\n")
        atomic_write(self.path, lambda p: p.write_text("".join(kept), encoding="utf-8"))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def should_compile(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())


class TrainStep:
    """One optimisation step: forward + backward (a replayed CUDA graph where possible, else eager,
    optionally torch.compiled), gradient clipping, optimizer and scheduler step, zero_grad.

    Shared by :func:`train` and the speed benchmark so both measure the same step.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict], torch.Tensor],
                 optimizer: torch.optim.Optimizer, acc, cfg: TrainConfig, scheduler=None) -> None:
        self.model, self.loss_fn, self.optimizer, self.acc, self.cfg = model, loss_fn, optimizer, acc, cfg
        self.scheduler = scheduler
        self.fwd: nn.Module = model
        self.graphed: GraphedStep | None = None
        self.steps = 0
        # fp16 needs a loss scaler around backward, which the captured step does not hold.
        if (graphs_wanted(cfg.cuda_graphs, acc.device, acc.num_processes) and acc.mixed_precision in ("no", "bf16")
                and getattr(loss_fn, "graphable", True)):
            self.graphed = GraphedStep(model, loss_fn, torch.bfloat16 if acc.mixed_precision == "bf16" else None)
        # Losses that hook into modules per step (DMD) say compilable=False: hooks would force recompiles.
        elif should_compile(cfg, acc.device) and getattr(loss_fn, "compilable", True):
            self.fwd = torch.compile(model, dynamic=True)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Run one step on a host ``batch``; returns the loss (on device, not synced)."""
        acc = self.acc
        if self.graphed is not None:  # pinned: the host-to-device copy then needs no stream sync
            batch = {k: v.pin_memory() for k, v in batch.items()}
        batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
        loss = None
        if self.graphed is not None:
            try:
                loss = self.graphed(batch)  # forward + backward replayed; None: shape not graphed
            except GraphCaptureError as e:
                log.warning("CUDA graph capture failed (%s); continuing eagerly", e)
                self.graphed = None
        if loss is None:
            with acc.autocast():
                try:
                    loss = self.loss_fn(self.fwd, batch)
                except Exception as e:  # a compiler failure must not cost the run: go eager
                    if self.fwd is self.model or self.steps:
                        raise
                    log.warning("torch.compile failed (%s: %s); continuing without it", type(e).__name__, e)
                    self.fwd = self.model
                    getattr(self.loss_fn, "disable_compile", lambda: None)()
                    loss = self.loss_fn(self.fwd, batch)
            acc.backward(loss)
        if self.cfg.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        # Graph replays accumulate into the same .grad tensors: zero them, keep them.
        self.optimizer.zero_grad(set_to_none=self.graphed is None)
        self.steps += 1
        return loss


def train(model: nn.Module, loss_fn: Callable[[nn.Module, dict], torch.Tensor], batches: Batches,
          evaluate: Callable[[nn.Module], dict] | None, cfg: TrainConfig, out_dir: str | Path,
          main_metric: str = "loss", resume: bool = False, accelerator=None,
          on_step: Callable[[int], bool | None] | None = None, presharded: bool = False,
          settings: dict | None = None) -> RunReport:
    """Train ``model`` on ``batches`` minimising ``loss_fn(model, batch)``.

    Evaluates with ``evaluate(model) -> metrics`` every ``cfg.eval_every`` steps (or each epoch)
    and at the end; keeps a checkpoint in ``out_dir/checkpoint.pt`` (and the report so far in
    ``out_dir/progress.json``) after each evaluation. With ``resume`` an existing checkpoint is
    loaded and training continues where it stopped. Under
    several processes each takes every world_size-th batch, unless ``presharded``: then each
    process's ``batches`` already yields only its own shard (a rank-sharded stream), and
    ``len(batches)`` is the number of batches of one process. ``on_step(step)`` runs after every
    step; a true return value stops training there, checkpointed (e.g. a time limit).
    ``settings`` (JSON-able, e.g. the loss weights) join ``cfg``'s in the checkpoint: a resume with
    different ones raises instead of continuing someone else's run. A training loss that turns NaN
    or infinite raises `TrainingDiverged` at the next log step, evaluation or checkpoint, before
    anything is written: the last good checkpoint stays.
    """
    run = _Run(model, loss_fn, batches, evaluate, cfg, Path(out_dir), main_metric,
               accelerator or make_accelerator(cfg), presharded, settings)
    if resume:
        run.restore()
    run.loop(on_step)
    return run.finish()


class _Run:
    """One call of :func:`train`, in named steps: set up (optimizer, schedule, accelerator), restore
    a checkpoint, loop over the batches (log, evaluate, checkpoint), finish (the report)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict], torch.Tensor], batches: Batches,
                 evaluate: Callable[[nn.Module], dict] | None, cfg: TrainConfig, out_dir: Path, main_metric: str,
                 acc, presharded: bool, settings: dict | None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.cfg, self.acc, self.batches, self.evaluate = out_dir, cfg, acc, batches, evaluate
        self.main_metric, self.presharded = main_metric, presharded
        torch.manual_seed(cfg.seed)
        model.to(acc.device)
        optimizer = make_optimizer(model, cfg)
        self.per_epoch = len(batches) if presharded else len(batches) // acc.num_processes
        if self.per_epoch < 1:
            raise ValueError(f"{len(batches)} batches cannot feed {acc.num_processes} processes: too little data")
        self.total = max(1, math.ceil(self.per_epoch * cfg.epochs))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.total, cfg))
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.loss_fn = loss_fn
        self.report = RunReport(main_metric, config=run_settings(cfg, settings))
        self.step, self.running = 0, None  # running: the logged training loss, an exponential average
        self.ckpt_path = out_dir / CHECKPOINT
        self.good_step = 0  # the step of the last checkpoint with a finite loss
        self.diverged = torch.zeros((), dtype=torch.bool, device=acc.device)  # any non-finite loss since: no host sync
        self.better = (lambda a, b: a < b) if main_metric == "loss" else (lambda a, b: a > b)
        self.t0, self.seen, self.wall_before, self.first_step = time.perf_counter(), 0, 0.0, 0
        self.stop_at = self.total

    def restore(self) -> None:
        """Continue from the checkpoint in the run's folder, if there is one (of the same run)."""
        if not self.ckpt_path.is_file():
            return
        state = _load_checkpoint(self.ckpt_path)
        saved = json.loads(state["report"])
        check_same_run(saved.get("config", {}), self.report.config, self.ckpt_path)
        self.acc.unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.load_state_dict(state["batches"])
        _set_rng_state(state["rng"])
        self.step = self.good_step = int(state["step"])
        if state.get("running_loss") is not None:
            self.running = state["running_loss"].to(self.acc.device)
        self.report = RunReport(**{**saved, "config": self.report.config})
        log.info("resumed from %s at step %d", self.ckpt_path, self.step)

    def check_finite(self) -> None:
        """Raise `TrainingDiverged` if any loss since the last check was not finite. Agreed by all
        processes (called at the same steps in each): one stopping alone would hang the others."""
        acc = self.acc
        bad = self.diverged if acc.num_processes == 1 else acc.reduce(self.diverged.float(), reduction="sum") > 0
        if bool(bad):
            kept = f"the last good checkpoint, {self.ckpt_path} at step {self.good_step}, is kept" if self.good_step \
                else "no checkpoint was written"
            raise TrainingDiverged(f"the training loss became NaN or infinite before step {self.step}; {kept}. "
                                   "Lower the learning rate (lr) or check the data's labels")

    def checkpoint(self) -> None:
        self.check_finite()  # never replace a good checkpoint by a diverged one
        report, acc = self.report, self.acc
        report.wall_s = self.wall_before + time.perf_counter() - self.t0  # what a resume adds on to
        report.steps, report.total_steps = self.step, self.total
        self.good_step = self.step
        if not acc.is_main_process:
            return
        state = {"model": acc.unwrap_model(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "batches": self.batches.state_dict(), "rng": _rng_state(),
                 "step": self.step, "report": json.dumps(report.to_dict()),
                 "running_loss": None if self.running is None else self.running.detach().cpu()}

        def save(p: Path) -> None:
            with p.open("wb") as f:  # a Python file: a full disk is an OSError naming the file
                torch.save(state, f)

        atomic_write(self.ckpt_path, save)
        # the run so far, small and readable: what is left of a run cut where its checkpoint cannot travel
        atomic_write(self.out_dir / PROGRESS, lambda p: p.write_text(json.dumps(report.to_dict(), indent=2)))

    def run_eval(self) -> None:
        if self.evaluate is None:
            return
        self.check_finite()  # a diverged model is not worth evaluating
        self.model.eval()  # also for evaluators other than evaluate_batches (BiPFT's held-out loss)
        with torch.no_grad(), self.acc.autocast():
            metrics = self.evaluate(self.acc.unwrap_model(self.model))
        self.model.train()
        metrics = {"step": self.step, **metrics}
        report = self.report
        report.history.append(metrics)
        report.final = metrics
        if report.best is None or self.better(metrics[self.main_metric], report.best[self.main_metric]):
            report.best = metrics
        self.logger.write(self.step, {f"eval/{k}": v for k, v in metrics.items() if k != "step"})

    def talk(self) -> None:
        """One line a log file keeps (the tqdm bar hides itself off a terminal)."""
        if not self.acc.is_main_process:
            return
        elapsed = time.perf_counter() - self.t0
        done = self.step - self.first_step
        final = self.report.final
        dev = final if self.evaluate is not None and final and final["step"] == self.step else None
        log.info(progress_line(self.out_dir.name, self.step, self.total, self.per_epoch, float(self.running), dev,
                               self.main_metric, self.seen * self.acc.num_processes / max(elapsed, 1e-9),
                               elapsed / max(done, 1) * (self.stop_at - self.step)))

    def loop(self, on_step: Callable[[int], bool | None] | None) -> None:
        """Train until the schedule's end, ``cfg.max_steps`` or ``on_step`` says stop."""
        from tqdm.auto import tqdm

        cfg, acc, batches = self.cfg, self.acc, self.batches
        self.logger = MetricsLog(self.out_dir, acc.is_main_process, self.step)
        self.stepper = TrainStep(self.model, self.loss_fn, self.optimizer, acc, cfg, self.scheduler)
        progress = tqdm(total=self.total, initial=self.step, disable=True if not acc.is_main_process else None,
                        desc=self.out_dir.name, leave=False)
        eval_every = cfg.eval_every or self.per_epoch
        self.model.train()
        self.t0, self.seen, self.wall_before = time.perf_counter(), 0, self.report.wall_s
        epoch = batches.state_dict()["epoch"]
        self.stop_at = min(self.total, cfg.max_steps) if cfg.max_steps else self.total
        self.first_step = self.step
        if acc.is_main_process:
            log.info("%s: %d steps (%g epoch%s of %d batches of %d)%s", self.out_dir.name, self.total, cfg.epochs,
                     "" if cfg.epochs == 1 else "s", self.per_epoch,
                     cfg.batch_size, f", resuming at step {self.step}" if self.step else "")
        while self.step < self.stop_at:
            batches.set_epoch(epoch)
            for batch in batches:
                if not self.presharded and \
                        (batches.state_dict()["batches_done"] - 1) % acc.num_processes != acc.process_index:
                    continue
                self._train_step(batch)
                progress.update(1)
                step = self.step
                if step % cfg.log_every == 0:  # the only host sync of the step loop
                    self.check_finite()
                    self.logger.write(step, {"train/loss": float(self.running),
                                             "train/lr": self.scheduler.get_last_lr()[0]})
                if step % eval_every == 0 or step == self.total:
                    self.run_eval()
                    self.checkpoint()
                elif step == self.stop_at:
                    self.checkpoint()
                if step % eval_every == 0 or step % self.per_epoch == 0 or step in (self.total, self.stop_at):
                    self.talk()
                if on_step is not None and on_step(step) and step < self.stop_at:
                    self.stop_at = step
                    self.checkpoint()
                if step >= self.stop_at:
                    break
            epoch += 1
        progress.close()

    def _train_step(self, batch: dict) -> None:
        loss = self.stepper(batch).detach().float()
        self.step += 1
        self.seen += batch["input_ids"].shape[0]
        self.diverged |= ~torch.isfinite(loss)
        self.running = loss.clone() if self.running is None else 0.9 * self.running + 0.1 * loss

    def finish(self) -> RunReport:
        """The report of this call (also written to the run's folder)."""
        self.check_finite()
        report, acc = self.report, self.acc
        report.steps, report.total_steps = self.step, self.total
        segment_s = time.perf_counter() - self.t0
        report.examples_per_s = self.seen * acc.num_processes / max(segment_s, 1e-9)
        report.wall_s = self.wall_before + segment_s
        if acc.is_main_process:
            atomic_write(self.out_dir / REPORT, lambda p: p.write_text(json.dumps(report.to_dict(), indent=2)))
        return report


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


def progress_line(name: str, step: int, total: int, per_epoch: int, loss: float, dev: dict | None,
                  main_metric: str, examples_per_s: float, eta_s: float) -> str:
    """``stage0-1-1-2 epoch 2/3 step 126/189 | loss 0.4123 | dev accuracy 81.25 | 412 ex/s | ETA 1m05s``."""
    epoch, epochs = math.ceil(step / per_epoch), math.ceil(total / per_epoch)
    parts = [f"{name} epoch {epoch}/{epochs} step {step}/{total}", f"loss {loss:.4f}"]
    if dev is not None:
        parts.append(f"dev {main_metric} {dev[main_metric]:.2f}")
    parts += [f"{examples_per_s:.0f} ex/s", f"ETA {_duration(eta_s)}"]
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `train`; a truncated or corrupt one is a one-line error naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, unpickling and EOF errors of a cut or damaged file
        raise RunDirError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "delete it to restart this run from its beginning") from None
    missing = {"model", "optimizer", "scheduler", "batches", "rng", "step", "report"} - set(state) \
        if isinstance(state, dict) else {"everything"}
    if missing:
        raise RunDirError(f"{path}: not a bitbert checkpoint (lacks {sorted(missing)})")
    return state


def evaluate_batches(model: nn.Module, batches: Iterable[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated logits and labels of ``model`` over ``batches`` (in order), in eval mode and
    without autograd (a kept graph grows with the dev set: 20 GB for a binary MiniLM on SST-2);
    the model's train/eval mode is restored afterwards."""
    logits, labels = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch.get("token_type_ids"))
                logits.append(out.logits.float())
                labels.append(batch["labels"])
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)
