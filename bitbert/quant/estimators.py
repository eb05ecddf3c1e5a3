"""BiPFT's low-rank estimators of the binarization residual polynomials in self-attention.

Binarizing Q, K and V drops the residual terms of (Q_b + ΔQ)(K_b + ΔK)ᵀ and A_b(V_b + ΔV). BiPFT
models them from the layer input h with rank-r full-precision maps, per head:
    scores += q_m(h)·k_p(h)ᵀ + q_p(h)·k_m(h)ᵀ + q_p(h)·k_p(h)ᵀ     (before the 1/√d scaling)
    context += A_b · v_p(h)
Unlike the public code (12 heads hard-coded) any head count and hidden size work.
"""
from __future__ import annotations

import torch
from torch import nn


class LowRankResidual(nn.Module):
    """Rank-``rank`` estimators for one attention layer with ``heads`` heads of size ``head_dim``."""

    def __init__(self, hidden: int, heads: int, head_dim: int, rank: int) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.heads, self.head_dim, self.rank = heads, head_dim, rank
        self.qk = nn.Linear(hidden, 4 * heads * rank, bias=False)  # q_p, k_p, q_m, k_m in one matmul
        self.v_down = nn.Linear(hidden, rank, bias=False)
        self.v_up = nn.Linear(rank, heads * head_dim, bias=False)
        nn.init.normal_(self.qk.weight, std=hidden**-0.5)
        # q_p, k_p and v_up start at zero so a fresh estimator does not change the model's output.
        with torch.no_grad():
            self.qk.weight[: 2 * heads * rank].zero_()
        nn.init.zeros_(self.v_up.weight)

    def _heads(self, x: torch.Tensor, width: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, width).transpose(1, 2)

    def score_residual(self, h: torch.Tensor) -> torch.Tensor:
        """(B, H, L, L) term added to QKᵀ before scaling."""
        q_p, k_p, q_m, k_m = (self._heads(t, self.rank) for t in self.qk(h).chunk(4, dim=-1))
        return q_m @ k_p.transpose(-1, -2) + q_p @ (k_m + k_p).transpose(-1, -2)

    def value_residual(self, h: torch.Tensor) -> torch.Tensor:
        """(B, H, L, d) term v_p(h) whose product with the binary attention map joins the context."""
        return self._heads(self.v_up(self.v_down(h)), self.head_dim)

    def packed_record(self):
        """These estimators as the packed file stores them (`bitbert.core.packed_schema.ResidualRecord`)."""
        from ..core.packed_schema import LinearRecord, ResidualRecord

        def record(linear: nn.Linear) -> LinearRecord:
            return LinearRecord(linear.in_features, linear.out_features, False,
                                weight=linear.weight.detach().float().cpu().numpy())

        return ResidualRecord(self.rank, record(self.qk), record(self.v_down), record(self.v_up))

    def num_macs(self, seq_len: int) -> int:
        """Full-precision multiply-accumulates per sequence of the L×L products (the two score terms
        and A_b·v_p). The projections qk / v_down / v_up are ``nn.Linear`` modules and are counted
        with the other linears (`bitbert.summary` measures those on a forward), not here."""
        return self.heads * seq_len * seq_len * (2 * self.rank + self.head_dim)
