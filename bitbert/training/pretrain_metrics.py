"""What a BiPFT pretraining run measures: steady-state throughput and the held-out MLM (and NSP)
metrics."""
from __future__ import annotations

import time

import torch
from torch import nn

from ..tasks.corpus import IGNORE_INDEX
from .pretrain_objective import mlm_loss


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
