"""Float32 math exactly as PyTorch's CPU kernels compute it, as numba functions and LLVM IR.

Where a binarization threshold follows, values must land on the same side of it as in PyTorch:
LayerNorm's Welford moments (its AVX2 kernel), softmax's SLEEF exp and 16-lane reductions (its
AVX-512 kernel) and the vectorised erf of GELU are reproduced operation for operation.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..kernels import _splat, _vec_ptr

@intrinsic
def fma32(typingctx, a, b, c):
    """Fused multiply-add in float32 (one rounding), as the _mm*_fmadd_ps of PyTorch's kernels."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]), "llvm.fma.f32")
        return builder.call(fn, args)

    return sig, codegen

def _sleef_expf(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """SLEEF's expf_u10 on a float or a vector of floats (the same operations lane by lane)."""
    lanes = x.type.count if isinstance(x.type, ir.VectorType) else 0
    vec = (lambda t: ir.VectorType(t, lanes)) if lanes else (lambda t: t)  # noqa: E731
    f, i32 = vec(ir.FloatType()), vec(ir.IntType(32))
    suffix = f"v{lanes}f32" if lanes else "f32"
    mod = builder.module
    fma_fn = cgutils.get_or_insert_function(mod, ir.FunctionType(f, [f, f, f]), f"llvm.fma.{suffix}")
    rint = cgutils.get_or_insert_function(mod, ir.FunctionType(f, [f]), f"llvm.rint.{suffix}")
    fma = lambda a, b, c_: builder.call(fma_fn, [a, b, c_])  # noqa: E731

    def const(t, v):
        return ir.Constant(t, [v] * lanes) if lanes else ir.Constant(t, v)

    c = lambda v: const(f, float(np.float32(v)))  # noqa: E731
    ci = lambda v: const(i32, v)  # noqa: E731
    log2e = c(1.442695040888963407359924681001892137426645954152985934135449406931)
    q = builder.fptosi(builder.call(rint, [builder.fmul(x, log2e)]), i32)
    qf = builder.sitofp(q, f)
    s = fma(qf, c(-0.693145751953125), x)
    s = fma(qf, c(-1.428606765330187045e-06), s)
    u = c(0.000198527617612853646278381)
    for coef in (0.00139304355252534151077271, 0.00833336077630519866943359, 0.0416664853692054748535156,
                 0.166666671633720397949219, 0.5):
        u = fma(u, s, c(coef))
    u = builder.fadd(c(1.0), fma(builder.fmul(s, s), u, s))
    pow2 = lambda e: builder.bitcast(builder.shl(builder.add(e, ci(127)), ci(23)), f)  # noqa: E731
    h = builder.ashr(q, ci(1))
    u = builder.fmul(builder.fmul(u, pow2(h)), pow2(builder.sub(q, h)))
    u = builder.select(builder.fcmp_ordered("<", x, c(-104.0)), c(0.0), u)
    return builder.select(builder.fcmp_ordered("<", c(100.0), x), const(f, float("inf")), u)

@intrinsic
def expf(typingctx, d):
    """SLEEF's expf_u10 (the exp of PyTorch's vectorised softmax and erf), bit for bit."""
    sig = types.float32(types.float32)

    def codegen(context, builder, sig, args):
        return _sleef_expf(builder, args[0])

    return sig, codegen

@intrinsic
def _exp_shifted16(typingctx, row, n, shift):
    """row[0, j] = expf(row[0, j] − shift) for j < n rounded up to 16, 16 lanes per instruction (LLVM
    vectorises the scalar loop only 8 wide); the row buffer must hold n rounded up to 16."""
    sig = types.void(row, n, shift)

    def codegen(context, builder, sig, args):
        row_v, n_v, shift_v = args
        ra = context.make_array(sig.args[0])(context, builder, row_v)
        n_v = context.cast(builder, n_v, sig.args[1], types.intp)
        v16 = ir.VectorType(ir.FloatType(), 16)
        sv = _splat(builder, context.cast(builder, shift_v, sig.args[2], types.float32), 16)
        blocks = builder.sdiv(builder.add(n_v, ir.Constant(n_v.type, 15)), ir.Constant(n_v.type, 16))
        with cgutils.for_range(builder, blocks) as loop:
            ptr = _vec_ptr(builder, ra.data, builder.mul(loop.index, ir.Constant(n_v.type, 16)), v16)
            builder.store(_sleef_expf(builder, builder.fsub(builder.load(ptr, align=4), sv)), ptr, align=4)

    return sig, codegen

@intrinsic
def recip32(typingctx, x):
    """1 / x in float32 (one IEEE division) without numba's zero-division check, whose branch
    stops the caller's loop from vectorising."""
    sig = types.float32(types.float32)

    def codegen(context, builder, sig, args):
        return builder.fdiv(ir.Constant(ir.FloatType(), 1.0), args[0])

    return sig, codegen

@intrinsic
def sign_xor(typingctx, e, z):
    """e with its sign bit flipped where z's is set (PyTorch's erf: xor(sign_mask, ...)); branch-free,
    so the GELU loop vectorises (a branch on the sign mispredicts on every other element)."""
    sig = types.float32(types.float32, types.float32)

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        e_i, z_i = (builder.bitcast(a, i32) for a in args)
        sign = builder.and_(z_i, ir.Constant(i32, -0x80000000))
        return builder.bitcast(builder.xor(e_i, sign), ir.FloatType())

    return sig, codegen

@njit(inline="always")
def gelu(x):
    """PyTorch's vectorised erf-GELU: x * 0.5 * (1 + erf(x / sqrt 2)), erf by Abramowitz-Stegun 7.1.26."""
    z = x * np.float32(0.7071067811865476)
    a = abs(z)
    t = recip32(fma32(np.float32(0.3275911), a, np.float32(1.0)))
    r = fma32(np.float32(1.061405429), t, np.float32(-1.453152027))
    r = fma32(r, t, np.float32(1.421413741))
    r = fma32(r, t, np.float32(-0.284496736))
    r = fma32(r, t, np.float32(0.254829592))
    e = fma32(-expf(-(z * z)) * t, r, np.float32(1.0))
    return x * np.float32(0.5) * (np.float32(1.0) + sign_xor(e, z))

def _gelu_ir(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """`gelu` on a vector of floats, the same operations lane by lane."""
    lanes = x.type.count
    f, i32 = ir.VectorType(ir.FloatType(), lanes), ir.VectorType(ir.IntType(32), lanes)
    fma_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f, f, f]), f"llvm.fma.v{lanes}f32")
    fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f, [f]), f"llvm.fabs.v{lanes}f32")
    fma = lambda a, b, c_: builder.call(fma_fn, [a, b, c_])  # noqa: E731
    c = lambda v: ir.Constant(f, [float(np.float32(v))] * lanes)  # noqa: E731
    z = builder.fmul(x, c(0.7071067811865476))
    t = builder.fdiv(c(1.0), fma(c(0.3275911), builder.call(fabs, [z]), c(1.0)))
    r = fma(c(1.061405429), t, c(-1.453152027))
    for coef in (1.421413741, -0.284496736, 0.254829592):
        r = fma(r, t, c(coef))
    e = fma(builder.fmul(builder.fneg(_sleef_expf(builder, builder.fneg(builder.fmul(z, z)))), t), r, c(1.0))
    sign = builder.and_(builder.bitcast(z, i32), ir.Constant(i32, [-0x80000000] * lanes))
    erf = builder.bitcast(builder.xor(builder.bitcast(e, i32), sign), f)
    return builder.fmul(builder.fmul(x, c(0.5)), builder.fadd(c(1.0), erf))

@intrinsic
def gelu16(typingctx, row):
    """row[k] = gelu(row[k]) in place for k < len(row) rounded down to 16, 16 lanes per instruction
    (LLVM vectorises `gelu`'s loop only 8 wide); returns that count (the caller does the rest)."""
    sig = types.intp(row)

    def codegen(context, builder, sig, args):
        ra = context.make_array(sig.args[0])(context, builder, args[0])
        n = cgutils.unpack_tuple(builder, ra.shape, 1)[0]
        v16 = ir.VectorType(ir.FloatType(), 16)
        blocks = builder.sdiv(n, ir.Constant(n.type, 16))
        with cgutils.for_range(builder, blocks) as loop:
            ptr = _vec_ptr(builder, ra.data, builder.mul(loop.index, ir.Constant(n.type, 16)), v16)
            builder.store(_gelu_ir(builder, builder.load(ptr, align=4)), ptr, align=4)
        return builder.mul(blocks, ir.Constant(n.type, 16))

    return sig, codegen

_LANES = 8  # PyTorch's LayerNorm moments run in its AVX2 kernel: 8-lane Welford, chunks of 16 vectors
# LayerNorm rows whose moments are computed together: every step (a chunk's Welford, a cascade
# merge) for all of them in turn, so their latency chains overlap (one row alone waits on its FMAs)
LN_ROWS = 4

@njit(inline="always")
def _add_moments(n_add, m1_add, m2_add, n, m1, m2):
    """AddMomentsVec: merge lane moments (n_add, m1_add, m2_add) into (n, m1, m2) in place, for
    every row: (LN_ROWS, 8) lanes, one count (rows of one length have the same counts)."""
    total = n + n_add
    c = np.float32(0.0) if total == 0 else np.float32(n_add) / np.float32(total)
    for r in range(LN_ROWS):
        for lane in range(_LANES):
            delta = m1_add[r, lane] - m1[r, lane]
            m2_tmp = m2[r, lane] + m2_add[r, lane]
            c_delta = c * delta
            m0_delta = delta * np.float32(n)
            m1[r, lane] = m1[r, lane] + c_delta
            m2[r, lane] = fma32(m0_delta, c_delta, m2_tmp)
    return total

@intrinsic
def _welford_vectors(typingctx, x, m, last, base, nvec, out):
    """Welford over nvec consecutive 8-float vectors from column base of each of the LN_ROWS rows
    x[m + r] (rows past ``last`` read row ``last``), per lane: m1 += (x − m1)/(j+1),
    m2 += (x − m1_old)(x − m1_new), with PyTorch's FMAs (UpdateMomentsVec). Writes row r's m1 to
    out[0, r, :8] and m2 to out[1, r, :8]. Kept in <8 x float> registers (an IR loop: numba source
    keeps the lane arrays in memory and runs ~4x slower)."""
    sig = types.void(x, m, last, base, nvec, out)

    def codegen(context, builder, sig, args):
        x_v, m_v, last_v, base_v, n_v, out_v = args
        xa = context.make_array(sig.args[0])(context, builder, x_v)
        oa = context.make_array(sig.args[5])(context, builder, out_v)
        cols = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        m_v, last_v, base_v, n_v = (context.cast(builder, v, sig.args[i], types.intp)
                                    for v, i in ((m_v, 1), (last_v, 2), (base_v, 3), (n_v, 4)))
        f, v8 = ir.FloatType(), ir.VectorType(ir.FloatType(), _LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
        table = ir.Constant(ir.ArrayType(f, 16), [float(np.float32(1.0) / np.float32(k + 1)) for k in range(16)])
        inv = cgutils.global_constant(builder, "bitbert_welford_inv", table)
        starts, m1, m2 = [], [], []
        for r in range(LN_ROWS):
            row = builder.add(m_v, ir.Constant(m_v.type, r))
            row = builder.select(builder.icmp_signed(">", row, last_v), last_v, row)
            starts.append(builder.add(builder.mul(row, cols), base_v))
            m1.append(cgutils.alloca_once_value(builder, ir.Constant(v8, None)))
            m2.append(cgutils.alloca_once_value(builder, ir.Constant(v8, None)))
        with cgutils.for_range(builder, n_v) as loop:
            j = loop.index
            c = _splat(builder, builder.load(builder.gep(inv, [ir.Constant(ir.IntType(32), 0), j])), _LANES)  # 1/(j+1)
            for r in range(LN_ROWS):
                ptr = builder.gep(xa.data, [builder.add(starts[r], builder.mul(j, ir.Constant(j.type, _LANES)))])
                xv = builder.load(builder.bitcast(ptr, v8.as_pointer()), align=4)
                old = builder.load(m1[r])
                delta = builder.fsub(xv, old)
                new = builder.call(fma, [c, delta, old])
                builder.store(new, m1[r])
                builder.store(builder.call(fma, [delta, builder.fsub(xv, new), builder.load(m2[r])]), m2[r])
        for r in range(LN_ROWS):
            for which, acc in ((0, m1[r]), (1, m2[r])):
                dst = builder.gep(oa.data, [ir.Constant(cols.type, (which * LN_ROWS + r) * _LANES)])
                builder.store(builder.load(acc), builder.bitcast(dst, v8.as_pointer()), align=4)

    return sig, codegen

@njit(inline="always")
def _moments(x, m, last, scratch, counts, stats):
    """(mean, biased variance) of each row x[m + r], r < LN_ROWS (rows past ``last`` repeat row
    ``last``) into stats[0, r], stats[1, r], exactly as PyTorch's RowwiseMoments (Welford + cascade)."""
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
        _welford_vectors(x, m, last, i * 16 * _LANES, m0, v)
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
    mean, m2 = stats[0], stats[1]
    mean[:] = 0
    m2[:] = 0
    count = 0
    for k in range(n * _LANES, N):  # scalar tail
        count += 1
        for r in range(LN_ROWS):
            xv = x[min(m + r, last), k]
            delta = xv - mean[r]
            mean[r] += delta / np.float32(count)
            m2[r] = fma32(delta, xv - mean[r], m2[r])
    for lane in range(_LANES):  # AddMoments, as compiled (contracted to FMAs)
        total = count + n
        c = np.float32(n) / np.float32(total)
        for r in range(LN_ROWS):
            delta = stack1[0, r, lane] - mean[r]
            mean[r] = fma32(c, delta, mean[r])
            m2[r] = m2[r] + fma32(delta * delta * c, np.float32(count), stack2[0, r, lane])
        count = total
    for r in range(LN_ROWS):
        m2[r] = m2[r] / np.float32(N)

@njit(cache=True)  # compiled once, shared by its callers
def layernorm_rows(x, m, rows, gamma, beta, eps, scratch, counts, stats):
    """Rows x[m : m + rows] (rows <= LN_ROWS) normalised in place. In place on purpose: with a
    second output array that is the same array, LLVM's runtime overlap check fails and the loop
    runs scalar (4x slower)."""
    _moments(x, m, m + rows - 1, scratch, counts, stats)
    for r in range(rows):
        mean, var = stats[0, r], stats[1, r]
        rstd = np.float32(1.0) / np.sqrt(max(var, np.float32(0.0)) + eps)
        row = x[m + r]
        for k in range(row.shape[0]):
            row[k] = fma32((row[k] - mean) * rstd, gamma[k], beta[k])

@njit(inline="always")
def ln_scratch():
    """Per-task buffers of layernorm_rows: cascade stacks of m1 and m2 (64 levels), one (m1, m2)
    pair per row, the counts, and the rows' (mean, variance)."""
    return (np.zeros((130, LN_ROWS, _LANES), np.float32), np.zeros(64, np.int64),
            np.zeros((2, LN_ROWS), np.float32))

@njit(inline="always")
def row_range(task, tasks, M):
    return task * M // tasks, (task + 1) * M // tasks

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

@njit(inline="always")
def softmax_scale(row, L):
    """1 / (the sum of row[0, :L] in PyTorch's order): what `normalize_inplace` multiplies by."""
    if L < 16:
        total = row[0, 0]
        for j in range(1, L):
            total += row[0, j]
    else:
        total = _reduce16(row, L, True)
    return np.float32(1.0) / total

@njit(inline="always")
def normalize_inplace(row, L):
    """The second half of `softmax_inplace`: row[0, :L] times 1 / (its sum in PyTorch's order)."""
    inv = softmax_scale(row, L)
    for j in range(L):
        row[0, j] = row[0, j] * inv

@njit(cache=True)  # compiled once, shared by its callers
def softmax_inplace(row, L):
    """PyTorch's CPU softmax of row[0, :L] (its AVX-512 kernel): max, SLEEF exp(x − max), the sum
    of vec::reduce_all (sequential below 16 elements), x · (1/sum). The row buffer holds L rounded
    up to 16; the entries past L are overwritten (with exps nobody reads)."""
    if L < 16:
        mx = row[0, 0]
        for j in range(1, L):
            mx = max(mx, row[0, j])
    else:
        mx = _reduce16(row, L, False)
    _exp_shifted16(row, L, mx)
    normalize_inplace(row, L)
