"""An all-1-bit encoder layer (1-bit inputs to all six linears, `BinaryAttention`, no BiPFT
estimators) as one compiled call: the same kernels as `layers.Layer`'s steps, without a return
to Python between them (about 17 numba dispatches and the glue around them per layer, ~10% of a
MiniLM-shape forward at 1 thread)."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..kernels import _NO_ROWS, NO_COLS, gemm_into, pack_into
from .attention import BinaryAttention, binary_attention
from .layers import BinaryLinear, Layer
from .rows import affine_pack, affine_residual_layernorm

_NO_RESIDUAL = np.zeros((0, 0, 0, 0), np.float32)


def _rule(linear: BinaryLinear) -> tuple:
    beta, alpha, thr, divide = linear.quant.rule
    return beta, np.float32(alpha), np.float32(thr), divide


def layer_params(layer: Layer) -> tuple | None:
    """`binary_layer`'s parameters for ``layer``, or None when it is not all 1-bit."""
    linears = (layer.q, layer.k, layer.v, layer.out, layer.ffn_in, layer.ffn_out)
    if (not isinstance(layer.attention, BinaryAttention) or layer.residual is not None
            or any(not isinstance(lin, BinaryLinear) or lin.quant.bits != 1 for lin in linears)):
        return None
    q, k, v, out, ffn_in, ffn_out = linears
    return (layer.qkv_one_input, _rule(q), _rule(k), _rule(v), q.params, k.params, v.params, layer.attention.consts,
            _rule(out), out.params, layer.ln_attn, _rule(ffn_in), ffn_in.params, layer.activation, _rule(ffn_out),
            ffn_out.params, layer.ln_ffn, layer.eps)


@njit(inline="always")
def _pack(x, rule, threads):
    beta, alpha, thr, divide = rule
    return pack_into(x, beta, alpha, thr, divide, np.empty((x.shape[0], (x.shape[1] + 63) // 64), np.uint64), threads)


@njit(inline="always")
def _dot(bits, linear, threads):
    panels, n, k, use_and = linear[0], linear[1], linear[2], linear[3]
    return gemm_into(bits, _NO_ROWS, panels, k, np.empty((bits.shape[0], n), np.int32), use_and, threads, NO_COLS)


@njit(cache=True)
def binary_layer(x, batch, key_add, key_bits, threads, params):
    """`Layer.__call__` for an all-1-bit layer (`layer_params`): attention, + residual, LayerNorm, FFN
    (its hidden layer binarized as it is produced), + residual, LayerNorm."""
    (one_input, q_rule, k_rule, v_rule, q, k, v, consts, out_rule, out, ln_attn, ffn_rule, ffn_in, act, mid_rule,
     ffn_out, ln_ffn, eps) = params
    q_in = _pack(x, q_rule, threads)
    k_in, v_in = (q_in, q_in) if one_input else (_pack(x, k_rule, threads), _pack(x, v_rule, threads))
    ctx = binary_attention(q_in, k_in, v_in, q, k, v, batch, consts, key_add, key_bits, _NO_RESIDUAL, _NO_RESIDUAL,
                           threads)
    x = affine_residual_layernorm(_dot(_pack(ctx, out_rule, threads), out, threads), out[4], out[5], x, ln_attn[0],
                                  ln_attn[1], eps, np.empty(x.shape, np.float32), threads)
    dot = _dot(_pack(x, ffn_rule, threads), ffn_in, threads)
    beta, alpha, thr, divide = mid_rule
    hidden = affine_pack(dot, ffn_in[4], ffn_in[5], act, beta, alpha, thr, divide, ffn_in[6], ffn_in[7],
                         np.empty((dot.shape[0], (dot.shape[1] + 63) // 64), np.uint64), threads)
    return affine_residual_layernorm(_dot(hidden, ffn_out, threads), ffn_out[4], ffn_out[5], x, ln_ffn[0], ln_ffn[1],
                                     eps, np.empty(x.shape, np.float32), threads)
