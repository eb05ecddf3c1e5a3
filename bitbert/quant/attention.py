"""Binary self-attention plugged into stock transformers models via the attention registry.

``binarize`` registers the name ``"bitbert"`` in transformers' ``AttentionInterface`` (and the
eager additive mask for it) and attaches a :class:`BinaryAttention` to every self-attention module
as ``module.bitbert``; the model's own forward then calls :func:`bitbert_attention` with the
projected Q, K, V. No modeling file is forked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import QuantConfig
from .estimators import LowRankResidual
from .quantizers import ActQuantizer, BoolSTE, SignSTE

ATTENTION_NAME = "bitbert"


class BinaryAttention(nn.Module):
    """Quantized scaled-dot-product attention for one layer (owns its quantizers).

    Q, K, V are binarized signed; the map is softmax kept (``softmax``), softmax then {0, α}
    (``softmax_elastic``, BiT), softmax then ±1 (``softmax_sign``, baseline) or BiBERT's
    bool(QKᵀ/√d + mask) without softmax (``bool``). Optional BiPFT low-rank residual estimators.
    ``mode`` (`bitbert.core.config.AttentionMode`) is the one decision of all of that.
    """

    def __init__(self, config: QuantConfig, hidden: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.mode = mode = config.attention
        qkv = mode.qkv_bits < 32
        self.q_quant = ActQuantizer(mode.qkv_bits, True, mode.act_quantizer) if qkv else None
        self.k_quant = ActQuantizer(mode.qkv_bits, True, mode.act_quantizer) if qkv else None
        self.v_quant = ActQuantizer(mode.qkv_bits, True, mode.act_quantizer) if qkv else None
        self.p_quant = ActQuantizer(mode.act_bits, False, "elastic") if mode.elastic_map else None
        self.residual = LowRankResidual(hidden, heads, head_dim, mode.residual_rank) if mode.residual_rank else None
        # The layer input, needed by the residual estimators; set by a pre-hook for one forward.
        self._h: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                scaling: float, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.q_quant is not None:
            q, k, v = self.q_quant(q), self.k_quant(k), self.v_quant(v)
        scores = q @ k.transpose(-1, -2)
        h = self._h
        if self.residual is not None and h is not None:
            scores = scores + self.residual.score_residual(h)
        scores = scores * scaling
        if mask is not None:
            scores = scores + mask
        mode = self.mode
        if not mode.softmax:
            probs = BoolSTE.apply(scores)
            shown = probs
        else:
            probs = shown = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            if self.p_quant is not None:
                probs = self.p_quant(probs)
            elif mode.quantized_map:
                probs = SignSTE.apply(probs)
        if mask is not None and mode.quantized_map:
            # A quantized masked probability need not be 0 (sign, bool, or a learned β < 0): padding
            # must stay out of the context.
            probs = probs * (mask > torch.finfo(mask.dtype).min / 2).to(probs.dtype)
            if not mode.softmax:
                shown = probs
        probs = F.dropout(probs, p=dropout, training=self.training)
        context = probs @ v
        if self.residual is not None and h is not None:
            context = context + probs @ self.residual.value_residual(h)
        # The map returned as attention weights (output_attentions) is the softmax before its
        # quantization, a distribution the attention losses can compare with the teacher's.
        return context.transpose(1, 2).contiguous(), shown


    def packed_record(self):
        """This attention as the packed file stores it (`bitbert.core.packed_schema.AttentionRecord`)."""
        from ..core.packed_schema import AttentionRecord

        quant = lambda q: None if q is None else q.packed_record()  # noqa: E731
        return AttentionRecord(self.mode.map, quant(self.q_quant), quant(self.k_quant), quant(self.v_quant),
                               quant(self.p_quant), None if self.residual is None else self.residual.packed_record())


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean keep-mask as the additive one attention scores take: 0 where kept, dtype's min
    elsewhere. Built on the mask's device (no host scalar to copy: CUDA-graph capture allows it)."""
    return torch.zeros_like(keep, dtype=dtype).masked_fill_(~keep, torch.finfo(dtype).min)


def bitbert_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None,
                      dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The function registered as ``attn_implementation="bitbert"`` (transformers' signature)."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = additive_mask(attention_mask, query.dtype)
    binary = getattr(module, "bitbert", None)
    if binary is None:  # e.g. a cross-attention we did not convert: plain eager attention
        binary = _PLAIN
    return binary(query, key, value, attention_mask, scaling, dropout)


_PLAIN = BinaryAttention(QuantConfig(), 1, 1, 1)


# The hooks look the BinaryAttention up at call time: a later binarize() may replace it, or remove
# it (back to full precision), while the hooks, registered once per module, stay.
def _stash_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
    binary = getattr(module, "bitbert", None)
    if binary is not None and binary.residual is not None:
        binary._h = kwargs.get("hidden_states", args[0] if args else None)


def _clear_input(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
    binary = getattr(module, "bitbert", None)
    if binary is not None:
        binary._h = None


def register() -> None:
    """Register the attention function and its mask builder with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, bitbert_attention)
    # The boolean mask (bitbert_attention makes it additive): transformers' eager_mask fills with a
    # Python-scalar torch.where, a host-to-device copy that CUDA-graph capture refuses.
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


def binary_of(self_attention: nn.Module) -> BinaryAttention | None:
    """The BinaryAttention attached to a stock self-attention module, or None (float attention)."""
    return getattr(self_attention, "bitbert", None)


def attach(self_attention: nn.Module, config: QuantConfig, hidden: int) -> BinaryAttention:
    """Give a stock self-attention module its BinaryAttention (and the input hook for BiPFT)."""
    heads = self_attention.num_attention_heads
    head_dim = self_attention.attention_head_size
    binary = BinaryAttention(config, hidden, heads, head_dim).to(self_attention.query.weight.device)
    self_attention.bitbert = binary
    if binary.residual is not None and not getattr(self_attention, "_bitbert_hooked", False):
        self_attention.register_forward_pre_hook(_stash_input, with_kwargs=True)
        self_attention.register_forward_hook(_clear_input, with_kwargs=True)
        self_attention._bitbert_hooked = True  # re-binarizing (multi-distillation) adds no second pair
    return binary
