"""Bitwise CPU kernels on packed 1-bit tensors (numba).

Bit layout (fixed; every packed tensor in bitbert uses it):
    A row of K elements is stored in Kw = ceil(K / 64) uint64 words. Element k lives in word k // 64,
    bit k % 64 (LSB first), i.e. little-endian bit order; on little-endian hosts this is exactly
    ``np.packbits(..., bitorder="little")`` viewed as uint64. Padding bits past K are 0.
    A set bit means +1 for signed (±1) tensors and 1 for {0,1} tensors; a clear bit means -1 / 0.

Arithmetic:
    ±1 · ±1 dot product of two rows:      K - 2 * popcount(a XOR w)
    {0,1} · ±1 dot product (a01, w):       2 * popcount(a AND w) - popcount(a)
Zero padding makes both exact without masking the last word.

Multi-bit activations (BiT's 1-1-2, 1-1-4) run bit-serially on the same kernels: a b-bit level
q = o + Qn (o ∈ [0, 2^b − 1], Qn the lowest level) is split into b bit planes o = Σ_p 2^p o_p, and
    q · w = Σ_p 2^p (o_p · w) + Qn · Σ_k w_k
i.e. b {0,1} x ±1 AND-popcount GEMMs, shifted and summed, plus a per-row constant (`bitserial_gemm`).

The GEMMs use a BLIS-style schedule: for each panel of NB = 16 * _NV weight rows, the panel is
re-laid out half-word-major (2·Kw, NB) uint32 so that one SIMD load covers 16 output columns; a
register tile of _MR activation rows x NB columns is then accumulated with broadcast(a's 32-bit
half-word) XOR/AND panel + popcount, in int32 lanes. The tile is emitted as LLVM IR (``_tile``)
because LLVM's loop vectorizer, given the same loop in numba source, keeps the accumulators in
memory or not depending on pass heuristics (measured 300-1100 Gbit-MAC/s across equivalent
formulations). ``llvm.ctpop`` on <16 x i32> becomes VPOPCNTD with AVX-512 VPOPCNTDQ, and LLVM's
PSHUFB nibble-table popcount on AVX2-only CPUs (same code, the fallback is the compiler's; tests
check it with NUMBA_CPU_NAME=haswell). Scalar popcounts in numba
code use the SWAR idiom (``popcount64``), which LLVM turns into POPCNT / vectorised VPOPCNTQ.
Threads split the column panels (not the rows): each panel is re-laid out once, and M = 1 still
parallelises.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..core.packed_schema import pack_bits, unpack_bits  # noqa: F401 (the bit layout is the file format's)
from ..core.packed_schema import words as _words

__all__ = [
    "pack_bits",
    "unpack_bits",
    "binarize_pack_signed",
    "binarize_pack_unsigned",
    "binarize_pack_elastic",
    "elastic_rule",
    "PackedWeights",
    "prepack",
    "xnor_gemm",
    "pack_heads",
    "pack_heads_transposed",
    "mask64",
    "and_gemm",
    "quantize_levels",
    "pack_planes",
    "quantize_pack_planes",
    "row_sums",
    "bitserial_gemm",
    "planes_offset",
    "popcount64",
    "plane_mask64",
    "quantize_pack_heads",
    "levels_pack_planes",
    "levels_pack_heads",
    "transpose64",
    "heads_along_tokens",
    "set_num_threads",
]

# Register tile: _MR activation rows x _NB = 8 * _NV columns, i.e. _MR * _NV accumulator vectors.
# Measured single thread at M=128, K=768 (Gbit-MAC/s): AVX-512 4x2 ~1900, 4x4 ~1950, 8x2 ~1850;
# AVX2 4x2 ~377, 4x4 ~311 (16 ymm registers spill). 4x2 is within noise of the best on both.
_MR = 4
_NV = 2
_LANES32 = 16  # int32 lanes of one 512-bit vector
_NB = _LANES32 * _NV


@njit(inline="always")
def popcount64(x: np.uint64) -> np.uint64:
    """Population count of one uint64 (SWAR; LLVM recognises the idiom as ctpop -> POPCNT/VPOPCNTQ)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


# ----------------------------------------------------------------------------- LLVM IR helpers


def _splat(builder: ir.IRBuilder, value: ir.Value, n: int) -> ir.Value:
    vec_t = ir.VectorType(value.type, n)
    v = builder.insert_element(ir.Constant(vec_t, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vec_t, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), n), None))


def _ctpop(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """llvm.ctpop on an integer vector (llvmlite's builder.ctpop accepts scalars only)."""
    t = value.type
    name = f"llvm.ctpop.v{t.count}i{t.element.width}"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t]), name)
    return builder.call(fn, [value])


def _vec_ptr(builder: ir.IRBuilder, base: ir.Value, offset: ir.Value, vec_t: ir.Type) -> ir.Value:
    return builder.bitcast(builder.gep(base, [offset]), vec_t.as_pointer())


@intrinsic
def mask64(typingctx, x, row, k0, beta, alpha, thr, divide):
    """(numba intrinsic, callable from other @njit code) uint64 whose bit b is the binarization of x[row, k0 + b], b < 64 (caller keeps k0 + 64 <= K).

    divide (literal) False: x - beta[k] >= thr; True: (x - beta[k]) / alpha > thr, the elastic
    unsigned rule round(clip((x - beta) / alpha, 0, 1)) == 1 with the same float32 operations as
    PyTorch (round half to even: exactly 0.5 rounds to 0). One <64 x float> compare that LLVM
    lowers to 4 VCMPPS into mask registers (AVX-512) or VCMPPS + VMOVMSKPS (AVX2): no per-bit shifts.
    """
    if not isinstance(divide, types.BooleanLiteral):
        return None
    is_div = divide.literal_value
    sig = types.uint64(x, row, k0, beta, alpha, thr, divide)

    def codegen(context, builder, sig, args):
        x_v, row_v, k0_v, beta_v, alpha_v, thr_v, _ = args
        xa = context.make_array(sig.args[0])(context, builder, x_v)
        ba = context.make_array(sig.args[3])(context, builder, beta_v)
        K = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        row_v = context.cast(builder, row_v, sig.args[1], types.intp)
        k0_v = context.cast(builder, k0_v, sig.args[2], types.intp)
        thr_v = context.cast(builder, thr_v, sig.args[5], types.float32)
        f32x64 = ir.VectorType(ir.FloatType(), 64)
        xv = builder.load(_vec_ptr(builder, xa.data, builder.add(builder.mul(row_v, K), k0_v), f32x64), align=4)
        bv = builder.load(_vec_ptr(builder, ba.data, k0_v, f32x64), align=4)
        u = builder.fsub(xv, bv)
        if is_div:
            alpha_f = context.cast(builder, alpha_v, sig.args[4], types.float32)
            bits = builder.fcmp_ordered(">", builder.fdiv(u, _splat(builder, alpha_f, 64)), _splat(builder, thr_v, 64))
        else:
            bits = builder.fcmp_ordered(">=", u, _splat(builder, thr_v, 64))
        return builder.bitcast(bits, ir.IntType(64))

    return sig, codegen


@intrinsic
def plane_mask64(typingctx, lv, k0, p):
    """(numba intrinsic) uint64 whose bit b is bit p of the level lv[k0 + b], b < 64 (lv 1-D uint8 C;
    the caller keeps k0 + 64 <= len(lv)). One <64 x i8> load, shift and truncate to <64 x i1>: the
    mask64 of a bit plane, so packing a plane costs a few vector instructions, not 64 shifts."""
    sig = types.uint64(lv, k0, p)

    def codegen(context, builder, sig, args):
        lv_v, k0_v, p_v = args
        la = context.make_array(sig.args[0])(context, builder, lv_v)
        k0_v = context.cast(builder, k0_v, sig.args[1], types.intp)
        p_v = builder.trunc(context.cast(builder, p_v, sig.args[2], types.int64), ir.IntType(8))
        i8x64 = ir.VectorType(ir.IntType(8), 64)
        levels = builder.load(_vec_ptr(builder, la.data, k0_v, i8x64), align=1)
        bits = builder.trunc(builder.lshr(levels, _splat(builder, p_v, 64)), ir.VectorType(ir.IntType(1), 64))
        return builder.bitcast(bits, ir.IntType(64))

    return sig, codegen


@intrinsic
def _tile(typingctx, a, rowpop, m0, panel, K, dst, d0, d1, use_and, planes, col_add):
    """One _MR x _NB output tile: dst[d0 + i, d1 + j] for rows m0 + i of `a` and panel column j.

    a: (M, Kw) uint64 C, read as 2·Kw 32-bit half-words per row (little-endian: the low half first);
    rowpop: (M,) int64 popcount(a[m]) (read only when use_and); panel: (2·Kw, _NB) uint32 C (the
    weight panel half-word-major: one 16-lane load covers 16 columns); dst: int32 C with room for
    the whole tile. Rows past M repeat row M - 1 (results the caller discards).
    use_and (literal): False -> K - 2 popcount(a ^ w); True -> 2 popcount(a & w) - popcount(a).
    Popcounts on 32-bit lanes (VPOPCNTD) keep the sums in int32 lanes: the tile's epilogue is a
    shift, a subtraction and a store per 16 outputs, not also a narrowing per 8 (K = 384: +10-15%).

    planes (literal, 1 or 2; 2 only with use_and): the bit-serial dot of 2-bit levels o = o_0 + 2 o_1
    given as planes stacked in a (planes·M, Kw) (plane p of row m at row p·M + m): each weight load
    serves both planes, whose popcounts go to their own accumulators (16 zmm) and are combined once,
    2 (acc_0 + 2 acc_1) − rowpop + col_add[j], rowpop[m] = Σ_p 2^p popcount(plane p of row m) and
    col_add (_NB,) int32 the panel's offset · Σ_k w (`bitserial_gemm`'s). Not read for 1 plane.
    """
    if not isinstance(use_and, types.BooleanLiteral) or not isinstance(planes, types.IntegerLiteral):
        return None
    is_and, nplanes = use_and.literal_value, planes.literal_value
    if nplanes not in (1, 2) or (nplanes == 2 and not is_and):
        raise TypeError("_tile: planes must be 1, or 2 with use_and")
    sig = types.void(a, rowpop, m0, panel, K, dst, d0, d1, use_and, planes, col_add)

    def codegen(context, builder, sig, args):
        a_v, rowpop_v, m0_v, panel_v, K_v, dst_v, d0_v, d1_v, _, _, col_v = args
        intp = context.get_value_type(types.intp)
        as_intp = lambda v, ty: context.cast(builder, v, ty, types.intp)  # noqa: E731
        m0_v, K_v, d0_v, d1_v = (as_intp(v, sig.args[i]) for v, i in ((m0_v, 2), (K_v, 4), (d0_v, 6), (d1_v, 7)))
        aa = context.make_array(sig.args[0])(context, builder, a_v)
        ra = context.make_array(sig.args[1])(context, builder, rowpop_v)
        pa = context.make_array(sig.args[3])(context, builder, panel_v)
        da = context.make_array(sig.args[5])(context, builder, dst_v)
        rows_all, Kw = cgutils.unpack_tuple(builder, aa.shape, 2)
        M = builder.sdiv(rows_all, ir.Constant(intp, nplanes))
        halves = builder.mul(Kw, ir.Constant(intp, 2))
        ldd = cgutils.unpack_tuple(builder, da.shape, 2)[1]
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, _LANES32)
        zero_v = ir.Constant(v16, None)
        a32 = builder.bitcast(aa.data, i32.as_pointer())

        last = builder.sub(M, ir.Constant(intp, 1))
        rows, pops = [], []  # rows[p][i]: plane p of tile row i
        for i in range(_MR):
            r = builder.add(m0_v, ir.Constant(intp, i))
            r = builder.select(builder.icmp_signed("<", r, M), r, last)
            pops.append(builder.gep(ra.data, [r]))
            for p in range(nplanes):
                if i == 0:
                    rows.append([])
                rp = builder.add(r, builder.mul(M, ir.Constant(intp, p)))
                rows[p].append(builder.gep(a32, [builder.mul(rp, halves)]))
        # Accumulators live in allocas that SROA promotes to registers: the canonical numba pattern.
        acc = [[[cgutils.alloca_once_value(builder, zero_v) for _ in range(_NV)] for _ in range(_MR)]
               for _ in range(nplanes)]

        with cgutils.for_range(builder, halves) as loop:
            q = loop.index
            prow = builder.mul(q, ir.Constant(intp, _NB))
            wv = [builder.load(_vec_ptr(builder, pa.data, builder.add(prow, ir.Constant(intp, _LANES32 * v)), v16),
                               align=4) for v in range(_NV)]
            for p in range(nplanes):
                for i in range(_MR):
                    sv = _splat(builder, builder.load(builder.gep(rows[p][i], [q])), _LANES32)
                    for v in range(_NV):
                        x = builder.and_(sv, wv[v]) if is_and else builder.xor(sv, wv[v])
                        builder.store(builder.add(builder.load(acc[p][i][v]), _ctpop(builder, x)), acc[p][i][v])

        one = _splat(builder, ir.Constant(i32, 1), _LANES32)
        if nplanes == 2:
            ca = context.make_array(sig.args[10])(context, builder, col_v)
            col = [builder.load(_vec_ptr(builder, ca.data, ir.Constant(intp, _LANES32 * v), v16), align=4)
                   for v in range(_NV)]
        for i in range(_MR):
            drow = builder.mul(builder.add(d0_v, ir.Constant(intp, i)), ldd)
            for v in range(_NV):
                total = builder.load(acc[0][i][v])
                if nplanes == 2:
                    total = builder.add(total, builder.shl(builder.load(acc[1][i][v]), one))
                twice = builder.shl(total, one)
                if is_and:
                    res = builder.sub(twice, _splat(builder, builder.trunc(builder.load(pops[i]), i32), _LANES32))
                else:
                    res = builder.sub(_splat(builder, builder.trunc(K_v, i32), _LANES32), twice)
                if nplanes == 2:
                    res = builder.add(res, col[v])
                off = builder.add(drow, builder.add(d1_v, ir.Constant(intp, _LANES32 * v)))
                builder.store(res, _vec_ptr(builder, da.data, off, v16), align=4)

    return sig, codegen


# ----------------------------------------------------------------------------- numba kernels


@njit(inline="always")
def _pack_rows(x, beta, alpha, thr, out, r_lo, r_hi, divide):
    K = x.shape[1]
    full = K // 64
    for m in range(r_lo, r_hi):
        for q in range(full):
            out[m, q] = mask64(x, m, q * 64, beta, alpha, thr, divide)
        if full * 64 < K:
            word = np.uint64(0)
            for k in range(full * 64, K):
                u = x[m, k] - beta[k]
                if (u / alpha > thr) if divide else (u >= thr):
                    word |= np.uint64(1) << np.uint64(k - full * 64)
            out[m, full] = word


@njit(cache=True)
def _binarize_pack(x, beta, alpha, thr, out, divide):
    """out[m] = pack(rule(x[m] - beta)); x (M, K) float32 C, beta (K,) float32; rule: see mask64."""
    if divide:
        _pack_rows(x, beta, alpha, thr, out, 0, x.shape[0], True)
    else:
        _pack_rows(x, beta, alpha, thr, out, 0, x.shape[0], False)
    return out


@njit(cache=True, parallel=True)
def _binarize_pack_parallel(x, beta, alpha, thr, out, divide, nthreads):
    M = x.shape[0]
    for c in prange(nthreads):
        lo, hi = c * M // nthreads, (c + 1) * M // nthreads
        if divide:
            _pack_rows(x, beta, alpha, thr, out, lo, hi, True)
        else:
            _pack_rows(x, beta, alpha, thr, out, lo, hi, False)
    return out


@njit(inline="always")
def _gemm_panels(a, w, panels, K, out, p_lo, p_hi, use_and, planes, col_add):
    """Output columns of panels [p_lo, p_hi): out[:, p*_NB : (p+1)*_NB].

    Weights come either as rows w (N, Kw), re-laid out here one panel at a time (panels is empty),
    or as panels (npan, 2·Kw, _NB) uint32 laid out once by `prepack` (w is empty). planes (literal):
    a's bit planes stacked along its rows, col_add (npan·_NB,) int32 the offset term (see `_tile`).
    """
    M, Kw = a.shape[0] // planes, a.shape[1]
    N = out.shape[1]
    relayout = panels.shape[0] == 0
    # popcount(a) per row for the AND form (Σ_p 2^p of the planes'), once per call: inside the tile
    # it would cost a scalar popcount and a GPR->vector broadcast per word (measured -20%).
    rowpop = np.zeros(M, np.int64)
    if use_and:
        for p in range(planes):
            for m in range(M):
                c = np.int64(0)
                for q in range(Kw):
                    c += popcount64(a[p * M + m, q])
                rowpop[m] += c << p
    scratch = np.zeros((2 * Kw, _NB), np.uint32)  # columns past N (last panel) only feed discarded outputs
    edge = np.empty((_MR, _NB), np.int32)  # landing tile for partial tiles at the M / N borders
    for p in range(p_lo, p_hi):
        n0 = p * _NB
        nn = min(_NB, N - n0)
        if relayout:
            for j in range(nn):
                for q in range(Kw):
                    _halves_into(w[n0 + j, q], scratch, q, j)
            panel = scratch
        else:
            panel = panels[p]
        cols = col_add[n0:n0 + _NB]
        for m0 in range(0, M, _MR):
            if nn == _NB and m0 + _MR <= M:
                _tile(a, rowpop, m0, panel, K, out, m0, n0, use_and, planes, cols)
            else:
                _tile(a, rowpop, m0, panel, K, edge, 0, 0, use_and, planes, cols)
                for i in range(min(_MR, M - m0)):
                    for j in range(nn):
                        out[m0 + i, n0 + j] = edge[i, j]


@njit(cache=True)
def _gemm_serial(a, w, panels, K, out, use_and, col_add):
    npan = (out.shape[1] + _NB - 1) // _NB
    if col_add.shape[0] > 0:  # 2-bit planes (AND form)
        _gemm_panels(a, w, panels, K, out, 0, npan, True, 2, col_add)
    elif use_and:
        _gemm_panels(a, w, panels, K, out, 0, npan, True, 1, col_add)
    else:
        _gemm_panels(a, w, panels, K, out, 0, npan, False, 1, col_add)
    return out


@njit(cache=True, parallel=True)
def _gemm_parallel(a, w, panels, K, out, use_and, col_add, nthreads):
    # Parallel over column panels: each weight panel is re-laid out once and shared by all rows,
    # and this also splits work at M = 1 (one token), where row-parallelism could not.
    npan = (out.shape[1] + _NB - 1) // _NB
    nchunks = min(npan, nthreads)
    for c in prange(nchunks):
        lo = c * npan // nchunks
        hi = (c + 1) * npan // nchunks
        if col_add.shape[0] > 0:
            _gemm_panels(a, w, panels, K, out, lo, hi, True, 2, col_add)
        elif use_and:
            _gemm_panels(a, w, panels, K, out, lo, hi, True, 1, col_add)
        else:
            _gemm_panels(a, w, panels, K, out, lo, hi, False, 1, col_add)
    return out


@njit(inline="always")
def _halves_into(word, panel, q, j):
    """Word q of panel column j as the tile reads it: its low and high 32 bits at rows 2q, 2q + 1."""
    panel[2 * q, j] = np.uint32(word & np.uint64(0xFFFFFFFF))
    panel[2 * q + 1, j] = np.uint32(word >> np.uint64(32))


@njit(cache=True)
def _relayout(w, panels):
    N, Kw = w.shape
    for n in range(N):
        for q in range(Kw):
            _halves_into(w[n, q], panels[n // _NB], q, n % _NB)
    return panels


# ----------------------------------------------------------------------------- attention operands

@njit(inline="always")
def _level(x, beta, alpha, lo, hi):
    """clamp(rint((x − β) / α), lo, hi) − lo: rint is round half to even (as torch.round)."""
    return np.int32(min(max(np.rint((x - beta) / alpha), lo), hi) - lo)


@njit(inline="always")
def _dot_levels(dot, k0, n, thr, flip, lv):
    """lv[k] = #{l : (dot[k0 + k] XOR flip[k0 + k]) ≥ thr[l, k0 + k]} for k < n: levels from their
    integer dots (one row of dot; see `engine.thresholds.LevelThresholds`). A pass per level, each
    vectorised over the channels."""
    d, f = dot[k0:k0 + n], flip[k0:k0 + n]
    lv[:n] = 0
    for level in range(thr.shape[0]):
        t = thr[level, k0:k0 + n]
        for k in range(n):
            lv[k] += np.uint8((d[k] ^ f[k]) >= t[k])


@njit(inline="always")
def _row_levels(x, dot, thr, flip, m, k0, n, beta, alpha, lo, hi, lv):
    """lv[:n] = the levels of channels k0.. of row m: by integer compares on dot when thr is not
    empty, else of the floats x (β of those channels)."""
    if thr.shape[0] > 0:
        _dot_levels(dot[m], k0, n, thr, flip, lv)
    else:
        row = x[m, k0:k0 + n]
        for t in range(n):  # vectorises (rint is VROUNDPS)
            lv[t] = _level(row[t], beta[t], alpha, lo, hi)


@njit(cache=True, parallel=True)
def _quantize_pack_heads(x, beta, alpha, lo, hi, heads, along_tokens, out, sums, dot, thr, flip):
    """Each head's levels of x (B*L, H*d) as bit planes: out (B, H, b, L, dw) packed along d, or with
    along_tokens (B, H, b, Lw, d) packed along the tokens; sums (B, H, L) = Σ_d levels. With thr
    (not empty) the levels by integer compares on dot (B*L, H*d) instead (x unused; `_dot_levels`).

    A token's levels for all heads at once (each pass vectorised over the whole row), then each
    head's planes and sum; along the tokens, the planes packed along d are re-packed by 64 x 64 bit
    transposes (`heads_along_tokens`)."""
    B, H, planes = out.shape[0], out.shape[1], out.shape[2]
    by_dot = thr.shape[0] > 0
    M, N = (dot.shape[0], dot.shape[1]) if by_dot else (x.shape[0], x.shape[1])
    L, d = M // B, N // heads
    dw = (d + 63) // 64
    rows = out if not along_tokens else np.empty((B, H, planes, L, dw), np.uint64)
    for m in prange(M):
        b, i = m // L, m % L
        lv = np.zeros(N + 64, np.uint8)  # the token's levels; entries past N stay 0 (the last head's padding)
        _row_levels(x, dot, thr, flip, m, 0, N, beta, alpha, lo, hi, lv)
        for h in range(H):
            s = 0  # Σ_d levels, from the planes' popcounts
            for w in range(dw):
                keep = np.uint64(-1) >> np.uint64(64 - min(64, d - 64 * w))  # the head's own channels
                for p in range(planes):
                    word = plane_mask64(lv, h * d + 64 * w, p) & keep
                    rows[b, h, p, i, w] = word
                    s += np.int64(popcount64(word)) << p
            sums[b, h, i] = s
    if along_tokens:
        for p in range(planes):
            heads_along_tokens(rows[:, :, p], d, out[:, :, p])
    return out, sums


@njit(cache=True, parallel=True)
def _pack_heads(x, beta, heads, out):
    """out[b, h, i] = pack(x[b*L + i, h*d : (h+1)*d] - beta >= 0): one packed row per head."""
    B, H, L, dw = out.shape
    d = x.shape[1] // heads
    betas = np.full(x.shape[1], beta, np.float32)
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        for i in range(L):
            m = b * L + i
            for w in range(dw):
                k0 = h * d + 64 * w
                n = min(64, d - 64 * w)
                if n == 64:
                    out[b, h, i, w] = mask64(x, m, k0, betas, np.float32(1.0), np.float32(0.0), False)
                else:
                    word = np.uint64(0)
                    for t in range(n):
                        if x[m, k0 + t] - beta >= 0:
                            word |= np.uint64(1) << np.uint64(t)
                    out[b, h, i, w] = word
    return out


@njit(cache=True, parallel=True)
def _pack_heads_transposed(x, beta, heads, out):
    """out[b, h, w, t] bit jj = (x[b*L + 64w + jj, h*d + t] - beta >= 0): V packed along keys.

    Each head's (L, d) block is transposed into a (d, 64*Lw) float buffer so that mask64 packs
    64 keys per compare; bits past L are cleared.
    """
    B, H, Lw, d = out.shape
    L = x.shape[0] // B
    betas = np.full(Lw * 64, beta, np.float32)
    tail = np.uint64(0xFFFFFFFFFFFFFFFF) if L % 64 == 0 else (np.uint64(1) << np.uint64(L % 64)) - np.uint64(1)
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        buf = np.zeros((d, Lw * 64), np.float32)
        for j in range(L):
            for t in range(d):
                buf[t, j] = x[b * L + j, h * d + t]
        for t in range(d):
            for w in range(Lw):
                out[b, h, w, t] = mask64(buf, t, 64 * w, betas, np.float32(1.0), np.float32(0.0), False)
            out[b, h, Lw - 1, t] &= tail
    return out


@njit(inline="always")
def transpose64(a):
    """Transpose the 64 x 64 bit matrix a (64,) uint64 in place: bit t of word j <-> bit j of word t
    (LSB first). Six stages of swapping the off-diagonal blocks (Hacker's Delight, 7-3), 6 x 32 swaps."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j != 0:
        k = 0
        while k < 64:
            t = ((a[k] >> np.uint64(j)) ^ a[k + j]) & m
            a[k + j] ^= t
            a[k] ^= t << np.uint64(j)
            k = (k + j + 1) & ~j
        j >>= 1
        m ^= m << np.uint64(j)


@njit(cache=True, parallel=True)
def heads_along_tokens(rows, d, out):
    """out[b, h, w, t] bit jj = bit t % 64 of rows[b, h, 64w + jj, t // 64]: each head's packed rows
    (B, H, L, dw), one per token, re-packed along the tokens (B, H, Lw, d) by 64 x 64 bit transposes.
    Bits past L stay 0 (the rows' own padding bits past d are never read)."""
    B, H, L, dw = rows.shape
    Lw = out.shape[2]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        block = np.empty(64, np.uint64)
        for w in range(Lw):
            n = min(64, L - 64 * w)
            for cw in range(dw):
                for jj in range(n):
                    block[jj] = rows[b, h, 64 * w + jj, cw]
                block[n:] = 0
                transpose64(block)
                for t in range(min(64, d - 64 * cw)):
                    out[b, h, w, 64 * cw + t] = block[t]
    return out


# ----------------------------------------------------------------------------- checked-input entry points
# (the public functions below check their inputs and call these; compiled callers call them directly)


@njit(cache=True)
def pack_into(x, beta, alpha, thr, divide, out, threads):
    """out = the binarize-and-pack of x by mask64's rule (see _binarize_pack), in parallel when
    threads > 1 and x is large enough to repay waking them."""
    if threads > 1 and x.shape[0] * x.shape[1] >= _PARALLEL_MIN_ELEMENTS:
        return _binarize_pack_parallel(x, beta, alpha, thr, out, divide, min(threads, x.shape[0]))
    return _binarize_pack(x, beta, alpha, thr, out, divide)


@njit(cache=True)
def gemm_into(a, rows, panels, K, out, use_and, threads, col_add):
    """out = the XNOR (or with use_and, AND) popcount GEMM of a with the weights (rows, or panels
    laid out by prepack), threads splitting the column panels when > 1 and there are several.
    col_add empty (`NO_COLS`): a holds 1-bit rows. Not empty (`planes_offset`): a holds 2-bit levels as two stacked bit planes
    (2·M, Kw) and out (M, N) their bit-serial dot (`bitserial_gemm`), both planes in one pass."""
    if threads > 1 and out.shape[1] > _NB:
        return _gemm_parallel(a, rows, panels, K, out, use_and, col_add, threads)
    return _gemm_serial(a, rows, panels, K, out, use_and, col_add)


# ----------------------------------------------------------------------------- public API


class PackedWeights:
    """Packed ±1 weight rows laid out once, at load time, in the GEMMs' word-major panels.

    Pass it to xnor_gemm / and_gemm instead of the (N, Kw) rows to skip the per-call re-layout.
    Attributes: panels (ceil(N / 32), 2·Kw, 32) uint32 (`_tile`'s half-word-major panels), n (N), k (K).
    """

    __slots__ = ("panels", "n", "k")

    def __init__(self, w: np.ndarray, K: int) -> None:
        w = np.ascontiguousarray(w, dtype=np.uint64)
        if w.ndim != 2 or w.shape[1] != _words(K) or K < 1:
            raise ValueError(f"expected packed rows (N, {_words(K)}) for K={K}, got {w.shape}")
        self.n, self.k = w.shape[0], K
        self.panels = _relayout(w, np.zeros(((self.n + _NB - 1) // _NB, 2 * w.shape[1], _NB), np.uint32))

    @property
    def nbytes(self) -> int:
        return self.panels.nbytes


def prepack(w: np.ndarray, K: int) -> PackedWeights:
    """Lay packed ±1 weight rows w (N, ceil(K/64)) out for the GEMMs once (see PackedWeights)."""
    return PackedWeights(w, K)


def _check_rows(x: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    beta = np.ascontiguousarray(beta, dtype=np.float32)
    if x.ndim != 2 or beta.shape != (x.shape[1],):
        raise ValueError(f"expected x (M, K) and beta (K,), got {x.shape} and {beta.shape}")
    return x, beta


def _threads(threads: int | None) -> int:
    """The thread count a kernel runs with: the caller's (the engine passes its own: asking numba costs
    a few microseconds a call, ~100 calls a forward), else numba's current setting."""
    return numba.get_num_threads() if threads is None else threads


def _binarize(x: np.ndarray, beta: np.ndarray, alpha: float, threshold: float, divide: bool,
              out: np.ndarray | None, threads: int | None = None) -> np.ndarray:
    x, beta = _check_rows(x, beta)
    shape = (x.shape[0], _words(x.shape[1]))
    if out is None:
        out = np.empty(shape, np.uint64)
    elif out.shape != shape or out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint64 array of shape {shape}")
    return pack_into(x, beta, np.float32(alpha), np.float32(threshold), divide, out, _threads(threads))


def binarize_pack_unsigned(x: np.ndarray, beta: np.ndarray, threshold: float,
                           out: np.ndarray | None = None) -> np.ndarray:
    """Fused {0,1} binarize-and-pack: bit[m, k] = (x[m, k] - beta[k] >= threshold), float32 arithmetic.

    x: (M, K) float32, beta: (K,) float32 -> (M, ceil(K/64)) uint64. One pass, no temporary floats.
    """
    return _binarize(x, beta, 1.0, threshold, False, out)


def binarize_pack_signed(x: np.ndarray, beta: np.ndarray, out: np.ndarray | None = None,
                         threads: int | None = None) -> np.ndarray:
    """Fused sign binarize-and-pack: bit[m, k] = (x[m, k] - beta[k] >= 0), i.e. +1 where set."""
    return _binarize(x, beta, 1.0, 0.0, False, out, threads)


def elastic_rule(alpha: float) -> tuple[np.float32, np.float32, bool]:
    """(alpha, threshold, divide) for mask64 and the packers, of BiT's elastic rule fl((x − β) / α) > 0.5.

    float32 division rounds to nearest, ties to even, and 0.5's successor is odd, so for a finite
    α > 0: fl(u / α) > 0.5 ⟺ u / α > 0.5 + 2^-25 ⟺ u > α (0.5 + 2^-25) (exact in float64) ⟺
    u ≥ t, t the smallest float32 above it: the same bits as the division, with a compare (a
    vector division costs as much as the rest of the attention map). Other α keep the division."""
    a = np.float64(np.float32(alpha))
    if not (np.isfinite(a) and a > 0):
        return np.float32(alpha), np.float32(0.5), True
    bound = a * (0.5 + 2.0 ** -25)
    t = np.float32(bound)
    if np.float64(t) <= bound:
        t = np.nextafter(t, np.float32(np.inf))
    return np.float32(1.0), t, False


def binarize_pack_elastic(x: np.ndarray, beta: np.ndarray, alpha: float, out: np.ndarray | None = None,
                          threads: int | None = None) -> np.ndarray:
    """Fused binarize-and-pack of BiT's unsigned elastic binarizer (value alpha where set):
    bit[m, k] = round(clip((x[m, k] - beta[k]) / alpha, 0, 1)) = ((x - beta) / alpha > 0.5),
    in the float32 operations PyTorch uses (round half to even: exactly 0.5 gives 0; see elastic_rule)."""
    return _binarize(x, beta, *elastic_rule(alpha), out, threads)


def _gemm(a: np.ndarray, w: np.ndarray | PackedWeights, K: int, out: np.ndarray | None, use_and: bool,
          threads: int | None = None) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.uint64)
    if isinstance(w, PackedWeights):
        panels, N, rows = w.panels, w.n, _NO_ROWS
        if w.k != K:
            raise ValueError(f"weights were packed for K={w.k}, called with K={K}")
    else:
        rows = np.ascontiguousarray(w, dtype=np.uint64)
        panels, N = _NO_PANELS, rows.shape[0]
        if rows.ndim != 2 or rows.shape[1] != _words(K):
            raise ValueError(f"expected w (N, {_words(K)}) for K={K}, got {rows.shape}")
    if a.ndim != 2 or a.shape[1] != _words(K) or K < 1:
        raise ValueError(f"expected a (M, {_words(K)}) for K={K}, got {a.shape}")
    M = a.shape[0]
    if out is None:
        out = np.empty((M, N), np.int32)
    elif out.shape != (M, N) or out.dtype != np.int32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous int32 array of shape {(M, N)}")
    if M == 0 or N == 0:
        return out
    return gemm_into(a, rows, panels, K, out, use_and, _threads(threads), NO_COLS)


def xnor_gemm(a: np.ndarray, w: np.ndarray | PackedWeights, K: int, out: np.ndarray | None = None,
              threads: int | None = None) -> np.ndarray:
    """±1 GEMM on packed rows: out[m, n] = sum_k a[m,k] w[n,k] = K - 2 popcount(a[m] XOR w[n]).

    a: (M, Kw) uint64, w: (N, Kw) uint64 or PackedWeights, Kw = ceil(K/64), zero padding -> (M, N) int32.
    Uses numba's thread pool when ``threads`` (default numba.get_num_threads()) > 1 (see set_num_threads).
    """
    return _gemm(a, w, K, out, False, threads)


def and_gemm(a01: np.ndarray, w: np.ndarray | PackedWeights, K: int, out: np.ndarray | None = None,
             threads: int | None = None) -> np.ndarray:
    """{0,1} x ±1 GEMM: out[m, n] = sum_k a01[m,k] w[n,k] = 2 popcount(a01[m] AND w[n]) - popcount(a01[m]).

    Same shapes and threading as xnor_gemm; a01 bits are {0,1} values, w bits are ±1 signs.
    """
    return _gemm(a01, w, K, out, True, threads)


@njit(cache=True, parallel=True)
def _quantize_pack_planes(x, beta, alpha, qn, qp, out, dot, thr, flip):
    """out[p, m, w] bit jj = bit p of clamp(round((x[m, 64w + jj] − β) / α), qn, qp) − qn, or with
    thr (not empty) of the level that integer compares on dot give (x unused; see `_dot_levels`)."""
    planes, M, Kw = out.shape
    K = dot.shape[1] if thr.shape[0] > 0 else x.shape[1]
    lo, hi = np.float32(qn), np.float32(qp)
    for m in prange(M):
        lv = np.zeros(Kw * 64, np.uint8)  # padding levels stay 0
        _row_levels(x, dot, thr, flip, m, 0, K, beta, alpha, lo, hi, lv)
        for p in range(planes):
            for w in range(Kw):
                out[p, m, w] = plane_mask64(lv, 64 * w, p)
    return out


# The level kernels' "no integer dot" (the float path) and "no float rows" (the dot path).
NO_DOT, NO_THR, NO_FLIP = np.zeros((0, 0), np.int32), np.zeros((0, 0), np.int32), np.zeros(0, np.int32)
NO_X = np.zeros((0, 0), np.float32)


def quantize_pack_planes(x: np.ndarray, beta: np.ndarray, alpha: float, qn: int, qp: int, planes: int) -> np.ndarray:
    """Fused `quantize_levels` + `pack_planes` of x (M, K) float32 with per-channel β (K,):
    -> (planes, M, ceil(K/64)) uint64, in one pass without the levels array."""
    x, beta = _check_rows(x, beta)
    out = np.empty((planes, x.shape[0], _words(x.shape[1])), np.uint64)
    return _quantize_pack_planes(x, beta, np.float32(alpha), qn, qp, out, NO_DOT, NO_THR, NO_FLIP)


def levels_pack_planes(dot: np.ndarray, thr: np.ndarray, flip: np.ndarray, planes: int) -> np.ndarray:
    """`quantize_pack_planes`' layout of the levels #{l : (dot[m, k] XOR flip[k]) ≥ thr[l, k]} of an
    int32 dot (M, K): a quantized linear output from its integer dot (`engine.thresholds`)."""
    out = np.empty((planes, dot.shape[0], _words(dot.shape[1])), np.uint64)
    return _quantize_pack_planes(NO_X, np.zeros(0, np.float32), np.float32(1.0), 0, 0, out, dot, thr, flip)


def quantize_levels(x: np.ndarray, beta: np.ndarray | float, alpha: float, qn: int, qp: int) -> np.ndarray:
    """The integer levels of `bitbert.quant.quantizers.ElasticQuant`, offset to start at 0:
    clamp(round((x − β) / α), qn, qp) − qn as uint8, in the float32 operations PyTorch uses (round
    half to even, as torch.round). β broadcasts over the last axis (per channel) or is a scalar."""
    if not 0 < qp - qn < 256:
        raise ValueError(f"levels {qn}..{qp} do not fit 8 bits")
    u = (np.asarray(x, np.float32) - np.asarray(beta, np.float32)) / np.float32(alpha)
    return (np.clip(np.rint(u), qn, qp) - qn).astype(np.uint8)


def pack_planes(levels: np.ndarray, planes: int) -> np.ndarray:
    """(..., K) unsigned levels -> (planes, ..., ceil(K/64)) uint64: plane p packs bit p of each level."""
    levels = np.asarray(levels, np.uint8)
    return np.stack([pack_bits((levels >> np.uint8(p)) & np.uint8(1)) for p in range(planes)])


def row_sums(w: np.ndarray, K: int) -> np.ndarray:
    """Σ_k w[n, k] of packed ±1 rows (N, ceil(K/64)) as int32: 2 · popcount(row) − K."""
    return (2 * unpack_bits(w, K).sum(axis=1, dtype=np.int64) - K).astype(np.int32)


def bitserial_gemm(planes: np.ndarray, w: PackedWeights, offset: int, wsum: np.ndarray,
                   threads: int | None = None) -> np.ndarray:
    """Multi-bit x ±1 GEMM: out[m, n] = Σ_k (o[m, k] + offset) w[n, k], with o given as its bit
    planes (b, M, ceil(K/64)) (`pack_planes`) and wsum = `row_sums` of w: Σ_p 2^p and_gemm(plane_p, w)
    + offset · wsum. Exact in int32 for b ≤ 8 and K < 2^22."""
    b, M = planes.shape[0], planes.shape[1]
    a = np.ascontiguousarray(planes).reshape(b * M, -1)
    return levels_gemm_into(a, w.panels, w.k, np.empty((M, w.n), np.int32), planes_offset(wsum, offset), b,
                            _threads(threads))


def planes_offset(wsum: np.ndarray, offset: int) -> np.ndarray:
    """The bit-serial dot's per-column term offset · Σ_k w[n, k] (int32), padded to whole panels:
    `levels_gemm_into`'s col_add."""
    n = wsum.shape[0]
    out = np.zeros((n + _NB - 1) // _NB * _NB, np.int32)
    out[:n] = np.int32(offset) * np.asarray(wsum, np.int32)
    return out


@njit(cache=True)
def levels_gemm_into(a, panels, K, out, col_add, planes, threads):
    """out (M, N) = the bit-serial dot Σ_p 2^p and_gemm(plane p) + col_add of levels given as bit
    planes stacked along a's rows (planes·M, Kw) (`bitserial_gemm`). 2 planes: one pass of the
    register tile over both; more: one GEMM over all planes' rows, combined after."""
    if planes == 2:
        return gemm_into(a, _NO_ROWS, panels, K, out, True, threads, col_add)
    M, N = out.shape
    parts = gemm_into(a, _NO_ROWS, panels, K, np.empty((planes * M, N), np.int32), True, threads, NO_COLS)
    for m in range(M):
        for n in range(N):
            out[m, n] = col_add[n]
        for p in range(planes):
            for n in range(N):
                out[m, n] += parts[p * M + m, n] << p
    return out


def quantize_pack_heads(x: np.ndarray, beta: np.ndarray | float, alpha: float, qn: int, qp: int, planes: int,
                        batch: int, heads: int, along_tokens: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fused `quantize_levels` + `pack_planes` of each head's slice of x (B*L, heads*d) float32, β per
    channel or a scalar: -> the bit planes (B, heads, planes, L, ceil(d/64)) uint64, or with
    along_tokens (B, heads, planes, ceil(L/64), d) (the operand of map x V), and the level sums over
    d (B, heads, L) int64 (the offset term of a bit-serial dot)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    beta = np.ascontiguousarray(np.broadcast_to(np.asarray(beta, np.float32).reshape(-1), (x.shape[1],)))
    L, d = x.shape[0] // batch, x.shape[1] // heads
    shape = (batch, heads, planes, _words(L), d) if along_tokens else (batch, heads, planes, L, _words(d))
    return _quantize_pack_heads(x, beta, np.float32(alpha), np.float32(qn), np.float32(qp), heads, along_tokens,
                                np.empty(shape, np.uint64), np.empty((batch, heads, L), np.int64), NO_DOT, NO_THR,
                                NO_FLIP)


def levels_pack_heads(dot: np.ndarray, thr: np.ndarray, flip: np.ndarray, planes: int, batch: int, heads: int,
                      along_tokens: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_pack_heads` of the levels that integer compares on an int32 dot (B*L, heads*d) give
    (as `levels_pack_planes`)."""
    L, d = dot.shape[0] // batch, dot.shape[1] // heads
    shape = (batch, heads, planes, _words(L), d) if along_tokens else (batch, heads, planes, L, _words(d))
    return _quantize_pack_heads(NO_X, np.zeros(0, np.float32), np.float32(1.0), np.float32(0.0), np.float32(0.0),
                                heads, along_tokens, np.empty(shape, np.uint64), np.empty((batch, heads, L), np.int64),
                                dot, thr, flip)


def pack_heads(x: np.ndarray, beta: float, batch: int, heads: int) -> np.ndarray:
    """Binarize-and-pack each head's slice of the rows of x (B*L, heads*d) float32: bit =
    (x - beta >= 0) -> (B, heads, L, ceil(d/64)) uint64, i.e. one packed row per (sequence, head, token)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    L, d = x.shape[0] // batch, x.shape[1] // heads
    return _pack_heads(x, np.float32(beta), heads, np.empty((batch, heads, L, _words(d)), np.uint64))


def pack_heads_transposed(x: np.ndarray, beta: float, batch: int, heads: int) -> np.ndarray:
    """Like pack_heads but packed along the tokens: (B, heads, ceil(L/64), d) uint64, word w of
    column t holding tokens 64w..64w+63 (the ±1 operand of attention-map x V)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    L, d = x.shape[0] // batch, x.shape[1] // heads
    return _pack_heads_transposed(x, np.float32(beta), heads, np.empty((batch, heads, _words(L), d), np.uint64))


_NO_ROWS = np.zeros((0, 1), np.uint64)
NO_COLS = np.zeros(0, np.int32)  # gemm_into's col_add for 1-bit rows
_NO_PANELS = np.zeros((0, 1, _NB), np.uint32)
# Below this many elements a parallel binarize-and-pack costs more in thread wake-up than it saves.
_PARALLEL_MIN_ELEMENTS = 1 << 16


def set_num_threads(n: int) -> None:
    """Threads used by the GEMMs (numba.set_num_threads; 1 selects the serial kernels)."""
    numba.set_num_threads(n)
