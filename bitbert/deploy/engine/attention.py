"""Attention of the packed engine: the bitwise kernels and the one place a file's attention mode
becomes a kernel choice (:func:`attention_for`, at build time).

1-bit (`BinaryAttention`): scores α_q α_k (d − 2 popcount(q ⊕ k)) / √d + mask, then BiT's softmax →
{0, α_p}, BiBERT's bool(score ≥ 0) or the baseline's softmax → ±1; masked keys dropped; the context
is an AND-popcount of the map bits with ±1 V. Multi-bit (`LevelsAttention`, BiT's 1-1-2 / 1-1-4):
every plane pair of Q and K, then of the map's levels and V, AND-popcounted. BiPFT's residual terms
are added in float.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit, prange

from ...core.packed_schema import AttentionRecord, ModelSpec
from ..kernels import (_NO_ROWS, NO_COLS, NO_DOT, NO_THR, NO_FLIP, NO_X, _quantize_pack_heads, elastic_rule,
                       gemm_into, levels_gemm_into, heads_along_tokens, mask64, plane_mask64, popcount64)
from .errors import EngineError
from .floatmath import _exp_shifted16, normalize_inplace, softmax_inplace, softmax_scale
from .lanes import clamp_index16, gather16, planes_dot16, threshold_masks64
from .rows import NO_ACT, KeyMask, affine, affine_pack_heads
from .layers import BinaryLinear, InputQuant
from .thresholds import NO_MAP, map_thresholds

ELASTIC, BOOL, SIGN = 0, 1, 2
# The attention maps (QuantConfig.attention_probs) the engine runs, as kernel codes.
MAP_CODES = {"softmax_elastic": ELASTIC, "bool": BOOL, "softmax_sign": SIGN}
# Above this a masked key's score (float32's minimum + score) − the row's maximum might not be below
# SLEEF's −104 and its exp might not be 0: the tabled softmax is off for such scores.
_TABLED_MAX_SCORE = np.float32(1e30)
_ROWS = 4  # query rows the attention kernel carries through each step together

@njit(cache=True)
def score_table(first, step, n, qk_coef, scaling):
    """A kept key's score for each of n integer dots first + step·c (c < n): float32(dot qk_coef) ·
    scaling + 0, the kernels' own operations; and whether every one is within _TABLED_MAX_SCORE.
    Monotone in c, so a row's maximum is at its smallest or largest c."""
    scores = np.zeros(n, np.float32)
    ok = True
    for c in range(n):
        scores[c] = np.float32((first + step * c) * qk_coef) * scaling + np.float32(0.0)
        ok = ok and abs(scores[c]) <= _TABLED_MAX_SCORE
    return scores, ok

@njit(cache=True)
def score_exps(d, qk_coef, scaling):
    """The tabled softmax's tables. A kept key's score depends only on c = popcount(q ⊕ k), 0..d:
    scores[c] (`score_table` of the dot d − 2c); and a row's maximum is scores[c'] for one c'.
    exps[c', c] = expf(scores[c] − scores[c']), softmax's own exp of each key (16 lanes, SLEEF), and
    exps[c', d + 1] = 0, masked keys' (see _TABLED_MAX_SCORE). ok: every score is within that bound."""
    scores, ok = score_table(d, -2, d + 1, qk_coef, scaling)
    width = (d + 2 + 31) // 32 * 32  # gather16's tables: whole 32-entry pairs
    exps = np.zeros((d + 1, width), np.float32)
    for top in range(d + 1):
        exps[top, :d + 1] = scores
        _exp_shifted16(exps[top:top + 1], d + 1, scores[top])
        exps[top, d + 1:] = 0
    return scores, exps, ok

@njit(cache=True, parallel=True)
def attention_kernel(qh, kt, vt, qk_coef, scaling, key_add, key_bits, mode, p_alpha, p_beta, rule_alpha, p_thr,
                     p_divide, pv_coef, score_res, value_res, ctx):
    """Binary attention for every (sequence, head); see BinaryAttention. The elastic map (α_p, β_p)
    sets its bits by mask64's rule (rule_alpha, p_thr, p_divide) = `bitbert.deploy.kernels.elastic_rule(α_p)`.

    qh (B, H, L, dw) and kt (B, H, dw, L): packed Q rows and K words (word-major, so the score loop
    over keys is contiguous); vt (B, H, Lw, d): V packed along the keys.
    """
    B, H, L, dw = qh.shape
    Lw, d = vt.shape[2], vt.shape[3]
    has_sres, has_vres = score_res.shape[0] > 0, value_res.shape[0] > 0
    # BiT's map without BiPFT's score term: softmax by table (see score_exps), the same floats as
    # softmax_inplace with (d + 2)² exps per call instead of L per row
    scores, exps, tabled = score_exps(d, qk_coef, scaling)
    tabled = tabled and mode == ELASTIC and not has_sres
    masked = np.int32(d + 1)
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        q2, k2, v2, kadd, kbits = qh[b, h], kt[b, h], vt[b, h], key_add[b], key_bits[b]
        # _ROWS score rows at a time, each step for every row before the next step: the rows' latency
        # chains (sums, the gathers) overlap. Rows padded to whole words; the padding never survives
        # the AND with key_bits.
        row = np.zeros((_ROWS, Lw * 64), np.float32)
        betas = np.full(Lw * 64, p_beta, np.float32)
        pbits = np.empty((_ROWS, Lw), np.uint64)
        cnt = np.zeros((_ROWS, Lw * 64), np.int32)  # int32 accumulators on 1-D rows: the loops vectorise
        acc = np.empty((_ROWS, d), np.int32)
        to_exps = np.full(Lw * 64, masked, np.int32)  # cnt + to_exps: the column of exps (masked: d + 1)
        kept = 0
        for j in range(L):
            if kadd[j] == 0:
                to_exps[j] = 0
                kept += 1
        by_table = tabled and kept > 0  # a row's maximum is a kept key's score
        for i0 in range(0, L, _ROWS):
            n = min(_ROWS, L - i0)
            for r in range(n):
                _popcount_row(q2[i0 + r, 0], k2[0], cnt[r, :L], False, True)
                for w in range(1, dw):
                    _popcount_row(q2[i0 + r, w], k2[w], cnt[r, :L], False, False)
            if by_table:
                for r in range(n):
                    lo, hi = clamp_index16(cnt[r], to_exps, L, masked)
                    gather16(row[r:r + 1], exps[lo] if scores[lo] >= scores[hi] else exps[hi], cnt[r], L, 0, masked)
                for r in range(n):
                    normalize_inplace(row[r:r + 1], L)
            elif has_sres:
                for r in range(n):
                    for j in range(L):  # the exact dot, rounded once
                        row[r, j] = np.float32((d - 2 * cnt[r, j]) * qk_coef) + score_res[b, h, i0 + r, j]
                    for j in range(L):
                        row[r, j] = row[r, j] * scaling + kadd[j]
            else:
                for r in range(n):
                    for j in range(L):
                        row[r, j] = np.float32((d - 2 * cnt[r, j]) * qk_coef) * scaling + kadd[j]
            for r in range(n):
                if mode == ELASTIC and not by_table:
                    softmax_inplace(row[r:r + 1], L)
                if mode == ELASTIC:
                    for w in range(Lw):
                        if p_divide:
                            pbits[r, w] = mask64(row, r, 64 * w, betas, rule_alpha, p_thr, True) & kbits[w]
                        else:
                            pbits[r, w] = mask64(row, r, 64 * w, betas, rule_alpha, p_thr, False) & kbits[w]
                elif mode == BOOL:
                    for w in range(Lw):
                        pbits[r, w] = mask64(row, r, 64 * w, betas, np.float32(1.0), np.float32(0.0), False) & kbits[w]
                else:  # softmax then sign: every kept key is +1
                    for w in range(Lw):
                        pbits[r, w] = kbits[w]
            for r in range(n):
                _popcount_row(pbits[r, 0], v2[0], acc[r], True, True)
                for w in range(1, Lw):
                    _popcount_row(pbits[r, w], v2[w], acc[r], True, False)
            for r in range(n):
                ones = np.int32(0)
                for w in range(Lw):
                    ones += np.int32(popcount64(pbits[r, w]))
                out = ctx[b * L + i0 + r, h * d:(h + 1) * d]
                for t in range(d):
                    out[t] = np.float32((2 * acc[r, t] - ones) * pv_coef)
                if has_vres:  # a separate loop: the branch inside the one above stops its vectorisation
                    for t in range(d):
                        extra = np.float32(0.0)
                        for j in range(L):
                            if (pbits[r, j >> 6] >> np.uint64(j & 63)) & np.uint64(1):
                                extra += value_res[b, h, j, t]
                        out[t] = out[t] + extra * p_alpha
    return ctx

@njit(inline="always")
def _popcount_row(word, row, acc, use_and, first):
    """acc[j] (=, or += when not first) popcount(word XOR / AND row[j]) over a contiguous row."""
    if first:
        for j in range(row.shape[0]):
            acc[j] = np.int32(popcount64((word & row[j]) if use_and else (word ^ row[j])))
    else:
        for j in range(row.shape[0]):
            acc[j] += np.int32(popcount64((word & row[j]) if use_and else (word ^ row[j])))

@njit(inline="always")
def _half(word, w):
    """32-bit half-word w of a packed uint64 array's words (word w // 2; little-endian: low half first)."""
    return np.uint32((word >> np.uint64(32 * (w & 1))) & np.uint64(0xFFFFFFFF))


@njit(cache=True, parallel=True)
def attention_levels_kernel(qp, qsum, kp, ksum, vp, offset, qk_coef, scaling, key_add, key_bits, mode, p_thr, p_rising,
                            p_alpha, pv_coef, score_res, value_res, ctx):
    """Bit-serial attention on multi-bit Q, K, V (levels o + offset, o given as bit planes); see
    LevelsAttention. qp, kp (B, H, b, L, dw) packed along d, vp (B, H, b, Lw, d) along the tokens
    (uint64); qsum, ksum (B, H, L): Σ_d o. The map's levels (ELASTIC: #{l : p ≥ p_thr[l]}, or < when
    not p_rising: `thresholds.map_thresholds`; BOOL: score ≥ 0; SIGN: 1) are packed along the keys per
    row, masked keys 0, and multiplied with V's planes the same way.

    Each head's K and V become 32-bit half-words once (K keys-major), so every dot is a
    `planes_dot16` over 16 keys or 16 outputs at a time, in int32."""
    B, H, nb, L, dw = qp.shape
    Lw, d = vp.shape[3], vp.shape[4]
    top = max(1, p_thr.shape[0])
    planes = 1
    while (1 << planes) <= top:
        planes += 1
    has_sres, has_vres = score_res.shape[0] > 0, value_res.shape[0] > 0
    dh, Lp, dp = (d + 31) // 32, Lw * 64, (d + 15) // 16 * 16
    # dots in [dmin, dmin + span): d times the extreme products of two values offset..offset + 2^b − 1
    v_lo, v_hi = offset, offset + (1 << nb) - 1
    dmin = d * min(v_lo * v_lo, v_lo * v_hi, v_hi * v_hi)
    span = d * max(v_lo * v_lo, v_lo * v_hi, v_hi * v_hi) - dmin + 1
    # BiT's map without BiPFT's score term: softmax with each row's exps from a table of scores by
    # dot (the same floats as softmax_inplace), only over the row's own range of dots
    scores, tabled = score_table(dmin, 1, span, qk_coef, scaling)
    tabled = tabled and mode == ELASTIC and not has_sres
    masked = np.int32(span)  # a masked key's (and the padding's) index: past every dot
    const = np.int32(d * offset * offset - dmin)  # the dot's index: dot − dmin
    zeros = np.zeros(dp, np.int32)
    zero = np.zeros(1, np.float32)  # BOOL's one threshold
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kbits = key_bits[b]
        kt = np.zeros((nb * dh, Lp), np.uint32)  # (plane, half-word) rows of keys
        vt = np.zeros((nb * 2 * Lw, dp), np.uint32)  # (plane, half-word of keys) rows of outputs
        kterm = np.zeros(Lp, np.int32)  # the dot's terms of the key alone
        for c in range(nb):
            for w in range(dh):
                for j in range(L):
                    kt[c * dh + w, j] = _half(kp[b, h, c, j, w >> 1], w)
            for w in range(2 * Lw):
                for t in range(d):
                    vt[c * 2 * Lw + w, t] = _half(vp[b, h, c, w >> 1, t], w)
        for j in range(L, Lp):
            kterm[j] = masked  # the padding's index stays past every dot
        to_exps = np.full(Lp, masked, np.int32)  # index + to_exps: the masked index for masked keys
        kept = 0
        for j in range(L):
            kterm[j] = np.int32(offset * ksum[b, h, j]) + const
            if key_add[b, j] == 0:
                to_exps[j] = 0
                kept += 1
        by_table = tabled and kept > 0  # a row's maximum is a kept key's score
        exps = np.zeros((1, (span + 32) // 32 * 32), np.float32)
        dot = np.zeros(Lp, np.int32)
        row = np.zeros((1, Lp), np.float32)
        pbits = np.zeros((planes, Lw), np.uint64)
        masks = np.zeros((top, Lw), np.uint64)
        acc = np.zeros(dp, np.int32)
        q_words = np.empty((nb, dh), np.uint32)  # the query's planes as half-words
        p_words = pbits.view(np.uint32)  # the map's planes as half-words (little-endian: the low half first)
        for i in range(L):
            for a in range(nb):
                for w in range(dh):
                    q_words[a, w] = _half(qp[b, h, a, i, w >> 1], w)
            # the exact integer dot q·k = Σ 2^(a+c) popcount(q_a & k_c) + offset (Σq + Σk) + d offset²,
            # as its index dot − dmin
            planes_dot16(q_words, kt, kterm, np.int32(offset * qsum[b, h, i]), dot, L)
            scale = np.float32(1.0)
            if by_table:  # exps of the dots lo..hi only; entries past hi 0, the masked keys'
                lo, hi = clamp_index16(dot, to_exps, L, masked)
                peak = lo if scores[lo] >= scores[hi] else hi  # the row's maximum
                n = hi - lo + 1
                width = (n + 32) // 32 * 32
                for c in range(n):  # plain loops: slice assignments become nested parfors
                    exps[0, c] = scores[lo + c]
                _exp_shifted16(exps, n, scores[peak])
                for c in range(n, width):
                    exps[0, c] = 0
                gather16(row, exps[0, :width], dot, L, lo, np.int32(width - 1))
                scale = softmax_scale(row, L)  # p = exp · scale: normalize_inplace's product, in the compares
            elif has_sres:
                for j in range(L):  # rounded once, then as PyTorch adds BiPFT's term
                    exact = np.float32((dot[j] + dmin) * qk_coef)
                    row[0, j] = (exact + score_res[b, h, i, j]) * scaling + key_add[b, j]
            else:
                for j in range(L):
                    row[0, j] = np.float32((dot[j] + dmin) * qk_coef) * scaling + key_add[b, j]
            if mode == ELASTIC and not by_table:
                softmax_inplace(row, L)
            # the map's levels as nested masks (level ≥ l, l = 1..top; masked keys 0), then planes
            if mode == ELASTIC:
                threshold_masks64(row, scale, p_thr, p_rising, masks)
            elif mode == BOOL:
                threshold_masks64(row, np.float32(1.0), zero, True, masks)
            else:  # softmax then sign: every kept key is +1
                for w in range(Lw):
                    masks[0, w] = ~np.uint64(0)
            psum = 0
            for w in range(Lw):  # each key's level = its count of masks, added bit-sliced into the planes
                for a in range(planes):
                    pbits[a, w] = 0
                for level in range(top):
                    carry = masks[level, w] & kbits[w]
                    psum += np.int64(popcount64(carry))
                    for a in range(planes):
                        was = pbits[a, w]
                        pbits[a, w] = was ^ carry
                        carry &= was
            planes_dot16(p_words, vt, zeros, np.int32(offset * psum), acc, d)
            out = ctx[b * L + i, h * d:(h + 1) * d]
            for t in range(d):
                out[t] = np.float32(acc[t] * pv_coef)
            if has_vres:
                for t in range(d):
                    extra = np.float32(0.0)
                    for j in range(L):
                        level = 0
                        for a in range(planes):
                            level += np.int32((pbits[a, j >> 6] >> np.uint64(j & 63)) & np.uint64(1)) << a
                        extra += np.float32(level) * value_res[b, h, j, t]
                    out[t] = out[t] + extra * p_alpha
    return ctx

def _residual_operand(res: np.ndarray | None) -> np.ndarray:
    """BiPFT's score / value residual for the attention kernels, or an empty array (none)."""
    return np.zeros((0, 0, 0, 0), np.float32) if res is None else np.ascontiguousarray(res, np.float32)

@dataclass(frozen=True)
class BinaryAttention:
    """Self-attention on 1-bit Q, K, V (value α · ±1, bit = x − β ≥ 0), map by ``code``."""

    heads: int
    scaling: np.float32
    code: int
    q: tuple[float, float]  # (α, β) of Q, K, V
    k: tuple[float, float]
    v: tuple[float, float]
    p: tuple[float, float] = (1.0, 0.0)  # (α_p, β_p) of BiT's map binarizer

    def __call__(self, q: BinaryLinear, k: BinaryLinear, v: BinaryLinear, inputs: tuple[np.ndarray, ...], batch: int,
                 keys: KeyMask, threads: int, score_res: np.ndarray | None = None,
                 value_res: np.ndarray | None = None) -> np.ndarray:
        """The context (B*L, heads*d) float32 of the Q, K, V linears on their packed inputs (each
        linear's quantizer's bits of the layer input, B*L rows), their outputs binarized as they are
        produced; score_res (B, heads, L, L) and value_res (B, heads, L, d): BiPFT's residual terms,
        or None."""
        return binary_attention(*inputs, q.params, k.params, v.params, batch, self.consts, keys.add, keys.bits,
                                _residual_operand(score_res), _residual_operand(value_res), threads)

    @property
    def consts(self) -> tuple:
        """What `binary_attention` takes: (heads, scaling, map code, α_q α_k, β_q, β_k, β_v, α_p, β_p,
        mask64's elastic rule of α_p (alpha, threshold, divide), α_p α_v)."""
        (aq, bq), (ak, bk), (av, bv) = self.q, self.k, self.v
        pa, pb = self.p
        return (self.heads, self.scaling, self.code, aq * ak, np.float32(bq), np.float32(bk), np.float32(bv),
                np.float32(pa), np.float32(pb), *elastic_rule(pa), pa * av)

@njit(cache=True)
def binary_heads(bits, linear, beta, batch, heads, keys_major, threads):
    """A 1-bit linear's output bits (output − beta ≥ 0) for its packed input bits, packed per head:
    (B, heads, L, ceil(d/64)) uint64, or keys-major (B, heads, ceil(d/64), L); attention's 1-bit
    Q, K, V without their float rows. linear: `BinaryLinear.params`."""
    panels, n, k, use_and, coef, bias, dot_thr, dot_flip, _, _ = linear
    dot = gemm_into(bits, _NO_ROWS, panels, k, np.empty((bits.shape[0], n), np.int32), use_and, threads, NO_COLS)
    L, d = dot.shape[0] // batch, n // heads
    shape = (batch, heads, (d + 63) // 64, L) if keys_major else (batch, heads, L, (d + 63) // 64)
    return affine_pack_heads(dot, coef, bias, beta, heads, keys_major, dot_thr, dot_flip, np.empty(shape, np.uint64),
                             threads)

@njit(cache=True)
def binary_attention(q_in, k_in, v_in, q, k, v, batch, consts, key_add, key_bits, score_res, value_res, threads):
    """BinaryAttention's context from the packed inputs of its Q, K, V linears (their `params`) and
    its `consts`; key_add / key_bits: the key mask as `key_add` and packed bits (B, ceil(L/64))."""
    heads, scaling, code, qk_coef, bq, bk, bv, pa, pb, rule_alpha, p_thr, p_divide, pv_coef = consts
    M, hidden = q_in.shape[0], q[1]
    d, L = hidden // heads, M // batch
    vrows = binary_heads(v_in, v, bv, batch, heads, False, threads)
    vt = heads_along_tokens(vrows, d, np.empty((batch, heads, (L + 63) // 64, d), np.uint64))
    return attention_kernel(binary_heads(q_in, q, bq, batch, heads, False, threads),
                            binary_heads(k_in, k, bk, batch, heads, True, threads), vt, qk_coef, scaling, key_add,
                            key_bits, code, pa, pb, rule_alpha, p_thr, p_divide, pv_coef, score_res, value_res,
                            np.empty((M, hidden), np.float32))

@dataclass(frozen=True)
class LevelsAttention:
    """Self-attention on multi-bit Q, K, V (BiT's 1-1-2, 1-1-4).

    Each of Q, K, V becomes levels o + Qn (`quantize_levels`, the same Qn for all three: one bit
    width) and the scores α_q α_k Σ (o_q + Qn)(o_k + Qn) come from AND-popcounts of their bit planes
    plus the plane sums; the map (softmax then the map quantizer's levels, BiT; bool or softmax-sign
    as the 1-bit path) is multiplied with V's planes the same way. Masked keys get level 0.
    """

    heads: int
    scaling: np.float32
    code: int
    q: InputQuant
    k: InputQuant
    v: InputQuant
    p: tuple[float, float, int] = (1.0, 0.0, 1)  # (α_p, β_p, top level) of the map

    def __call__(self, q_linear: BinaryLinear, k_linear: BinaryLinear, v_linear: BinaryLinear,
                 inputs: tuple[np.ndarray, ...], batch: int, keys: KeyMask, threads: int,
                 score_res: np.ndarray | None = None, value_res: np.ndarray | None = None) -> np.ndarray:
        """As `BinaryAttention.__call__`; inputs: each linear's input bit planes (b, B*L, Kw)."""
        stacked = tuple(np.ascontiguousarray(t).reshape(-1, t.shape[-1]) for t in inputs)
        return levels_attention(*stacked, q_linear.params, k_linear.params, v_linear.params, batch, self.consts,
                                keys.add, keys.bits, _residual_operand(score_res), _residual_operand(value_res),
                                threads)

    @cached_property
    def consts(self) -> tuple:
        """What `levels_attention` takes: (heads, scaling, map code, α_q α_k, Q's, K's and V's
        `InputQuant.levels_rule`, the map's level thresholds and direction (`thresholds.map_thresholds`;
        none but for softmax_elastic), α_p, α_p α_v)."""
        pa, pb, p_top = self.p
        levels = map_thresholds(pa, pb, p_top) if self.code == ELASTIC else NO_MAP
        return (self.heads, self.scaling, self.code, self.q.alpha * self.k.alpha, self.q.levels_rule,
                self.k.levels_rule, self.v.levels_rule, levels.thr, levels.rising, np.float32(pa), pa * self.v.alpha)


@njit(inline="always")
def linear_dot(bits, linear, threads):
    """The integer dot of a linear (`BinaryLinear.params`) with its packed input: 1-bit rows, or
    multi-bit levels as bit planes stacked along the rows."""
    panels, n, k, use_and, col_add, planes = linear[0], linear[1], linear[2], linear[3], linear[8], linear[9]
    out = np.empty((bits.shape[0] // planes, n), np.int32)
    if planes == 1:
        return gemm_into(bits, _NO_ROWS, panels, k, out, use_and, threads, NO_COLS)
    return levels_gemm_into(bits, panels, k, out, col_add, planes, threads)


@njit(inline="always")
def _levels_heads(bits, linear, rule, batch, heads, along_tokens, threads):
    """A linear's output levels (its input: stacked bit planes) packed per head as planes, and their
    sums over d (`kernels._quantize_pack_heads`): by the linear's level thresholds on the dot, or
    when it has none, of the float epilogue (rule: `InputQuant.levels_rule`, one β)."""
    _, n, _, _, coef, bias, thr, flip, _, _ = linear
    beta, alpha, lo, hi, nplanes = rule
    dot = linear_dot(bits, linear, threads)
    L, d = dot.shape[0] // batch, n // heads
    shape = (batch, heads, nplanes, (L + 63) // 64, d) if along_tokens else (batch, heads, nplanes, L, (d + 63) // 64)
    out, sums = np.empty(shape, np.uint64), np.empty((batch, heads, L), np.int64)
    if thr.shape[0] > 0:
        return _quantize_pack_heads(NO_X, beta, np.float32(1.0), np.float32(0.0), np.float32(0.0), heads,
                                    along_tokens, out, sums, dot, thr, flip)
    x = affine(dot, coef, bias, NO_ACT, np.empty(dot.shape, np.float32))
    return _quantize_pack_heads(x, np.full(n, beta[0], np.float32), alpha, np.float32(lo), np.float32(hi), heads, along_tokens, out, sums,
                                NO_DOT, NO_THR, NO_FLIP)


@njit(cache=True)
def levels_attention(q_in, k_in, v_in, q, k, v, batch, consts, key_add, key_bits, score_res, value_res, threads):
    """LevelsAttention's context from the stacked input planes of its Q, K, V linears (their
    `params`) and its `consts`; the key mask as `binary_attention` takes it."""
    heads, scaling, code, qk_coef, q_rule, k_rule, v_rule, p_thr, p_rising, pa, pv_coef = consts
    qp, qsum = _levels_heads(q_in, q, q_rule, batch, heads, False, threads)
    kp, ksum = _levels_heads(k_in, k, k_rule, batch, heads, False, threads)
    vp, _ = _levels_heads(v_in, v, v_rule, batch, heads, True, threads)
    M, hidden = qsum.shape[0] * qsum.shape[2], q[1]
    return attention_levels_kernel(qp, qsum, kp, ksum, vp, np.int32(q_rule[2]), qk_coef, scaling, key_add, key_bits,
                                   code, p_thr, p_rising, pa, pv_coef, score_res, value_res,
                                   np.empty((M, hidden), np.float32))


def attention_for(record: AttentionRecord | None, spec: ModelSpec) -> BinaryAttention | LevelsAttention:
    """The kernel that runs a layer's attention record: the only place its mode is looked at.
    Raises EngineError for attention the engine does not run (float Q/K/V or map, mixed bits)."""
    mode = None if record is None else record.mode
    if record is None or mode not in MAP_CODES or None in (record.q, record.k, record.v):
        raise EngineError("the packed engine runs quantized attention (binarized Q, K, V and a map in "
                          f"{list(MAP_CODES)}); use PyTorch for attention_probs={mode!r} or float Q, K, V")
    code = MAP_CODES[mode]
    q, k, v = (InputQuant.from_record(r, 1) for r in (record.q, record.k, record.v))
    if not (q.signed and k.signed and v.signed) or len({q.bits, k.bits, v.bits}) != 1:
        raise EngineError("the packed engine runs attention on signed Q, K, V of one bit width; got "
                          f"{[(t.bits, t.signed) for t in (q, k, v)]}")
    p = None
    if code == ELASTIC:
        if record.p is None or record.p.kind != "elastic" or record.p.signed or record.p.bits != q.bits:
            raise EngineError(f"softmax_elastic attention needs an unsigned elastic {q.bits}-bit map quantizer")
        p = InputQuant.from_record(record.p, 1)
    scaling = np.float32(spec.head_dim ** -0.5)
    if q.bits > 1:
        top = (float(p.alpha), p.scalar_beta, p.levels[1]) if p is not None else (1.0, 0.0, 1)
        return LevelsAttention(spec.heads, scaling, code, q, k, v, top)
    return BinaryAttention(spec.heads, scaling, code, *((float(t.alpha), t.scalar_beta) for t in (q, k, v)),
                           p=(1.0, 0.0) if p is None else (float(p.alpha), p.scalar_beta))
