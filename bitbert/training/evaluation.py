"""Dev-set metrics of a PyTorch classifier or a packed engine (`make_evaluator`)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..core.validate import integer
from ..tasks.metrics import compute_metrics
from .task_data import TaskData
from .train import evaluate_batches


def engine_logits(engine: Any, batches: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """`evaluate_batches` for a packed model (`bitbert.deploy.engine.PackedEngine`) on the CPU."""
    logits, labels = [], []
    for batch in batches:
        logits.append(torch.from_numpy(engine.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                                                     batch["token_type_ids"].numpy())))
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(labels)


def packed_tokenizer(engine: Any):
    """The tokenizer embedded in a packed file as a `PreTrainedTokenizerFast` (what `tokenize` takes)."""
    from transformers import PreTrainedTokenizerFast

    backend = engine.tokenizer  # EngineError when the file was exported without one
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=backend.id_to_token(engine.pad_id))


def make_evaluator(data: TaskData, batch_size: int, columns: list[int] | None = None):
    """``evaluate(model) -> metrics``: the first dev split's metrics unprefixed, others prefixed.
    ``model`` is a PyTorch classifier (run on the device of its parameters) or a packed engine;
    ``columns``: the model output of each of the task's classes (`bitbert.tasks.label_map.match_labels`)."""
    integer("batch_size", batch_size, 1)
    dev = data.dev_batches(batch_size)

    def evaluate(model: nn.Module | Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, (name, batches) in enumerate(dev.items()):
            if isinstance(model, nn.Module):
                logits, labels = evaluate_batches(model, batches, next(model.parameters()).device)
            else:
                logits, labels = engine_logits(model, batches)
            if columns is not None:
                logits = logits[:, columns]
            preds = logits.squeeze(-1) if data.spec.is_regression else logits.argmax(-1)
            metrics = compute_metrics(data.spec, preds.cpu().numpy(), labels.cpu().numpy())
            out.update(metrics if i == 0 else {f"{name}/{k}": v for k, v in metrics.items()})
        return out

    return evaluate
