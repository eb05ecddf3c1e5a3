"""An encoder layer as one compiled call: the same kernels as `layers.Layer`'s steps, without a
return to Python between them (about 17 numba dispatches and the glue around them per layer, ~10%
of a MiniLM-shape forward at 1 thread). One body (`_layer`) for both kinds of layer it runs, each
giving it its own input packing, attention and FFN-hidden quantizer:

- all-1-bit (1-bit inputs to all six linears, `BinaryAttention`): `binary_layer`;
- all-2-bit (BiT's W1A2 stage: 2-bit inputs to all six linears, `LevelsAttention`), the inputs
  as two stacked bit planes, each GEMM one pass over both (`kernels._tile`): `levels_layer`.

Neither with BiPFT's estimators."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..kernels import NO_DOT, NO_FLIP, NO_THR, NO_X, _quantize_pack_planes, pack_into
from .attention import BinaryAttention, LevelsAttention, binary_attention, levels_attention, linear_dot
from .layers import BinaryLinear, Layer
from .rows import affine, affine_pack, affine_residual_layernorm

_NO_RESIDUAL = np.zeros((0, 0, 0, 0), np.float32)


def _rule(linear: BinaryLinear) -> tuple:
    beta, alpha, thr, divide = linear.quant.rule
    return beta, np.float32(alpha), np.float32(thr), divide


def layer_params(layer: Layer) -> tuple | None:
    """The compiled layer and its parameters for ``layer``, or None when it is neither all 1-bit
    nor all 2-bit (or has BiPFT's estimators)."""
    linears = (layer.q, layer.k, layer.v, layer.out, layer.ffn_in, layer.ffn_out)
    if layer.residual is not None or any(not isinstance(lin, BinaryLinear) for lin in linears):
        return None
    bits = {lin.quant.bits for lin in linears}
    if bits == {1} and isinstance(layer.attention, BinaryAttention):
        rule = _rule
        compiled = binary_layer
    elif bits == {2} and isinstance(layer.attention, LevelsAttention) and layer.attention.q.bits == 2:
        rule = lambda lin: lin.quant.levels_rule  # noqa: E731
        compiled = levels_layer
    else:
        return None
    q, k, v, out, ffn_in, ffn_out = linears
    return compiled, (layer.qkv_one_input, rule(q), rule(k), rule(v), q.params, k.params, v.params,
                      layer.attention.consts, rule(out), out.params, layer.ln_attn, rule(ffn_in), ffn_in.params,
                      layer.activation, rule(ffn_out), ffn_out.params, layer.ln_ffn, layer.eps)


@njit(inline="always")
def _dot(bits, linear, threads):
    """A linear's integer dot of its packed input (1-bit rows, or stacked bit planes)."""
    return linear_dot(bits, linear, threads)


@njit(inline="always")
def _layer(x, batch, key_add, key_bits, threads, params, pack, attend, hidden):
    """`Layer.__call__` with pack(x, rule, threads) -> a linear's packed input, attend -> the
    attention context and hidden(dot, ffn_in, act, rule, threads) -> the FFN's hidden layer packed
    for the second FFN linear: attention, + residual, LayerNorm, FFN, + residual, LayerNorm."""
    (one_input, q_rule, k_rule, v_rule, q, k, v, consts, out_rule, out, ln_attn, ffn_rule, ffn_in, act, mid_rule,
     ffn_out, ln_ffn, eps) = params
    q_in = pack(x, q_rule, threads)
    k_in, v_in = (q_in, q_in) if one_input else (pack(x, k_rule, threads), pack(x, v_rule, threads))
    ctx = attend(q_in, k_in, v_in, q, k, v, batch, consts, key_add, key_bits, _NO_RESIDUAL, _NO_RESIDUAL, threads)
    x = affine_residual_layernorm(_dot(pack(ctx, out_rule, threads), out, threads), out[4], out[5], x, ln_attn[0],
                                  ln_attn[1], eps, np.empty(x.shape, np.float32), threads)
    mid = hidden(_dot(pack(x, ffn_rule, threads), ffn_in, threads), ffn_in, act, mid_rule, threads)
    return affine_residual_layernorm(_dot(mid, ffn_out, threads), ffn_out[4], ffn_out[5], x, ln_ffn[0], ln_ffn[1],
                                     eps, np.empty(x.shape, np.float32), threads)


@njit(inline="always")
def _pack_bits(x, rule, threads):
    beta, alpha, thr, divide = rule
    return pack_into(x, beta, alpha, thr, divide, np.empty((x.shape[0], (x.shape[1] + 63) // 64), np.uint64), threads)


@njit(inline="always")
def _hidden_bits(dot, linear, act, rule, threads):
    beta, alpha, thr, divide = rule
    return affine_pack(dot, linear[4], linear[5], act, beta, alpha, thr, divide, linear[6], linear[7],
                       np.empty((dot.shape[0], (dot.shape[1] + 63) // 64), np.uint64), threads)


@njit(cache=True)
def binary_layer(x, batch, key_add, key_bits, threads, params):
    """An all-1-bit layer (`layer_params`), its FFN's hidden layer binarized as it is produced."""
    return _layer(x, batch, key_add, key_bits, threads, params, _pack_bits, binary_attention, _hidden_bits)


@njit(inline="always")
def _pack_planes(x, rule, threads):
    """x's 2-bit levels as bit planes stacked along the rows (2·M, Kw)."""
    beta, alpha, lo, hi, planes = rule
    out = np.empty((planes, x.shape[0], (x.shape[1] + 63) // 64), np.uint64)
    _quantize_pack_planes(x, beta, alpha, lo, hi, out, NO_DOT, NO_THR, NO_FLIP)
    return out.reshape(planes * x.shape[0], out.shape[2])


@njit(inline="always")
def _hidden_planes(dot, linear, act, rule, threads):
    """The FFN's hidden levels as stacked planes: by level thresholds on the dot, or the float path."""
    beta, alpha, lo, hi, planes = rule
    thr, flip = linear[6], linear[7]
    out = np.empty((planes, dot.shape[0], (dot.shape[1] + 63) // 64), np.uint64)
    if thr.shape[0] > 0:
        _quantize_pack_planes(NO_X, beta, alpha, lo, hi, out, dot, thr, flip)
    else:
        _quantize_pack_planes(affine(dot, linear[4], linear[5], act, np.empty(dot.shape, np.float32)), beta, alpha,
                              lo, hi, out, NO_DOT, NO_THR, NO_FLIP)
    return out.reshape(planes * dot.shape[0], out.shape[2])


@njit(cache=True)
def levels_layer(x, batch, key_add, key_bits, threads, params):
    """An all-2-bit layer (`layer_params`), its FFN's hidden levels quantized as they are produced."""
    return _layer(x, batch, key_add, key_bits, threads, params, _pack_planes, levels_attention, _hidden_planes)
