"""Bitwise CPU inference engine for packed 1-bit models (numpy + numba + tokenizers; no torch).

:func:`load_packed` reads a file written by :func:`bitbert.export` and returns a
:class:`PackedEngine` that runs the fake-quantized forward of the PyTorch model with packed bits:

- embeddings: binary word rows (scale · ±1) + position + token type, LayerNorm;
- every encoder linear: fused binarize-and-pack of its input (signed: bit = x − β ≥ 0, value
  α·±1; BiT's unsigned FFN2 input: bit = (x − β)/α > 0.5, value α), XNOR- or AND-popcount GEMM
  against the packed ±1 weights, × α·s (+ bias);
- attention: Q, K, V binarized (α·±1, scalar β), scores α_q α_k (d − 2 popcount(q ⊕ k)) / √d +
  mask, then BiT's softmax → {0, α_p} or BiBERT's bool(score ≥ 0); masked keys dropped; the
  context is an AND-popcount of the map bits with ±1 V; BiPFT residual estimators in float;
- residual adds, LayerNorm, ReLU/GELU, pooler (binarized when the model's is) + tanh, float head.

Multi-bit activations (BiT's W1A2 / W1A4 students, up to 8 bits) run bit-serially on the same
popcount arithmetic (`bitbert.kernels.bitserial_gemm`): a linear's input becomes the bit planes of
its levels clamp(round((x − β)/α), Qn, Qp) − Qn, one AND-popcount GEMM per plane; attention
(`attention_levels`) AND-popcounts every plane pair of Q and K, then of the map's levels and V.

Where a binarization threshold follows, the float32 operations are PyTorch's own CPU kernels'
(LayerNorm's Welford moments, softmax's SLEEF exp and 16-lane sum, the vectorised erf of GELU),
so values land on the same side of a threshold; the only unavoidable difference is the summation
order inside PyTorch's float GEMMs (a few ulps), which the engine replaces by exact integer dots.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import QuantConfig, levels
from .kernels import (PackedWeights, _splat, _vec_ptr, and_gemm, binarize_pack_elastic, binarize_pack_signed,
                      bitserial_gemm, mask64, pack_bits, pack_heads, pack_heads_transposed, plane_mask64,
                      popcount64, quantize_pack_heads, quantize_pack_planes, row_sums, unpack_bits, xnor_gemm)
from .packing import PackedModel, read_packed

__all__ = ["load_packed", "PackedEngine", "EngineError"]

# Attention-map modes (QuantConfig.attention_probs) the engine runs.
ATTN_MODES = {"softmax_elastic": 0, "bool": 1, "softmax_sign": 2}
_ELASTIC, _BOOL, _SIGN = 0, 1, 2
ACTIVATIONS = {"relu": 0, "gelu": 1}
_RELU, _GELU = 0, 1
_F32_MIN = np.finfo(np.float32).min
MAX_ACT_BITS = 8  # bit-serial: a linear costs one GEMM per activation bit, attention bits² popcount passes
_ROWS_PER_THREAD = 256  # tokens per thread processed together (see PackedEngine._forward)


class EngineError(ValueError):
    """The packed model uses something the packed engine does not run (the message says what)."""


# ----------------------------------------------------------------------------- float32 math as PyTorch's CPU kernels


@intrinsic
def _fma32(typingctx, a, b, c):
    """Fused multiply-add in float32 (one rounding), as the _mm*_fmadd_ps of PyTorch's kernels."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _expf(typingctx, d):
    """SLEEF's expf_u10 (the exp of PyTorch's vectorised softmax and erf), bit for bit."""
    sig = types.float32(types.float32)

    def codegen(context, builder, sig, args):
        (x,) = args
        f, i32 = ir.FloatType(), ir.IntType(32)
        mod = builder.module
        fma = cgutils.get_or_insert_function(mod, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32")
        rint = cgutils.get_or_insert_function(mod, ir.FunctionType(f, [f]), "llvm.rint.f32")
        c = lambda v: ir.Constant(f, float(np.float32(v)))  # noqa: E731
        log2e = c(1.442695040888963407359924681001892137426645954152985934135449406931)
        q = builder.fptosi(builder.call(rint, [builder.fmul(x, log2e)]), i32)
        qf = builder.sitofp(q, f)
        s = builder.call(fma, [qf, c(-0.693145751953125), x])
        s = builder.call(fma, [qf, c(-1.428606765330187045e-06), s])
        u = c(0.000198527617612853646278381)
        for coef in (0.00139304355252534151077271, 0.00833336077630519866943359, 0.0416664853692054748535156,
                     0.166666671633720397949219, 0.5):
            u = builder.call(fma, [u, s, c(coef)])
        u = builder.fadd(c(1.0), builder.call(fma, [builder.fmul(s, s), u, s]))
        pow2 = lambda e: builder.bitcast(  # noqa: E731
            builder.shl(builder.add(e, ir.Constant(i32, 127)), ir.Constant(i32, 23)), f)
        h = builder.ashr(q, ir.Constant(i32, 1))
        u = builder.fmul(builder.fmul(u, pow2(h)), pow2(builder.sub(q, h)))
        u = builder.select(builder.fcmp_ordered("<", x, c(-104.0)), c(0.0), u)
        return builder.select(builder.fcmp_ordered("<", c(100.0), x), ir.Constant(f, float("inf")), u)

    return sig, codegen


@njit(inline="always")
def _gelu(x):
    """PyTorch's vectorised erf-GELU: x * 0.5 * (1 + erf(x / sqrt 2)), erf by Abramowitz-Stegun 7.1.26."""
    z = x * np.float32(0.7071067811865476)
    a = abs(z)
    t = np.float32(1.0) / _fma32(np.float32(0.3275911), a, np.float32(1.0))
    r = _fma32(np.float32(1.061405429), t, np.float32(-1.453152027))
    r = _fma32(r, t, np.float32(1.421413741))
    r = _fma32(r, t, np.float32(-0.284496736))
    r = _fma32(r, t, np.float32(0.254829592))
    e = _fma32(-_expf(-(z * z)) * t, r, np.float32(1.0))
    erf = -e if z < 0 or (z == 0 and math.copysign(1.0, z) < 0) else e
    return x * np.float32(0.5) * (np.float32(1.0) + erf)


_LANES = 8  # PyTorch's LayerNorm moments run in its AVX2 kernel: 8-lane Welford, chunks of 16 vectors


@njit(inline="always")
def _add_moments(n_add, m1_add, m2_add, n, m1, m2):
    """AddMomentsVec: merge lane moments (n_add, m1_add, m2_add) into (n, m1, m2) in place."""
    total = n + n_add
    c = np.float32(0.0) if total == 0 else np.float32(n_add) / np.float32(total)
    for lane in range(_LANES):
        delta = m1_add[lane] - m1[lane]
        m2_tmp = m2[lane] + m2_add[lane]
        c_delta = c * delta
        m0_delta = delta * np.float32(n)
        m1[lane] = m1[lane] + c_delta
        m2[lane] = _fma32(m0_delta, c_delta, m2_tmp)
    return total


@intrinsic
def _welford_vectors(typingctx, x, m, base, nvec, out):
    """Welford over nvec consecutive 8-float vectors of row x[m] from column base, per lane:
    m1 += (x − m1)/(j+1), m2 += (x − m1_old)(x − m1_new), with PyTorch's FMAs (UpdateMomentsVec).
    Writes m1 to out[0, :8] and m2 to out[1, :8]. Kept in <8 x float> registers (an IR loop: numba
    source keeps the lane arrays in memory and runs ~4x slower)."""
    sig = types.void(x, m, base, nvec, out)

    def codegen(context, builder, sig, args):
        x_v, m_v, base_v, n_v, out_v = args
        xa = context.make_array(sig.args[0])(context, builder, x_v)
        oa = context.make_array(sig.args[4])(context, builder, out_v)
        cols = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        m_v, base_v, n_v = (context.cast(builder, v, sig.args[i], types.intp)
                            for v, i in ((m_v, 1), (base_v, 2), (n_v, 3)))
        f, v8 = ir.FloatType(), ir.VectorType(ir.FloatType(), _LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
        table = ir.Constant(ir.ArrayType(f, 16), [float(np.float32(1.0) / np.float32(k + 1)) for k in range(16)])
        inv = cgutils.global_constant(builder, "bitbert_welford_inv", table)
        m1 = cgutils.alloca_once_value(builder, ir.Constant(v8, None))
        m2 = cgutils.alloca_once_value(builder, ir.Constant(v8, None))
        start = builder.add(builder.mul(m_v, cols), base_v)
        with cgutils.for_range(builder, n_v) as loop:
            j = loop.index
            ptr = builder.gep(xa.data, [builder.add(start, builder.mul(j, ir.Constant(j.type, _LANES)))])
            xv = builder.load(builder.bitcast(ptr, v8.as_pointer()), align=4)
            c = builder.load(builder.gep(inv, [ir.Constant(ir.IntType(32), 0), j]))  # 1/(j+1), j < 16
            old = builder.load(m1)
            delta = builder.fsub(xv, old)
            new = builder.call(fma, [_splat(builder, c, _LANES), delta, old])
            builder.store(new, m1)
            builder.store(builder.call(fma, [delta, builder.fsub(xv, new), builder.load(m2)]), m2)
        ocols = cgutils.unpack_tuple(builder, oa.shape, 2)[1]
        for r, acc in ((0, m1), (1, m2)):
            dst = builder.gep(oa.data, [builder.mul(ir.Constant(ocols.type, r), ocols)])
            builder.store(builder.load(acc), builder.bitcast(dst, v8.as_pointer()), align=4)

    return sig, codegen


@njit(inline="always")
def _moments(x, m, scratch, counts):
    """(mean, biased variance) of row x[m] exactly as PyTorch's RowwiseMoments (Welford + cascade)."""
    N = x.shape[1]
    n = N // _LANES
    chunks = (n + 15) // 16
    depth = 1 if chunks <= 2 else int(math.ceil(math.log2(chunks)))
    stack1, stack2, v = scratch[:64], scratch[64:128], scratch[128:]
    stack1[:depth] = 0
    stack2[:depth] = 0
    counts[:depth] = 0
    for i in range(chunks):
        m0 = min(16, n - i * 16)
        _welford_vectors(x, m, i * 16 * _LANES, m0, v)
        counts[0] = _add_moments(m0, v[0], v[1], counts[0], stack1[0], stack2[0])
        mask = i + 1
        j = 1
        while j < depth and (mask & 1) == 0:
            counts[j] = _add_moments(counts[j - 1], stack1[j - 1], stack2[j - 1], counts[j], stack1[j], stack2[j])
            counts[j - 1] = 0
            stack1[j - 1] = 0
            stack2[j - 1] = 0
            mask >>= 1
            j += 1
    for j in range(1, depth):
        counts[0] = _add_moments(counts[j], stack1[j], stack2[j], counts[0], stack1[0], stack2[0])
    count = 0
    mean = np.float32(0.0)
    m2 = np.float32(0.0)
    for k in range(n * _LANES, N):  # scalar tail
        xv = x[m, k]
        delta = xv - mean
        count += 1
        mean += delta / np.float32(count)
        m2 = _fma32(delta, xv - mean, m2)
    for lane in range(_LANES):  # AddMoments, as compiled (contracted to FMAs)
        total = count + n
        c = np.float32(n) / np.float32(total)
        delta = stack1[0, lane] - mean
        mean = _fma32(c, delta, mean)
        m2 = m2 + _fma32(delta * delta * c, np.float32(count), stack2[0, lane])
        count = total
    return mean, m2 / np.float32(N)


@njit(cache=True)  # compiled once, shared by its callers
def _layernorm_row(x, m, gamma, beta, eps, out, scratch, counts):
    mean, var = _moments(x, m, scratch, counts)
    rstd = np.float32(1.0) / np.sqrt(max(var, np.float32(0.0)) + eps)
    for k in range(x.shape[1]):
        out[m, k] = _fma32((x[m, k] - mean) * rstd, gamma[k], beta[k])


@njit(inline="always")
def _ln_scratch():
    """Per-task buffers of _moments: cascade stacks of m1 and m2 (64 levels) and one (m1, m2) pair."""
    return np.zeros((130, _LANES), np.float32), np.zeros(64, np.int64)


@njit(inline="always")
def _row_range(task, tasks, M):
    return task * M // tasks, (task + 1) * M // tasks


# ----------------------------------------------------------------------------- fused row kernels


@njit(cache=True, parallel=True)
def _embed(ids, pos_ids, type_ids, word_bits, word_scale, word_fp, pos, types_, gamma, beta, eps, out, threads):
    """out[m] = LayerNorm((word[ids[m]] + type[type_ids[m]]) + pos[pos_ids[m]]); a binary word row
    is scale · ±1 unpacked on the fly (word_bits empty: word_fp is a float table)."""
    M, H = out.shape
    binary = word_bits.shape[0] > 0
    tasks = min(M, threads)  # one scratch allocation per task, not per row
    for task in prange(tasks):
        scratch, counts = _ln_scratch()
        lo, hi = _row_range(task, tasks, M)
        for m in range(lo, hi):
            r = ids[m]
            for k in range(H):
                if binary:
                    bit = (word_bits[r, k >> 6] >> np.uint64(k & 63)) & np.uint64(1)
                    w = word_scale[r] if bit else -word_scale[r]
                else:
                    w = word_fp[r, k]
                out[m, k] = (w + types_[type_ids[m], k]) + pos[pos_ids[m], k]
            _layernorm_row(out, m, gamma, beta, eps, out, scratch, counts)
    return out


@njit(cache=True, parallel=True)
def _affine(dot, coef, bias, act, out):
    """out = act(float32(dot * coef) + bias): the exact integer dot scaled once (act -1: none)."""
    M, N = dot.shape
    for m in prange(M):
        for n in range(N):
            y = np.float32(dot[m, n] * coef[n]) + bias[n]
            if act == _RELU:
                y = max(y, np.float32(0.0))
            elif act == _GELU:
                y = _gelu(y)
            out[m, n] = y
    return out


@njit(cache=True, parallel=True)
def _affine_residual_layernorm(dot, coef, bias, residual, gamma, beta, eps, out, threads):
    """out = LayerNorm((float32(dot * coef) + bias) + residual)."""
    M, N = dot.shape
    tasks = min(M, threads)  # one scratch allocation per task, not per row
    for task in prange(tasks):
        scratch, counts = _ln_scratch()
        lo, hi = _row_range(task, tasks, M)
        for m in range(lo, hi):
            for n in range(N):
                out[m, n] = (np.float32(dot[m, n] * coef[n]) + bias[n]) + residual[m, n]
            _layernorm_row(out, m, gamma, beta, eps, out, scratch, counts)
    return out


@intrinsic
def _reduce16(typingctx, row, n, is_sum):
    """Reduce row[0, :n] (n >= 16; the row buffer must hold n rounded up to 16) as PyTorch's
    vec::reduce_all with 16-float vectors: lane-wise over the vectors in order, the tail into the
    first lanes, then the lanes pairwise (8, 4, 2, 1) — the order of its float additions.
    is_sum (literal): sum, else max. In IR because numba source keeps the lanes in memory (4x slower)."""
    if not isinstance(is_sum, types.BooleanLiteral):
        return None
    summing = is_sum.literal_value
    sig = types.float32(row, n, is_sum)

    def codegen(context, builder, sig, args):
        row_v, n_v, _ = args
        ra = context.make_array(sig.args[0])(context, builder, row_v)
        n_v = context.cast(builder, n_v, sig.args[1], types.intp)
        v16 = ir.VectorType(ir.FloatType(), 16)
        intp = n_v.type
        op = (lambda a, b: builder.fadd(a, b)) if summing else (  # noqa: E731
            lambda a, b: builder.select(builder.fcmp_ordered(">", b, a), b, a))
        load = lambda j: builder.load(_vec_ptr(builder, ra.data, j, v16), align=4)  # noqa: E731
        acc = cgutils.alloca_once_value(builder, load(ir.Constant(intp, 0)))
        full = builder.sub(n_v, builder.srem(n_v, ir.Constant(intp, 16)))
        with cgutils.for_range(builder, builder.sdiv(full, ir.Constant(intp, 16))) as loop:
            with builder.if_then(builder.icmp_signed(">", loop.index, ir.Constant(intp, 0))):
                builder.store(op(builder.load(acc), load(builder.mul(loop.index, ir.Constant(intp, 16)))), acc)
        rest = builder.sub(n_v, full)
        with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(intp, 0))):
            lanes = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(16)))
            keep = builder.icmp_signed("<", lanes, _splat(builder, builder.trunc(rest, ir.IntType(32)), 16))
            old = builder.load(acc)
            builder.store(builder.select(keep, op(old, load(full)), old), acc)
        v = builder.load(acc)
        for half in (8, 4, 2, 1):
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), 16),
                                                          [(i + half) % 16 for i in range(16)]))
            v = op(v, hi)
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return sig, codegen


@njit(cache=True)  # compiled once, shared by its callers
def _softmax_inplace(row, L):
    """PyTorch's CPU softmax of row[0, :L] (its AVX-512 kernel): max, SLEEF exp(x − max), the sum
    of vec::reduce_all (sequential below 16 elements), x · (1/sum)."""
    if L < 16:
        mx = row[0, 0]
        for j in range(1, L):
            mx = max(mx, row[0, j])
    else:
        mx = _reduce16(row, L, False)
    for j in range(L):
        row[0, j] = _expf(row[0, j] - mx)
    if L < 16:
        total = row[0, 0]
        for j in range(1, L):
            total += row[0, j]
    else:
        total = _reduce16(row, L, True)
    inv = np.float32(1.0) / total
    for j in range(L):
        row[0, j] = row[0, j] * inv


@njit(cache=True, parallel=True)
def _attention(qh, kt, vt, qk_coef, scaling, key_add, key_bits, mode, p_alpha, p_beta, pv_coef,
               score_res, value_res, ctx):
    """Binary attention for every (sequence, head); see binary_attention.

    qh (B, H, L, dw) and kt (B, H, dw, L): packed Q rows and K words (word-major, so the score loop
    over keys is contiguous); vt (B, H, Lw, d): V packed along the keys.
    """
    B, H, L, dw = qh.shape
    Lw, d = vt.shape[2], vt.shape[3]
    has_sres, has_vres = score_res.shape[0] > 0, value_res.shape[0] > 0
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        # One score row padded to whole words; the padding never survives the AND with key_bits.
        row = np.zeros((1, Lw * 64), np.float32)
        betas = np.full(Lw * 64, p_beta, np.float32)
        pbits = np.empty(Lw, np.uint64)
        cnt = np.empty(L, np.int64)
        acc = np.empty(d, np.int64)
        for i in range(L):
            cnt[:] = 0
            for w in range(dw):
                qw = qh[b, h, i, w]
                for j in range(L):
                    cnt[j] += np.int64(popcount64(qw ^ kt[b, h, w, j]))
            for j in range(L):  # the exact dot, rounded once
                row[0, j] = np.float32((d - 2 * cnt[j]) * qk_coef)
            if has_sres:
                for j in range(L):
                    row[0, j] = row[0, j] + score_res[b, h, i, j]
            for j in range(L):
                row[0, j] = row[0, j] * scaling + key_add[b, j]
            if mode == _ELASTIC:
                _softmax_inplace(row, L)
                for w in range(Lw):
                    pbits[w] = mask64(row, 0, 64 * w, betas, p_alpha, np.float32(0.5), True) & key_bits[b, w]
            elif mode == _BOOL:
                for w in range(Lw):
                    pbits[w] = mask64(row, 0, 64 * w, betas, np.float32(1.0), np.float32(0.0), False) & key_bits[b, w]
            else:  # softmax then sign: every kept key is +1
                for w in range(Lw):
                    pbits[w] = key_bits[b, w]
            ones = np.int64(0)
            for w in range(Lw):
                ones += np.int64(popcount64(pbits[w]))
            acc[:] = 0
            for w in range(Lw):
                pw = pbits[w]
                for t in range(d):
                    acc[t] += np.int64(popcount64(pw & vt[b, h, w, t]))
            for t in range(d):
                ctx[b * L + i, h * d + t] = np.float32((2 * acc[t] - ones) * pv_coef)
            if has_vres:  # a separate loop: the branch inside the one above stops its vectorisation
                for t in range(d):
                    extra = np.float32(0.0)
                    for j in range(L):
                        if (pbits[j >> 6] >> np.uint64(j & 63)) & np.uint64(1):
                            extra += value_res[b, h, j, t]
                    ctx[b * L + i, h * d + t] = ctx[b * L + i, h * d + t] + extra * p_alpha
    return ctx


def binary_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, batch: int, heads: int, *,
                     qkv_quant: Sequence[tuple[float, float]], scaling: float, key_mask: np.ndarray,
                     mode: str, p_quant: tuple[float, float] = (1.0, 0.0),
                     score_res: np.ndarray | None = None, value_res: np.ndarray | None = None) -> np.ndarray:
    """Self-attention on binarized Q, K, V; returns the context (B*L, heads*d) float32.

    q, k, v: (B*L, heads*d) float32 projections; qkv_quant: their signed binarizers (alpha, beta)
    (value alpha · ±1, bit = x − beta ≥ 0). mode: ``softmax_elastic`` (p_quant = (alpha_p,
    beta_p)), ``bool`` or ``softmax_sign`` (QuantConfig.attention_probs). key_mask (B, L) bool.
    score_res (B, heads, L, L) and value_res (B, heads, L, d): BiPFT's residual terms, or None.
    """
    (aq, bq), (ak, bk), (av, bv) = qkv_quant
    M, hidden = q.shape
    code = ATTN_MODES[mode]
    pa, pb = (float(p_quant[0]), float(p_quant[1])) if code == _ELASTIC else (1.0, 0.0)
    key_mask = np.asarray(key_mask, dtype=bool)
    key_add = np.where(key_mask, np.float32(0.0), _F32_MIN).astype(np.float32)  # the additive mask
    keys = np.ascontiguousarray(pack_heads(k, bk, batch, heads).transpose(0, 1, 3, 2))
    return _attention(pack_heads(q, bq, batch, heads), keys,
                      pack_heads_transposed(v, bv, batch, heads), float(aq) * float(ak), np.float32(scaling),
                      key_add, pack_bits(key_mask), code, np.float32(pa), np.float32(pb), pa * float(av),
                      _residual_operand(score_res),
                      _residual_operand(value_res),
                      np.empty((M, hidden), np.float32))


@njit(cache=True, parallel=True)
def _attention_levels(qp, qsum, kp, ksum, vp, offset, qk_coef, scaling, key_add, key_keep, mode, p_alpha, p_beta,
                      p_top, p_planes, pv_coef, score_res, value_res, ctx):
    """Bit-serial attention on multi-bit Q, K, V (levels o + offset, o given as bit planes); see
    attention_levels. qp (B, H, b, L, dw), kp (B, H, b, dw, L), vp (B, H, b, Lw, d) uint64;
    qsum, ksum (B, H, L): Σ_d o. The map's levels (p_planes bit planes, top level p_top) are packed
    along the keys per row and multiplied with V's planes the same way."""
    B, H, nb, L, dw = qp.shape
    Lw, d = vp.shape[3], vp.shape[4]
    has_sres, has_vres = score_res.shape[0] > 0, value_res.shape[0] > 0
    const = np.int64(d) * offset * offset
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        row = np.zeros((1, Lw * 64), np.float32)
        plv = np.zeros(Lw * 64, np.uint8)  # the map row's levels; entries past L stay 0 (padding)
        pbits = np.zeros((p_planes, Lw), np.uint64)
        cnt = np.empty(L, np.int64)
        acc = np.empty(d, np.int64)
        for i in range(L):
            cnt[:] = 0
            for a in range(nb):
                for c in range(nb):
                    shift = np.int64(1) << np.int64(a + c)
                    for w in range(dw):
                        qw = qp[b, h, a, i, w]
                        for j in range(L):
                            cnt[j] += shift * np.int64(popcount64(qw & kp[b, h, c, w, j]))
            for j in range(L):  # the exact integer dot q·k, rounded once
                dot = cnt[j] + offset * (qsum[b, h, i] + ksum[b, h, j]) + const
                row[0, j] = np.float32(dot * qk_coef)
            if has_sres:
                for j in range(L):
                    row[0, j] = row[0, j] + score_res[b, h, i, j]
            for j in range(L):
                row[0, j] = row[0, j] * scaling + key_add[b, j]
            if mode == _ELASTIC:  # softmax, then the map's levels; masked keys are 0
                _softmax_inplace(row, L)
                for j in range(L):
                    u = (row[0, j] - p_beta) / p_alpha
                    plv[j] = np.int32(min(max(np.rint(u), np.float32(0.0)), np.float32(p_top))) * key_keep[b, j]
            elif mode == _BOOL:
                for j in range(L):
                    plv[j] = np.int32(row[0, j] >= 0) * key_keep[b, j]
            else:  # softmax then sign: every kept key is +1
                for j in range(L):
                    plv[j] = np.int32(key_keep[b, j])
            psum = np.int64(0)
            for j in range(L):
                psum += np.int64(plv[j])
            for a in range(p_planes):  # plane a packed along the keys
                for w in range(Lw):
                    pbits[a, w] = plane_mask64(plv, 64 * w, a)
            acc[:] = 0
            for a in range(p_planes):
                for c in range(nb):
                    shift = np.int64(1) << np.int64(a + c)
                    for w in range(Lw):
                        pw = pbits[a, w]
                        for t in range(d):
                            acc[t] += shift * np.int64(popcount64(pw & vp[b, h, c, w, t]))
            for t in range(d):
                ctx[b * L + i, h * d + t] = np.float32((acc[t] + offset * psum) * pv_coef)
            if has_vres:
                for t in range(d):
                    extra = np.float32(0.0)
                    for j in range(L):
                        extra += np.float32(plv[j]) * value_res[b, h, j, t]
                    ctx[b * L + i, h * d + t] = ctx[b * L + i, h * d + t] + extra * p_alpha
    return ctx


def attention_levels(q: np.ndarray, k: np.ndarray, v: np.ndarray, batch: int, heads: int, *,
                     qkv_quant: Sequence["_InputQuant"], scaling: float, key_mask: np.ndarray, mode: str,
                     p_quant: "_InputQuant | None" = None, score_res: np.ndarray | None = None,
                     value_res: np.ndarray | None = None) -> np.ndarray:
    """Self-attention on multi-bit Q, K, V (BiT's 1-1-2, 1-1-4); returns the context (B*L, heads*d).

    Each of Q, K, V becomes levels o + Qn (`quantize_levels`, the same Qn for all three: one bit
    width) and the scores α_q α_k Σ (o_q + Qn)(o_k + Qn) come from AND-popcounts of their bit planes
    plus the plane sums; the map (softmax then ``p_quant``'s levels, BiT; bool or softmax-sign as the
    1-bit path) is multiplied with V's planes the same way. Masked keys get level 0.
    """
    qq, kq, vq = qkv_quant
    offset = qq.levels[0]
    if kq.levels != qq.levels or vq.levels != qq.levels:
        raise EngineError("attention_levels needs Q, K and V quantized to the same levels")
    planes = (qq.levels[1] - qq.levels[0]).bit_length()
    M, hidden = q.shape
    code = ATTN_MODES[mode]
    if code == _ELASTIC:
        if p_quant is None:
            raise EngineError("softmax_elastic attention needs the map's quantizer")
        pa, pb, p_top = float(p_quant.alpha), float(p_quant.beta.reshape(-1)[0]), p_quant.levels[1]
    else:
        pa, pb, p_top = 1.0, 0.0, 1
    (qp, qsum), (kp, ksum), (vp, _) = (
        quantize_pack_heads(t, quant.beta, quant.alpha, *quant.levels, planes, batch, heads, along_tokens=is_v)
        for t, quant, is_v in ((q, qq, False), (k, kq, False), (v, vq, True)))
    kp = np.ascontiguousarray(kp.transpose(0, 1, 2, 4, 3))  # word-major: the score loop's keys contiguous
    key_mask = np.asarray(key_mask, dtype=bool)
    key_add = np.where(key_mask, np.float32(0.0), _F32_MIN).astype(np.float32)  # the additive mask
    return _attention_levels(qp, qsum, kp, ksum, vp, np.int64(offset),
                             float(qq.alpha) * float(kq.alpha), np.float32(scaling), key_add, key_mask, code,
                             np.float32(pa), np.float32(pb), p_top, max(1, p_top.bit_length()), pa * float(vq.alpha),
                             _residual_operand(score_res),
                             _residual_operand(value_res),
                             np.empty((M, hidden), np.float32))


def _residual_operand(res: np.ndarray | None) -> np.ndarray:
    """BiPFT's score / value residual for the attention kernels, or an empty array (none)."""
    return np.zeros((0, 0, 0, 0), np.float32) if res is None else np.ascontiguousarray(res, np.float32)


def _scalar(beta: np.ndarray) -> float:
    return float(beta.reshape(-1)[0]) if beta.size else 0.0


# ----------------------------------------------------------------------------- model pieces


@dataclass
class _InputQuant:
    """An activation quantizer: 1-bit signed (bit = x − β ≥ 0, value α·±1; plain sign is α = 1,
    β = 0), 1-bit unsigned elastic (bit = (x − β)/α > 0.5, value α), or multi-bit with integer
    ``levels`` (Qn, Qp) (value α · clamp(round((x − β)/α), Qn, Qp)). β: per channel or a scalar."""

    alpha: float
    beta: np.ndarray
    signed: bool
    bits: int = 1
    levels: tuple[int, int] = (0, 1)

    def pack(self, x: np.ndarray) -> np.ndarray:
        """Packed 1-bit rows (M, Kw), or for multi-bit the bit planes (bits, M, Kw) of the offset levels."""
        if self.bits > 1:
            return quantize_pack_planes(x, self.beta, self.alpha, *self.levels, self.bits)
        if self.signed:
            return binarize_pack_signed(x, self.beta)
        return binarize_pack_elastic(x, self.beta, self.alpha)


class _BinaryLinear:
    """y = (α · s) · dot(Q(x), ±1 W) + b with the integer dot from the popcount GEMMs (bit-serial,
    one AND-popcount GEMM per bit plane, for multi-bit inputs)."""

    def __init__(self, weights: PackedWeights, scale: np.ndarray, bias: np.ndarray, quant: _InputQuant,
                 row_sum: np.ndarray) -> None:
        self.weights, self.quant, self.row_sum = weights, quant, row_sum
        self.coef = np.ascontiguousarray(np.float64(quant.alpha) * scale.astype(np.float64) * np.ones(weights.n))
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)

    def dot(self, x: np.ndarray) -> np.ndarray:
        bits = self.quant.pack(x)
        if self.quant.bits > 1:
            return bitserial_gemm(bits, self.weights, self.quant.levels[0], self.row_sum)
        gemm = xnor_gemm if self.quant.signed else and_gemm
        return gemm(bits, self.weights, self.weights.k)

    def __call__(self, x: np.ndarray, act: int = -1) -> np.ndarray:
        dot = self.dot(x)
        return _affine(dot, self.coef, self.bias, act, np.empty(dot.shape, np.float32))


class _FloatLinear:
    """A full-precision linear (task heads, BiPFT estimators): x @ Wᵀ + b in float32."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        self.weight_t = np.ascontiguousarray(weight.astype(np.float32).T)
        self.bias = None if bias is None else bias.astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


@dataclass
class _Residual:
    """BiPFT's low-rank estimators of one attention layer (see bitbert.estimators)."""

    qk: _FloatLinear
    v_down: _FloatLinear
    v_up: _FloatLinear
    heads: int

    def terms(self, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        L = x.shape[0] // batch
        split = lambda t, width: t.reshape(batch, L, self.heads, width).transpose(0, 2, 1, 3)  # noqa: E731
        qk = self.qk(x)
        rank = qk.shape[1] // (4 * self.heads)
        q_p, k_p, q_m, k_m = (split(t, rank) for t in np.split(qk, 4, axis=1))
        scores = q_m @ k_p.transpose(0, 1, 3, 2) + q_p @ (k_m + k_p).transpose(0, 1, 3, 2)
        values = self.v_up(self.v_down(x))
        return scores.astype(np.float32), split(values, values.shape[1] // self.heads).astype(np.float32)


@dataclass
class _Layer:
    q: _BinaryLinear
    k: _BinaryLinear
    v: _BinaryLinear
    out: _BinaryLinear
    ffn_in: _BinaryLinear
    ffn_out: _BinaryLinear
    qkv_quant: tuple[_InputQuant, ...]
    p_quant: _InputQuant | None
    ln_attn: tuple[np.ndarray, np.ndarray]
    ln_ffn: tuple[np.ndarray, np.ndarray]
    residual: _Residual | None

    def __call__(self, x: np.ndarray, batch: int, key_mask: np.ndarray, engine: "PackedEngine") -> np.ndarray:
        sres = vres = None
        if self.residual is not None:
            sres, vres = self.residual.terms(x, batch)
        q, k, v = self.q(x), self.k(x), self.v(x)
        common = dict(scaling=engine.scaling, key_mask=key_mask, mode=engine.attention_mode, score_res=sres,
                      value_res=vres)
        if self.qkv_quant[0].bits > 1:
            ctx = attention_levels(q, k, v, batch, engine.heads, qkv_quant=self.qkv_quant, p_quant=self.p_quant,
                                   **common)
        else:
            p_quant = (1.0, 0.0) if self.p_quant is None else (self.p_quant.alpha, _scalar(self.p_quant.beta))
            ctx = binary_attention(q, k, v, batch, engine.heads, p_quant=p_quant,
                                   qkv_quant=tuple((t.alpha, _scalar(t.beta)) for t in self.qkv_quant), **common)
        x = self._dense_add_norm(self.out, ctx, x, self.ln_attn, engine.eps)
        hidden = self.ffn_in(x, engine.activation)
        return self._dense_add_norm(self.ffn_out, hidden, x, self.ln_ffn, engine.eps)

    @staticmethod
    def _dense_add_norm(linear: _BinaryLinear, inp: np.ndarray, residual: np.ndarray, ln,
                        eps: np.float32) -> np.ndarray:
        dot = linear.dot(inp)
        return _affine_residual_layernorm(dot, linear.coef, linear.bias, residual, ln[0], ln[1], eps,
                                          np.empty(dot.shape, np.float32), numba.get_num_threads())


# ----------------------------------------------------------------------------- the engine


class PackedEngine:
    """A packed 1-bit-weight BERT/RoBERTa sequence classifier on the CPU, 1- to 8-bit activations
    (see the module docstring).

    Use :func:`load_packed`. ``logits`` takes token ids; ``predict`` takes text (needs the
    tokenizer embedded at export). ``threads`` (default: all numba threads) applies to every call.
    """

    def __init__(self, packed: PackedModel, threads: int | None = None) -> None:
        self.path, self.config, self.architecture = packed.path, packed.config, packed.architecture
        self.quant = QuantConfig.from_dict(packed.quant_config)
        _check_supported(packed, self.quant)
        cfg = self.config
        self.threads = _check_threads(threads)
        self.heads = int(cfg["num_attention_heads"])
        self.scaling = np.float32((int(cfg["hidden_size"]) // self.heads) ** -0.5)
        self.eps = np.float32(cfg.get("layer_norm_eps", 1e-12))
        self.activation = ACTIVATIONS[cfg.get("hidden_act", "gelu")]
        self.attention_mode = self.quant.attention_probs
        self.roberta = cfg.get("model_type") == "roberta"
        self.pad_id = int(cfg.get("pad_token_id") or 0)
        positions = int(cfg["max_position_embeddings"])
        self.max_length = positions - self.pad_id - 1 if self.roberta else positions
        self.num_labels = len(cfg.get("id2label") or {}) or int(cfg.get("num_labels", 2))
        self.labels = {int(k): v for k, v in (cfg.get("id2label") or {}).items()}
        self.regression = cfg.get("problem_type") == "regression" or self.num_labels == 1
        _Builder(packed).build(self)
        self._tokenizer_json = packed.tokenizer_json
        self._tokenizer = None
        self._warned_truncation = False

    # -- inference on ids

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
               token_type_ids: np.ndarray | None = None) -> np.ndarray:
        """(B, num_labels) float32 logits for (B, L) token ids (numpy ints); masks default to ones/zeros."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be a non-empty (batch, length) integer array, got {ids.shape} "
                             f"{ids.dtype}")
        mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        types_ = np.zeros(ids.shape, np.int64) if token_type_ids is None else np.asarray(token_type_ids, np.int64)
        if mask.shape != ids.shape or types_.shape != ids.shape:
            raise ValueError(f"attention_mask / token_type_ids must have the shape of input_ids {ids.shape}")
        if ids.shape[1] > self.max_length:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds the model's maximum {self.max_length}; "
                             "truncate the input (predict() does)")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got [{ids.min()}, {ids.max()}]")
        if types_.min() < 0 or types_.max() >= self.type_vocab_size:
            raise ValueError(f"token_type_ids must be in [0, {self.type_vocab_size})")
        previous = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            return self._forward(ids.astype(np.int64), mask, types_)
        finally:
            numba.set_num_threads(previous)

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        if self.roberta:  # fairseq: padding tokens keep padding_idx, others count from padding_idx + 1
            keep = (ids != self.pad_id).astype(np.int64)
            return np.cumsum(keep, axis=1) * keep + self.pad_id
        return np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, types_: np.ndarray) -> np.ndarray:
        # Large batches run a few sequences at a time: each chunk's activations stay in the L2
        # caches, and the 1-bit weights (~10 MB for BERT-base) in L3. Measured on BERT-base, seq 128:
        # 16 ms/sequence in chunks of 256 rows per thread against 26 ms/sequence at batch 32 whole.
        per_chunk = max(1, _ROWS_PER_THREAD * self.threads // ids.shape[1])
        if ids.shape[0] > per_chunk:
            return np.concatenate([self._forward(ids[i : i + per_chunk], mask[i : i + per_chunk],
                                                 types_[i : i + per_chunk]) for i in range(0, ids.shape[0], per_chunk)])
        B, L = ids.shape
        x = _embed(ids.ravel(), np.ascontiguousarray(self._positions(ids)).ravel(), types_.ravel(),
                   *self.embedding, self.eps, np.empty((B * L, self.hidden), np.float32), self.threads)
        for layer in self.layers:
            x = layer(x, B, mask, self)
        cls = np.ascontiguousarray(x.reshape(B, L, -1)[:, 0])
        return self.head(cls)

    # -- inference on text

    @property
    def tokenizer(self):
        """The embedded ``tokenizers.Tokenizer`` (no padding; truncation at the model's maximum)."""
        if self._tokenizer is None:
            if self._tokenizer_json is None:
                raise EngineError(f"{self.path} has no tokenizer: export with tokenizer=... or call logits() with ids")
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._tokenizer_json)
            tok.no_padding()
            tok.enable_truncation(max_length=self.max_length)
            self._tokenizer = tok
        return self._tokenizer

    def encode(self, texts: Sequence[str] | Sequence[tuple[str, str]]) -> list:
        """Tokenize single texts or (text, text_pair) pairs; warns once if any is truncated."""
        if isinstance(texts, (str, tuple)) or not all(isinstance(t, str) or _is_pair(t) for t in texts):
            raise TypeError("texts must be a list of strings or of (text, text_pair) tuples")
        batch = [tuple(t) if not isinstance(t, str) else t for t in texts]
        encodings = self.tokenizer.encode_batch(batch)
        if not self._warned_truncation and any(e.overflowing for e in encodings):
            self._warned_truncation = True
            warnings.warn(f"some texts are longer than the model's maximum of {self.max_length} tokens and were "
                          "truncated", stacklevel=3)
        return encodings

    def predict(self, texts: Sequence[str] | Sequence[tuple[str, str]], batch_size: int = 32) -> list[dict[str, Any]]:
        """[{"label": name, "scores": softmax probabilities}] per text (regression: label None, scores [value])."""
        encodings = self.encode(texts)
        out: list[dict[str, Any]] = [{}] * len(encodings)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))  # little padding per batch
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            L = max(len(encodings[i].ids) for i in chunk)
            ids = np.full((len(chunk), L), self.pad_id, np.int64)
            mask = np.zeros((len(chunk), L), np.int64)
            types_ = np.zeros((len(chunk), L), np.int64)
            for r, i in enumerate(chunk):
                e = encodings[i]
                n = len(e.ids)
                ids[r, :n], mask[r, :n], types_[r, :n] = e.ids, e.attention_mask, e.type_ids
            for i, row in zip(chunk, self.logits(ids, mask, types_)):
                out[i] = self._label(row)
        return out

    def _label(self, logits: np.ndarray) -> dict[str, Any]:
        if self.regression:
            return {"label": None, "scores": [float(logits[0])]}
        z = logits.astype(np.float64) - logits.max()
        p = np.exp(z) / np.exp(z).sum()
        k = int(np.argmax(logits))
        return {"label": self.labels.get(k, str(k)), "scores": [float(v) for v in p]}


def _is_pair(t: Any) -> bool:
    return isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t)


def _check_threads(threads: int | None) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return limit
    if not 1 <= int(threads) <= limit:
        raise ValueError(f"threads must be in [1, {limit}], got {threads}")
    return int(threads)


def _check_supported(packed: PackedModel, quant: QuantConfig) -> None:
    if quant.weight_bits != 1 or not 1 <= quant.act_bits <= MAX_ACT_BITS:
        raise EngineError(f"the packed engine runs 1-bit weights and 1- to {MAX_ACT_BITS}-bit activations; use "
                          f"PyTorch for bits {quant.bits} ({packed.path})")
    if not quant.binarize_qkv or quant.attention_probs not in ATTN_MODES:
        raise EngineError("the packed engine runs quantized attention; use PyTorch for attention with "
                          f"binarize_qkv={quant.binarize_qkv}, attention_probs={quant.attention_probs!r}")
    act = packed.config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise EngineError(f"the packed engine runs FFN activations {list(ACTIVATIONS)}; this model uses {act!r}")
    if packed.config.get("model_type") not in ("bert", "roberta"):
        raise EngineError(f"unsupported model_type {packed.config.get('model_type')!r}")


class _Builder:
    """Turns a PackedModel's named tensors into the engine's layers (weights laid out once here)."""

    def __init__(self, packed: PackedModel) -> None:
        self.p = packed
        self.prefix = packed.base_prefix

    def tensor(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self.p.get(name))

    def f32(self, name: str) -> np.ndarray:
        """A float32 copy (a 0-d tensor, e.g. a scalar alpha, comes back with shape (1,))."""
        return np.ascontiguousarray(self.p.get(name), dtype=np.float32)

    def quantizer(self, name: str, channels: int = 1) -> _InputQuant:
        """The activation quantizer ``name``, its β broadcast to ``channels`` (plain sign: α 1, β 0)."""
        info = self.p.quantizers.get(name)
        if info is None or not 1 <= int(info["bits"]) <= MAX_ACT_BITS:
            raise EngineError(f"{name}: the packed engine runs 1- to {MAX_ACT_BITS}-bit activations; use PyTorch for "
                              f"{'a full-precision input' if info is None else str(info['bits']) + '-bit activations'}")
        bits, signed = int(info["bits"]), bool(info["signed"])
        if info["kind"] == "sign":
            alpha, beta = 1.0, np.zeros(1, np.float32)
        else:
            alpha, beta = float(self.f32(f"{name}.alpha")[0]), self.f32(f"{name}.beta")
        beta = np.ascontiguousarray(np.broadcast_to(beta, (channels,)) if channels > 1 else beta.reshape(-1)[:1],
                                    np.float32)
        return _InputQuant(alpha, beta, signed, bits, levels(bits, signed))

    def binary_linear(self, name: str) -> _BinaryLinear:
        if name not in self.p.binary:
            raise EngineError(f"{name}: the packed engine runs 1-bit weights; use PyTorch for a "
                              "full-precision (32-bit) weight")
        cols = int(self.p.binary[name]["cols"])
        rows = self.tensor(f"{name}.weight_bits")
        weights = PackedWeights(rows, cols)
        bias = self.f32(f"{name}.bias") if f"{name}.bias" in self.p.tensors else np.zeros(weights.n, np.float32)
        return _BinaryLinear(weights, self.f32(f"{name}.weight_scale"), bias,
                             self.quantizer(f"{name}.act_quant", cols), row_sums(rows, cols))

    def any_linear(self, name: str):
        if name in self.p.binary:
            return self.binary_linear(name)
        bias = f"{name}.bias"
        return _FloatLinear(self.f32(f"{name}.weight"), self.f32(bias) if bias in self.p.tensors else None)

    def table(self, name: str) -> np.ndarray:
        """A float embedding table; a binary one is unpacked (rows of scale · ±1)."""
        if name not in self.p.binary:
            return self.f32(f"{name}.weight")
        bits = unpack_bits(self.tensor(f"{name}.weight_bits"), int(self.p.binary[name]["cols"]))
        scale = self.f32(f"{name}.weight_scale")[:, None]
        return np.where(bits.astype(bool), scale, -scale).astype(np.float32)

    def layernorm(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.f32(f"{name}.weight"), self.f32(f"{name}.bias")

    def build(self, engine: PackedEngine) -> None:
        p = self.prefix
        emb = f"{p}.embeddings"
        word = f"{emb}.word_embeddings"
        if word in self.p.binary:
            word_bits, word_scale = self.tensor(f"{word}.weight_bits"), self.f32(f"{word}.weight_scale")
            word_fp = np.zeros((0, 0), np.float32)
            engine.vocab_size, engine.hidden = word_bits.shape[0], int(self.p.binary[word]["cols"])
        else:
            word_bits, word_scale = np.zeros((0, 0), np.uint64), np.zeros(0, np.float32)
            word_fp = self.f32(f"{word}.weight")
            engine.vocab_size, engine.hidden = word_fp.shape
        types_ = self.table(f"{emb}.token_type_embeddings")
        engine.type_vocab_size = types_.shape[0]
        engine.embedding = (word_bits, word_scale, word_fp, self.table(f"{emb}.position_embeddings"), types_,
                            *self.layernorm(f"{emb}.LayerNorm"))
        engine.layers = [self.layer(f"{p}.encoder.layer.{i}", engine.heads)
                         for i in range(int(self.p.config["num_hidden_layers"]))]
        engine.head = self.head()

    def layer(self, name: str, heads: int) -> _Layer:
        sa, att = f"{name}.attention.self", f"{name}.attention.self.bitbert"
        residual = None
        if f"{att}.residual.qk.weight" in self.p.tensors:
            residual = _Residual(*(self.any_linear(f"{att}.residual.{n}") for n in ("qk", "v_down", "v_up")), heads)
        mode = QuantConfig.from_dict(self.p.quant_config).attention_probs
        return _Layer(
            q=self.binary_linear(f"{sa}.query"), k=self.binary_linear(f"{sa}.key"), v=self.binary_linear(f"{sa}.value"),
            out=self.binary_linear(f"{name}.attention.output.dense"),
            ffn_in=self.binary_linear(f"{name}.intermediate.dense"), ffn_out=self.binary_linear(f"{name}.output.dense"),
            qkv_quant=tuple(self.quantizer(f"{att}.{n}_quant") for n in "qkv"),
            p_quant=self.quantizer(f"{att}.p_quant") if mode == "softmax_elastic" else None,
            ln_attn=self.layernorm(f"{name}.attention.output.LayerNorm"),
            ln_ffn=self.layernorm(f"{name}.output.LayerNorm"),
            residual=residual)

    def head(self):
        """The task head on the [CLS] rows: BERT's pooler + tanh + classifier, RoBERTa's head."""
        if self.p.architecture == "RobertaForSequenceClassification":
            dense, proj = self.any_linear("classifier.dense"), self.any_linear("classifier.out_proj")
            return lambda cls: proj(np.tanh(dense(cls))).astype(np.float32)
        if f"{self.prefix}.pooler.dense.bias" not in self.p.tensors:
            raise EngineError("BertForSequenceClassification without a pooler is not supported")
        pooler, classifier = self.any_linear(f"{self.prefix}.pooler.dense"), self.any_linear("classifier")
        return lambda cls: classifier(np.tanh(pooler(cls))).astype(np.float32)


def load_packed(path: str | Path, threads: int | None = None) -> PackedEngine:
    """Load a packed model written by :func:`bitbert.export` (checksums verified).

    Raises FileNotFoundError for a missing file, :class:`bitbert.packing.PackedFormatError` for a
    corrupted / truncated file or an unknown format version, and :class:`EngineError` for a model
    the packed engine does not run (full-precision activations or weights, ...).
    """
    return PackedEngine(read_packed(path), threads)
