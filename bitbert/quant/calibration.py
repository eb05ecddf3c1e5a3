"""Explicit data-driven initialization of the activation scales α (BiT eq. 6 / 8).

The papers' code sets α lazily on the first training forward with a hidden flag and a host sync
every step. Here it is one visible call before training; the result lives in the state dict.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..core.config import ALPHA_INITS
from .quantizers import ActQuantizer


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], max_batches: int = 8,
              only_uncalibrated: bool = False, alpha_init: str = "optimal") -> int:
    """Set every elastic quantizer's α from the activations it sees on ``batches``.

    Quantizers are initialized in forward order, so each sees inputs produced by already
    calibrated (quantized) layers, as in training. α is averaged over up to ``max_batches``
    batches. ``only_uncalibrated`` keeps α already learned (e.g. by binary pretraining) and sets only
    the fresh ones. ``alpha_init`` is the 1-bit rule (`bitbert.quant.schedule.QuantInit.alpha_init`:
    ``optimal`` or ``wide``). Returns the number of quantizers calibrated.
    """
    if alpha_init not in ALPHA_INITS:
        raise ValueError(f"alpha_init={alpha_init!r} is not valid; choose one of {list(ALPHA_INITS)}")
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer) and m.kind == "elastic"
                  and not (only_uncalibrated and bool(m.calibrated))]
    if not quantizers:
        return 0
    seen: dict[int, int] = {}

    def hook(module: ActQuantizer, args: tuple) -> None:
        n = seen.get(id(module), 0)
        alpha = module.initial_alpha(args[0], alpha_init)
        module.alpha.copy_((module.alpha * n + alpha) / (n + 1) if n else alpha)
        seen[id(module)] = n + 1

    handles = [q.register_forward_pre_hook(hook) for q in quantizers]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        used = 0
        for batch in batches:
            if used >= max_batches:
                break
            model(**{k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
            used += 1
        if used == 0:
            raise ValueError("calibrate() got no batches")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for q in quantizers:
        q.calibrated.fill_(bool(q.calibrated) or id(q) in seen)
    return sum(id(q) in seen for q in quantizers)


def uncalibrated(model: nn.Module) -> list[str]:
    """Names of elastic quantizers whose α was never set from data."""
    return [n for n, m in model.named_modules()
            if isinstance(m, ActQuantizer) and m.kind == "elastic" and not bool(m.calibrated)]
