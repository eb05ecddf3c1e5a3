"""Fused row kernels of the packed engine: embeddings + LayerNorm, and a linear's scaled integer
dot + bias + activation (or + residual + LayerNorm), one pass over each row."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .floatmath import gelu, layernorm_row, ln_scratch, row_range

NO_ACT, RELU, GELU = -1, 0, 1
ACTIVATIONS = {"relu": RELU, "gelu": GELU}  # the FFN activations the engine runs, by config name

@njit(cache=True, parallel=True)
def embed(ids, pos_ids, type_ids, word_bits, word_scale, word_fp, pos, types_, gamma, beta, eps, out, threads):
    """out[m] = LayerNorm((word[ids[m]] + type[type_ids[m]]) + pos[pos_ids[m]]); a binary word row
    is scale · ±1 unpacked on the fly (word_bits empty: word_fp is a float table)."""
    M, H = out.shape
    binary = word_bits.shape[0] > 0
    tasks = min(M, threads)  # one scratch allocation per task, not per row
    for task in prange(tasks):
        scratch, counts = ln_scratch()
        lo, hi = row_range(task, tasks, M)
        for m in range(lo, hi):
            r = ids[m]
            for k in range(H):
                if binary:
                    bit = (word_bits[r, k >> 6] >> np.uint64(k & 63)) & np.uint64(1)
                    w = word_scale[r] if bit else -word_scale[r]
                else:
                    w = word_fp[r, k]
                out[m, k] = (w + types_[type_ids[m], k]) + pos[pos_ids[m], k]
            layernorm_row(out, m, gamma, beta, eps, out, scratch, counts)
    return out

@njit(cache=True, parallel=True)
def affine(dot, coef, bias, act, out):
    """out = act(float32(dot * coef) + bias): the exact integer dot scaled once (act -1: none)."""
    M = dot.shape[0]
    for m in prange(M):
        affine_row(dot[m], coef, bias, act, out[m])
    return out

@njit(inline="always")
def affine_row(dot, coef, bias, act, out):
    """One row of `affine`; a loop per activation, so each vectorises (no branch inside)."""
    N = dot.shape[0]
    for n in range(N):
        out[n] = np.float32(dot[n] * coef[n]) + bias[n]
    # a second pass: fused with the float64 scaling above, LLVM leaves the GELU loop scalar (4x slower)
    if act == RELU:
        for n in range(N):
            out[n] = max(out[n], np.float32(0.0))
    elif act == GELU:
        for n in range(N):
            out[n] = gelu(out[n])

@njit(cache=True, parallel=True)
def affine_residual_layernorm(dot, coef, bias, residual, gamma, beta, eps, out, threads):
    """out = LayerNorm((float32(dot * coef) + bias) + residual)."""
    M, N = dot.shape
    tasks = min(M, threads)  # one scratch allocation per task, not per row
    for task in prange(tasks):
        scratch, counts = ln_scratch()
        lo, hi = row_range(task, tasks, M)
        for m in range(lo, hi):
            for n in range(N):
                out[m, n] = (np.float32(dot[m, n] * coef[n]) + bias[n]) + residual[m, n]
            layernorm_row(out, m, gamma, beta, eps, out, scratch, counts)
    return out

