"""Builds the packed engine's model from a validated file: weights laid out once, every setting
(attention kernel, activation, LayerNorm eps) fixed per piece. :func:`build` returns a finished
`Encoder`; nothing is written into a half-built engine."""
from __future__ import annotations

import dataclasses

import numpy as np

from ...core.packed_schema import EmbeddingRecord, LayerRecord, LinearRecord, ModelSpec, QuantizerRecord
from ..kernels import PackedWeights, row_sums, unpack_bits
from ..packing import PackedModel
from .attention import BinaryAttention, LevelsAttention, attention_for
from .errors import EngineError
from .fused import layer_params
from .layers import BinaryLinear, Embeddings, Encoder, FloatLinear, InputQuant, Layer, Linear, Residual
from .rows import ACTIVATIONS, NO_ACT
from .thresholds import NONE, NO_LEVELS, heads_thresholds, level_thresholds, pack_thresholds

MAX_ACT_BITS = 8  # bit-serial: a linear costs one GEMM per activation bit, attention bits² popcount passes


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _input_quant(record: QuantizerRecord | None, channels: int, where: str) -> InputQuant:
    if record is None:
        raise EngineError(f"{where}: the packed engine runs 1- to {MAX_ACT_BITS}-bit activations; use PyTorch for "
                          "a full-precision input")
    return InputQuant.from_record(record, channels)


def binary_linear(record: LinearRecord, where: str) -> BinaryLinear:
    if not record.binary:
        raise EngineError(f"{where}: the packed engine runs 1-bit weights; use PyTorch for a full-precision "
                          "(32-bit) weight")
    bits = np.ascontiguousarray(record.weight_bits)
    bias = np.zeros(record.out_features, np.float32) if record.bias is None else _f32(record.bias)
    return BinaryLinear(PackedWeights(bits, record.in_features), _f32(record.weight_scale), bias,
                        _input_quant(record.act, record.in_features, where), row_sums(bits, record.in_features))


def any_linear(record: LinearRecord, where: str) -> Linear:
    if record.binary:
        return binary_linear(record, where)
    if record.act is not None:
        raise EngineError(f"{where}: the packed engine runs a quantized input only with 1-bit weights")
    return FloatLinear(_f32(record.weight), None if record.bias is None else _f32(record.bias))


def table(record: EmbeddingRecord) -> np.ndarray:
    """A float embedding table; a binary one is unpacked (rows of scale · ±1)."""
    if not record.binary:
        return _f32(record.weight)
    scale = _f32(record.weight_scale)[:, None]
    return np.where(unpack_bits(record.weight_bits, record.cols).astype(bool), scale, -scale).astype(np.float32)


def layer(record: LayerRecord, spec: ModelSpec, where: str) -> Layer:
    residual = None
    att = record.attention
    if att is not None and att.residual is not None:
        r = att.residual
        residual = Residual(*(any_linear(x, f"{where}.attention.residual") for x in (r.qk, r.v_down, r.v_up)),
                            heads=spec.heads, rank=r.rank)
    linears = {name: binary_linear(getattr(record, name), f"{where}.{name}")
               for name in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")}
    ln = lambda r: (_f32(r.weight), _f32(r.bias))  # noqa: E731
    q, k, v = linears["query"], linears["key"], linears["value"]
    attention, activation = attention_for(att, spec), ACTIVATIONS[spec.activation]
    _binarized_outputs(q, k, v, attention, linears["ffn_in"], linears["ffn_out"], activation, spec.heads)
    steps = Layer(q, k, v, linears["attn_out"], linears["ffn_in"], linears["ffn_out"], attention,
                  ln(record.ln_attn), ln(record.ln_ffn), residual, activation, np.float32(spec.eps),
                  qkv_one_input=q.quant.same_bits(k.quant) and q.quant.same_bits(v.quant))
    fused = layer_params(steps)
    return steps if fused is None else dataclasses.replace(steps, compiled=fused[0], compiled_params=fused[1])


def _binarized_outputs(q: BinaryLinear, k: BinaryLinear, v: BinaryLinear, attention, ffn_in: BinaryLinear,
                       ffn_out: BinaryLinear, activation: int, heads: int) -> None:
    """Give the linears whose output is only quantized (Q, K, V; the FFN's hidden layer) their bits
    (1-bit consumer) or levels (multi-bit) as dot thresholds, where the float epilogue's are
    monotone in the dot. A 1-bit input keeps the dot in [−K, K], a multi-bit one in ±`dot_bound`."""
    if isinstance(attention, BinaryAttention):
        for linear, (_, beta) in ((q, attention.q), (k, attention.k), (v, attention.v)):
            if linear.quant.bits == 1:
                linear.by_dot = heads_thresholds(linear.coef, linear.bias, beta, heads, linear.weights.k) or NONE
    elif isinstance(attention, LevelsAttention):  # multi-bit Q, K, V: their levels (one β)
        for linear, quant in ((q, attention.q), (k, attention.k), (v, attention.v)):
            beta = np.full(linear.weights.n, quant.scalar_beta, np.float32)
            linear.by_dot = level_thresholds(linear.coef, linear.bias, NO_ACT, beta, quant.alpha, *quant.levels,
                                             linear.dot_bound) or NO_LEVELS
    if ffn_in.quant.bits == 1 and ffn_out.quant.bits == 1:
        ffn_in.by_dot = pack_thresholds(ffn_in.coef, ffn_in.bias, activation, ffn_out.quant.rule,
                                        ffn_in.weights.k) or NONE
    elif ffn_out.quant.bits > 1:
        quant = ffn_out.quant
        ffn_in.by_dot = level_thresholds(ffn_in.coef, ffn_in.bias, activation, quant.beta, quant.alpha, *quant.levels,
                                         ffn_in.dot_bound) or NO_LEVELS


def _check_supported(packed: PackedModel) -> None:
    quant = packed.quant
    if quant.weight_bits != 1 or not 1 <= quant.act_bits <= MAX_ACT_BITS:
        raise EngineError(f"the packed engine runs 1-bit weights and 1- to {MAX_ACT_BITS}-bit activations; use "
                          f"PyTorch for bits {quant.bits} ({packed.path})")
    if quant.widens_early_layers and quant.early_act_bits > MAX_ACT_BITS:
        raise EngineError(f"the packed engine runs 1- to {MAX_ACT_BITS}-bit activations; this model's first "
                          f"{quant.early_layers} layer(s) run early_act_bits={quant.early_act_bits}: use PyTorch, "
                          f"or train with early_act_bits <= {MAX_ACT_BITS} ({packed.path})")
    if packed.spec.activation not in ACTIVATIONS:
        raise EngineError(f"the packed engine runs FFN activations {list(ACTIVATIONS)}; this model uses "
                          f"{packed.spec.activation!r}")


def build(packed: PackedModel) -> Encoder:
    """The engine's model for a validated packed file; EngineError for what the engine does not run."""
    _check_supported(packed)
    spec, m = packed.spec, packed.layout
    eps = np.float32(spec.eps)
    if m.word.binary:
        word_bits, word_scale = np.ascontiguousarray(m.word.weight_bits), _f32(m.word.weight_scale)
        word_fp = np.zeros((0, 0), np.float32)
    else:
        word_bits, word_scale, word_fp = np.zeros((0, 0), np.uint64), np.zeros(0, np.float32), _f32(m.word.weight)
    embeddings = Embeddings(word_bits, word_scale, word_fp, table(m.position), table(m.token_type),
                            (_f32(m.ln_embed.weight), _f32(m.ln_embed.bias)), eps)
    layers = tuple(layer(rec, spec, f"layers.{i}") for i, rec in enumerate(m.layers))
    return Encoder(spec, embeddings, layers, any_linear(m.head_dense, "head.dense"), any_linear(m.head_out, "head.out"))
