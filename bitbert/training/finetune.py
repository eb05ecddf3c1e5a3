"""Supervised fine-tuning: a full-precision teacher, or a BiPFT binary pretrained model without one."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..quant import model_files
from ..quant.calibration import calibrate
from ..tasks.specs import TaskSpec
from .evaluation import make_evaluator
from .losses import ground_truth_loss
from .rundir import claim
from .task_data import TaskData, run_identity
from .train import RunReport, TrainConfig, make_accelerator, run_settings, train


def supervised_loss(spec: TaskSpec):
    """Plain task loss: fine-tuning a teacher, or a binary pretrained model without distillation."""

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch.get("token_type_ids"))
        return ground_truth_loss(out.logits, batch["labels"], spec.is_regression)

    return loss


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
        model_files.save(acc.unwrap_model(model), out_dir / "model", tokenizer)
    acc.wait_for_everyone()  # every process may load the saved model next (the default job's teacher)
    return report
