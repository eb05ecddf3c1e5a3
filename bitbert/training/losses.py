"""Distillation losses: logits (soft CE / MSE for regression), hidden states, attention, and
BiBERT's Direction-Matching Distillation (DMD) on Q/K/V similarity matrices."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.convert import base_model
from .augment import UNKNOWN_CLASS


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Σ_c −softmax(t/T)_c · log softmax(s/T)_c, averaged over the batch (BiT's logit loss)."""
    t = F.softmax(teacher.float() / temperature, dim=-1)
    return -(t * F.log_softmax(student.float() / temperature, dim=-1)).sum(-1).mean()


def logit_loss(student: torch.Tensor, teacher: torch.Tensor, regression: bool, temperature: float = 1.0) -> torch.Tensor:
    """Soft CE for classification; MSE for regression, whose single logit makes soft CE identically
    zero (the papers' STS-B bug)."""
    if regression:
        return F.mse_loss(student.float().squeeze(-1), teacher.float().squeeze(-1))
    return soft_cross_entropy(student, teacher, temperature)


def _check_depth(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> None:
    if len(student) != len(teacher):
        raise ValueError(f"student has {len(student)} hidden states, teacher {len(teacher)}: "
                         "hidden-state distillation needs the same depth")


def hidden_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over the embedding output and every layer of the MSE between hidden states (BiT eq. 2).

    Padding positions are excluded when ``mask`` (B, L) is given.
    """
    _check_depth(student, teacher)
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        diff = (s.float() - t.float()) ** 2
        if mask is not None:
            m = mask.unsqueeze(-1).to(diff.dtype)
            total = total + (diff * m).sum() / (m.sum() * diff.shape[-1]).clamp_min(1)
        else:
            total = total + diff.mean()
    return total


def hidden_direction(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over the embedding output and every layer of ‖Ĥ_s − Ĥ_t‖_F, Ĥ = H / ‖H‖_F per sample
    (BiBERT's hidden-state loss: direction only, so a binary student need not match the teacher's
    scale; its code normalised over the whole batch tensor). Padding positions are zeroed first."""
    _check_depth(student, teacher)
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        total = total + _direction_distance(_masked(s, mask).flatten(1), _masked(t, mask).flatten(1)).mean()
    return total


def attention_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over layers of the MSE between attention maps (optional; BiT found it unhelpful)."""
    return sum(F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher))


def attention_kl(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over layers of KL(teacher ‖ student) between attention distributions, averaged over heads
    and real query positions (MiniLM's self-attention distillation).

    Maps are (B, H, L, L). The student's is its attention before quantization (what
    `bitbert.quant.attention` returns as attention weights) or, for a bool map, the map normalised per
    row. A teacher compares two segments with a few heads whose queries find the same token in the
    other segment; this term pulls the student's maps toward them. With 1-bit activations in the
    first layers it does not bring them back (benchmarks/results/pair_control.json); the wider first
    layers of `bitbert.core.config.QuantConfig.early_layers` do.
    """
    _check_depth(student, teacher)
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        s, t = s.float(), t.float()
        s = s / s.sum(-1, keepdim=True).clamp_min(1e-9)  # a softmax row is unchanged; a bool row normalised
        kl = (t * (t.clamp_min(1e-9).log() - s.clamp_min(1e-9).log())).sum(-1)  # (B, H, L)
        if mask is None:
            total = total + kl.mean()
        else:
            w = mask[:, None, :].to(kl.dtype)
            total = total + (kl * w).sum() / (w.sum() * kl.shape[1]).clamp_min(1)
    return total


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    x = x.float()
    return x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)


def _direction_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a/‖a‖ − b/‖b‖‖ over the last dim. The unsquared norm (the paper's) keeps a unit-size
    gradient near the optimum; eps keeps it finite at zero distance."""
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return ((a - b) ** 2).sum(-1).add(1e-12).sqrt()


def _similarity(x: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample, per-head X·Xᵀ for X of shape (B, L, H·d), flattened to (B, H, L·L)."""
    b, n, _ = x.shape
    xh = _masked(x, mask).view(b, n, heads, -1).transpose(1, 2)
    return (xh @ xh.transpose(-1, -2)).flatten(2)


def dmd_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], heads: int,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """BiBERT Direction-Matching Distillation: Σ over captured Q/K/V tensors of ‖P_s − P_t‖_F
    (BiBERT eq. 13, unsquared), averaged over batch and heads, with P = X·Xᵀ/‖X·Xᵀ‖ normalised
    per sample and head — the paper's intent; its code normalised over the whole batch tensor."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        total = total + _direction_distance(_similarity(s, heads, mask), _similarity(t, heads, mask)).mean()
    return total


class QKVCapture:
    """Records the outputs of every layer's query/key/value projections during a forward."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []

    def clear(self) -> None:
        self.tensors = []


@contextlib.contextmanager
def capture_qkv(model: nn.Module) -> Iterator[QKVCapture]:
    """Context in which ``capture.tensors`` collects [q0, k0, v0, q1, ...] of each forward."""
    cap = QKVCapture()
    handles = []
    for layer in base_model(model).encoder.layer:
        sa = layer.attention.self
        for proj in (sa.query, sa.key, sa.value):
            handles.append(proj.register_forward_hook(lambda m, a, out: cap.tensors.append(out)))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()


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
