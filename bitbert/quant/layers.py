"""Quantization-aware drop-in replacements for ``nn.Linear`` and ``nn.Embedding``.

They keep the original Parameter objects (so tied weights and optimizers see the same tensors)
and hold the learned quantizer parameters of their own input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import QuantConfig
from .quantizers import ActQuantizer, BinaryWeight, to_numpy


def _packed_signs(q: torch.Tensor, per_row: bool):
    """(sign bits packed as the engine reads them, scales) of a binarized weight q: |q| is the
    scale everywhere in a row (or the tensor), so the PyTorch values are exactly scale · ±1."""
    from ..core.packed_schema import pack_bits

    q = q.detach().float().cpu()
    scale = q.abs().amax(dim=1) if per_row else q.abs().amax().reshape(1)
    return pack_bits((q > 0).numpy()), scale.numpy()


class QuantLinear(nn.Linear):
    """Linear layer with binarized weights and a quantized input.

    y = Q_a(x) · B(W)ᵀ + b, where B is :class:`BinaryWeight` (when ``weight_bits == 1``) and Q_a
    an :class:`ActQuantizer` with per-input-channel β (when ``act_bits < 32``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, *, weight_bits: int,
                 centered: bool, per_row: bool, act_quant: ActQuantizer | None) -> None:
        super().__init__(in_features, out_features, bias=bias, device="meta")
        self.weight_bits, self.centered, self.per_row = weight_bits, centered, per_row
        self.act_quant = act_quant

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig, signed_input: bool = True) -> "QuantLinear":
        act = None
        if config.act_bits < 32:
            act = ActQuantizer(config.act_bits, signed_input, config.act_quantizer, channels=linear.in_features)
            act.to(linear.weight.device)
        new = cls(linear.in_features, linear.out_features, linear.bias is not None,
                  weight_bits=config.weight_bits, centered=config.weight_centering,
                  per_row=config.weight_scale == "row", act_quant=act)
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def quantized_weight(self) -> torch.Tensor:
        if self.weight_bits == 1:
            return BinaryWeight.apply(self.weight, self.centered, self.per_row)
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant is not None:
            x = self.act_quant(x)
        return F.linear(x, self.quantized_weight(), self.bias)

    def packed_record(self):
        """This layer as the packed file stores it (`bitbert.core.packed_schema.LinearRecord`)."""
        from ..core.packed_schema import LinearRecord

        act = None if self.act_quant is None else self.act_quant.packed_record()
        bias = None if self.bias is None else to_numpy(self.bias)
        if self.weight_bits != 1:
            return LinearRecord(self.in_features, self.out_features, False, weight=to_numpy(self.weight), bias=bias,
                                act=act)
        bits, scale = _packed_signs(self.quantized_weight(), self.per_row)
        return LinearRecord(self.in_features, self.out_features, True, self.per_row, bits, scale, bias=bias, act=act)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, centered={self.centered}, per_row={self.per_row}"


class QuantEmbedding(nn.Embedding):
    """Embedding table binarized per row (one scale, and centre, per token vector; BiT §3.2)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None, *,
                 bits: int, centered: bool) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device="meta")
        self.bits, self.centered = bits, centered

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, config: QuantConfig) -> "QuantEmbedding":
        new = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, bits=config.embed_bits,
                  centered=config.weight_centering)
        new.weight = emb.weight
        return new

    def quantized_weight(self) -> torch.Tensor:
        return BinaryWeight.apply(self.weight, self.centered, True) if self.bits == 1 else self.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.bits != 1:
            return super().forward(ids)
        # Binarize only the rows this batch uses: the rule is per row, so this equals indexing the
        # fully binarized table, without touching 30k rows per step.
        rows = F.embedding(ids, self.weight)
        flat = rows.reshape(-1, rows.shape[-1])
        return BinaryWeight.apply(flat, self.centered, True).reshape(rows.shape)

    def packed_record(self):
        """This table as the packed file stores it (`bitbert.core.packed_schema.EmbeddingRecord`)."""
        from ..core.packed_schema import EmbeddingRecord

        rows, cols = self.weight.shape
        if self.bits != 1:
            return EmbeddingRecord(rows, cols, False, weight=to_numpy(self.weight))
        return EmbeddingRecord(rows, cols, True, *_packed_signs(self.quantized_weight(), True))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, centered={self.centered}"

