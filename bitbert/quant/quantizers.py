"""Quantizers: autograd Functions (forward + straight-through backward) and the modules that own
their learned parameters.

Notation: g is the incoming gradient ∂L/∂y. ``sgn(u)`` is +1 for u ≥ 0 and −1 otherwise (sign(0)
must not be 0, or a "binary" tensor would have three values). Sums run over every element that
shares the parameter (all elements for a scalar α; all but the channel axis for a per-channel β).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd import Function

from ..core.config import levels


def to_numpy(t: torch.Tensor):
    """A float32 numpy copy of a parameter (for the packed file)."""
    return t.detach().float().cpu().numpy()


def sgn(x: torch.Tensor) -> torch.Tensor:
    """±1 sign with sgn(0) = +1."""
    # Not torch.where(x >= 0, 1.0, -1.0): its Python scalars become CPU tensors copied to the
    # device, which a CUDA-graph capture refuses.
    return (x >= 0).to(x.dtype).mul_(2).sub_(1)


def _sum_to(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a broadcast gradient back to the shape of the parameter it belongs to."""
    if like.dim() == 0:
        return t.sum().reshape(())
    return t.reshape(-1, like.shape[-1]).sum(0)


class BinaryWeight(Function):
    """Weight binarizer (BWN, optionally mean-centred as in BiT §3.2).

    Forward:  W_B = s · sgn(W − c), with s = mean|W| (of the uncentred W) and c = mean(W) when
              centred, else c = 0; s and c are per tensor, or per row (dim 0) when ``per_row``.
    Backward: ∂L/∂W = g (identity straight-through; weights are not clipped, BiT §3.2).
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, centered: bool, per_row: bool) -> torch.Tensor:  # type: ignore[override]
        dims = tuple(range(1, w.dim())) if per_row else tuple(range(w.dim()))
        scale = w.abs().mean(dim=dims, keepdim=True)
        center = w.mean(dim=dims, keepdim=True) if centered else 0.0
        return scale * sgn(w - center)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        return g, None, None


class SignSTE(Function):
    """Plain sign with clipped straight-through gradient (BiBERT, baseline).

    Forward:  y = sgn(x) ∈ {−1, +1}.
    Backward: ∂L/∂x = g · 1[|x| ≤ 1].
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return sgn(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class BoolSTE(Function):
    """BiBERT's Bi-Attention map: bool(x) = (sgn(x) + 1) / 2 ∈ {0, 1}.

    Forward:  y = 1[x ≥ 0].
    Backward: ∂L/∂x = g · ½ · 1[|x| ≤ 1] (the clipped straight-through gradient of (sgn + 1)/2).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * 0.5 * (x.abs() <= 1).to(g.dtype)


class ElasticSign(Function):
    """BiT's elastic signed 1-bit binarizer (§3.3, signed case).

    Forward:  y = α · sgn(x − β).
    Backward: with m = 1[|x − β| ≤ α]:
              ∂L/∂x = g · m;   ∂L/∂α = Σ g · sgn(x − β);   ∂L/∂β = −Σ g · m.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        u = x - beta
        s = sgn(u)
        ctx.save_for_backward(u, s, alpha, beta)
        return alpha * s

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        u, s, alpha, beta = ctx.saved_tensors
        m = (u.abs() <= alpha).to(g.dtype)
        gm = g * m
        return gm, _sum_to(g * s, alpha), -_sum_to(gm, beta)


class ElasticQuant(Function):
    """BiT's elastic binarizer and its multi-bit (LSQ) generalisation, levels Qn..Qp.

    Forward:  u = (x − β)/α;  q = round(clip(u, Qn, Qp));  y = α · q.
              Qn=0, Qp=1 is the unsigned 1-bit binarizer of eq. 9: y ∈ {0, α}, 1 iff x ≥ β + α/2.
    Backward: with m = 1[Qn ≤ u < Qp] (eq. 10-11 use β ≤ x < α + β for Qn=0, Qp=1):
              ∂L/∂x = g · m;
              ∂L/∂α = Σ g · (m · (q − u) + 1[u < Qn] · Qn + 1[u ≥ Qp] · Qp)      (eq. 10);
              ∂L/∂β = −Σ g · m                                                   (eq. 11).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, qn: int, qp: int) -> torch.Tensor:  # type: ignore[override]
        u = (x - beta) / alpha
        q = torch.clamp(torch.round(u), qn, qp)
        ctx.save_for_backward(u, q, alpha, beta)
        ctx.levels = (qn, qp)
        return alpha * q

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        u, q, alpha, beta = ctx.saved_tensors
        qn, qp = ctx.levels
        below, above = (u < qn).to(g.dtype), (u >= qp).to(g.dtype)
        m = 1.0 - below - above
        d_alpha = m * (q - u) + below * qn + above * qp
        gm = g * m
        return gm, _sum_to(g * d_alpha, alpha), -_sum_to(gm, beta), None, None


class ActQuantizer(nn.Module):
    """Activation quantizer for one site, owning its learned scale α (per layer) and threshold β.

    ``kind='elastic'``: 1-bit signed → ElasticSign, 1-bit unsigned → ElasticQuant(0, 1),
    b-bit → ElasticQuant with LSQ levels. ``kind='sign'``: SignSTE (no parameters; 1-bit only,
    multi-bit falls back to elastic). α starts at 1 and must be set from data with
    :func:`bitbert.calibrate` (BiT eq. 6 / 8); ``calibrated`` (a state-dict buffer) records that.
    ``channels`` gives β one value per feature (the linear-input sites); otherwise β is a scalar.
    """

    def __init__(self, bits: int, signed: bool, kind: str = "elastic", channels: int | None = None) -> None:
        super().__init__()
        self.bits, self.signed = bits, signed
        self.kind = "elastic" if bits > 1 else kind
        if self.kind == "elastic":
            self.alpha = nn.Parameter(torch.ones(()))
            self.beta = nn.Parameter(torch.zeros(channels) if channels else torch.zeros(()))
            self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "sign":
            return SignSTE.apply(x)
        alpha, beta = self.alpha.to(x.dtype), self.beta.to(x.dtype)
        if self.bits == 1 and self.signed:
            return ElasticSign.apply(x, alpha, beta)
        qn, qp = levels(self.bits, self.signed)
        return ElasticQuant.apply(x, alpha, beta, qn, qp)

    @torch.no_grad()
    def initial_alpha(self, x: torch.Tensor, rule: str = "optimal") -> torch.Tensor:
        """The data-driven initial α for input x by ``rule`` (`bitbert.quant.schedule.QuantInit.alpha_init`).

        ``optimal``: 1-bit signed α* = mean|x − β| (BiT eq. 6); 1-bit unsigned α* = mean(x | x − β ≥
        α*/2), the fixed point of eq. 8 with its threshold taken relative to α (so it does not depend
        on the input's scale), iterated from 2·mean(x). ``wide`` (BiT's code): 1-bit signed
        2·mean|x − β|, unsigned 4·mean|x − β|. Multi-bit, either way: LSQ's 2·mean|x − β| / √Qp.
        """
        u = (x - self.beta).float().flatten()
        if self.bits == 1 and rule == "wide":
            return ((2 if self.signed else 4) * u.abs().mean()).clamp_min(1e-8)
        if self.bits == 1 and self.signed:
            return u.abs().mean().clamp_min(1e-8)
        if self.bits == 1:
            u = u.clamp_min(0)
            alpha = 2 * u.mean()
            for _ in range(20):
                keep = u >= alpha / 2
                if not keep.any():
                    break
                alpha = u[keep].mean()
            return alpha.clamp_min(1e-8)
        _, qp = levels(self.bits, self.signed)
        return (2 * u.abs().mean() / math.sqrt(qp)).clamp_min(1e-8)

    def packed_record(self):
        """This quantizer as the packed file stores it (`bitbert.core.packed_schema.QuantizerRecord`)."""
        from ..core.packed_schema import QuantizerRecord

        if self.kind == "sign":  # SignSTE: ±1 whatever the input's signedness
            return QuantizerRecord("sign", 1, True)
        return QuantizerRecord("elastic", self.bits, self.signed, to_numpy(self.alpha).reshape(1),
                               to_numpy(self.beta).reshape(-1))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, {'signed' if self.signed else 'unsigned'}, kind={self.kind}"
