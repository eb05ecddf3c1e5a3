"""Distillation losses: logits (soft CE / MSE for regression), hidden states, attention, and
BiBERT's Direction-Matching Distillation (DMD) on Q/K/V similarity matrices."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .convert import base_model


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


def hidden_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over the embedding output and every layer of the MSE between hidden states (BiT eq. 2).

    Padding positions are excluded when ``mask`` (B, L) is given.
    """
    if len(student) != len(teacher):
        raise ValueError(f"student has {len(student)} hidden states, teacher {len(teacher)}: "
                         "hidden-state distillation needs the same depth")
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        diff = (s.float() - t.float()) ** 2
        if mask is not None:
            m = mask.unsqueeze(-1).to(diff.dtype)
            total = total + (diff * m).sum() / (m.sum() * diff.shape[-1]).clamp_min(1)
        else:
            total = total + diff.mean()
    return total


def attention_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over layers of the MSE between attention maps (optional; BiT found it unhelpful)."""
    return sum(F.mse_loss(s.float(), t.float()) for s, t in zip(student, teacher))


def _similarity(x: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample, per-head P = X·Xᵀ / ‖X·Xᵀ‖_F for X of shape (B, L, H·d)."""
    b, n, _ = x.shape
    x = x.float()
    if mask is not None:
        x = x * mask.unsqueeze(-1).to(x.dtype)
    xh = x.view(b, n, heads, -1).transpose(1, 2)
    p = xh @ xh.transpose(-1, -2)
    return p / p.flatten(2).norm(dim=-1).clamp_min(1e-8)[..., None, None]


def dmd_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], heads: int,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """BiBERT Direction-Matching Distillation: Σ over captured Q/K/V tensors of
    ‖P_s − P_t‖² (summed over the L×L map, averaged over batch and heads), with P normalised per
    sample and head — the paper's intent; its code normalised over the whole batch tensor."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        d = _similarity(s, heads, mask) - _similarity(t, heads, mask)
        total = total + (d**2).sum(dim=(-1, -2)).mean()
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
