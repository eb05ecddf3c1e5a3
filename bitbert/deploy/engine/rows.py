"""Fused row kernels of the packed engine: embeddings + LayerNorm, and a linear's scaled integer
dot + bias + activation (or + residual + LayerNorm), one pass over each row; where the next step
only needs the output's bits (the next linear's input, attention's Q, K, V), the row is packed
while it is in L1 and never written out as floats."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..kernels import _pack_rows, mask64, pack_bits
from .floatmath import LN_ROWS, gelu, gelu16, layernorm_rows, ln_scratch, row_range
from .lanes import affine16, dot_mask64

NO_ACT, RELU, GELU = -1, 0, 1
_F32_MIN = np.finfo(np.float32).min


def key_add(key_mask: np.ndarray) -> np.ndarray:
    """Attention's additive key mask (B, L): 0 for kept keys, float32's minimum for masked ones."""
    return np.where(key_mask, np.float32(0.0), _F32_MIN).astype(np.float32)


@dataclass(frozen=True)
class KeyMask:
    """A forward's key mask in the forms the attention kernels take, made once for all layers:
    keep (B, L) bool, add (`key_add`), bits (packed along the keys, (B, ceil(L/64)) uint64)."""

    keep: np.ndarray
    add: np.ndarray
    bits: np.ndarray

    @classmethod
    def of(cls, keep: np.ndarray) -> "KeyMask":
        return cls(keep, key_add(keep), pack_bits(keep))

ACTIVATIONS = {"relu": RELU, "gelu": GELU}  # the FFN activations the engine runs, by config name

@njit(cache=True, parallel=True)
def embed(ids, pos_ids, type_ids, word_bits, word_scale, word_fp, pos, types_, gamma, beta, eps, out, threads):
    """out[m] = LayerNorm((word[ids[m]] + type[type_ids[m]]) + pos[pos_ids[m]]); a binary word row
    is scale · ±1 unpacked on the fly (word_bits empty: word_fp is a float table)."""
    M, H = out.shape
    binary = word_bits.shape[0] > 0
    tasks = min(M, threads)  # one scratch allocation per task, not per row
    for task in prange(tasks):
        scratch, counts, stats = ln_scratch()
        lo, hi = row_range(task, tasks, M)
        for m0 in range(lo, hi, LN_ROWS):
            rows = min(LN_ROWS, hi - m0)
            for m in range(m0, m0 + rows):
                r = ids[m]
                if binary:  # word by word, so the 64 bits' loop vectorises (variable shifts)
                    scale = word_scale[r]
                    for q in range(word_bits.shape[1]):
                        word = word_bits[r, q]
                        for t in range(min(64, H - 64 * q)):
                            w = scale if (word >> np.uint64(t)) & np.uint64(1) else -scale
                            out[m, 64 * q + t] = (w + types_[type_ids[m], 64 * q + t]) + pos[pos_ids[m], 64 * q + t]
                else:
                    for k in range(H):
                        out[m, k] = (word_fp[r, k] + types_[type_ids[m], k]) + pos[pos_ids[m], k]
            layernorm_rows(out, m0, rows, gamma, beta, eps, scratch, counts, stats)
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
    for n in range(affine16(dot, coef, bias, None, out), N):
        out[n] = np.float32(dot[n] * coef[n]) + bias[n]
    # a second pass: fused with the float64 scaling above, LLVM leaves the GELU loop scalar (4x slower)
    if act == RELU:
        for n in range(N):
            out[n] = max(out[n], np.float32(0.0))
    elif act == GELU:
        for n in range(gelu16(out), N):
            out[n] = gelu(out[n])

@njit(cache=True, parallel=True)
def affine_residual_layernorm(dot, coef, bias, residual, gamma, beta, eps, out, threads):
    """out = LayerNorm((float32(dot * coef) + bias) + residual)."""
    M, N = dot.shape
    tasks = min(M, threads)  # one scratch allocation per task, not per row
    for task in prange(tasks):
        scratch, counts, stats = ln_scratch()
        lo, hi = row_range(task, tasks, M)
        for m0 in range(lo, hi, LN_ROWS):
            rows = min(LN_ROWS, hi - m0)
            for m in range(m0, m0 + rows):
                for n in range(affine16(dot[m], coef, bias, residual[m], out[m]), N):
                    out[m, n] = (np.float32(dot[m, n] * coef[n]) + bias[n]) + residual[m, n]
            layernorm_rows(out, m0, rows, gamma, beta, eps, scratch, counts, stats)
    return out


@njit(cache=True, parallel=True)
def affine_pack(dot, coef, bias, act, beta, alpha, thr, divide, dot_thr, dot_flip, out, threads):
    """out = pack(rule(act(float32(dot * coef) + bias) − beta)) with `bitbert.deploy.kernels`' binarize
    rules (divide False: signed, ≥ thr; True: elastic, / alpha > thr): `affine` then the next
    linear's 1-bit input quantizer, one row at a time. out (M, ceil(N / 64)) uint64. With dot_thr
    and dot_flip (not empty; see `thresholds.DotThresholds`) the same bits come from integer
    compares on dot, no float at all."""
    M, N = dot.shape
    Nw = out.shape[1]
    by_dot = dot_thr.shape[0] > 0
    tasks = min(M, threads)
    for task in prange(tasks):
        row = np.empty((1, N), np.float32)
        ints = np.zeros(Nw * 64 if by_dot else 0, np.int32)
        lo, hi = row_range(task, tasks, M)
        for m in range(lo, hi):
            if by_dot:
                ints[:N] = dot[m]
                for w in range(Nw):
                    out[m, w] = dot_mask64(ints, 64 * w, dot_thr, dot_flip)
                continue
            affine_row(dot[m], coef, bias, act, row[0])
            if divide:
                _pack_rows(row, beta, alpha, thr, out[m:m + 1], 0, 1, True)
            else:
                _pack_rows(row, beta, alpha, thr, out[m:m + 1], 0, 1, False)
    return out

@njit(cache=True, parallel=True)
def affine_pack_heads(dot, coef, bias, beta, heads, keys_major, dot_thr, dot_flip, out, threads):
    """Attention's Q / K / V operand bits: bit = float32(dot * coef) + bias − beta ≥ 0 (beta a scalar),
    packed per head along its d channels: out (B, H, L, dw), or with keys_major (B, H, dw, L)
    (K: the score loop's keys contiguous). Rows m = b · L + i of dot (B·L, H·d). With dot_thr and
    dot_flip (not empty) the same bits by integer compares on dot, as `affine_pack`."""
    M, N = dot.shape
    B, H = out.shape[0], out.shape[1]
    L = M // B
    d = N // heads
    dw = (d + 63) // 64
    by_dot = dot_thr.shape[0] > 0
    tasks = min(M, threads)
    for task in prange(tasks):
        row = np.zeros((1, N + 64), np.float32)  # mask64 reads 64 floats from a head's start
        ints = np.zeros(N + 64 if by_dot else 0, np.int32)
        betas = np.full(N + 64, beta, np.float32)
        lo, hi = row_range(task, tasks, M)
        for m in range(lo, hi):
            if by_dot:
                ints[:N] = dot[m]
            else:
                affine_row(dot[m], coef, bias, NO_ACT, row[0, :N])
            b, i = m // L, m % L
            for h in range(H):
                for w in range(dw):
                    n = min(64, d - 64 * w)
                    if by_dot:
                        word = dot_mask64(ints, h * d + 64 * w, dot_thr, dot_flip)
                    else:
                        word = mask64(row, 0, h * d + 64 * w, betas, np.float32(1.0), np.float32(0.0), False)
                    if n < 64:
                        word &= (np.uint64(1) << np.uint64(n)) - np.uint64(1)
                    if keys_major:
                        out[b, h, w, i] = word
                    else:
                        out[b, h, i, w] = word
    return out
