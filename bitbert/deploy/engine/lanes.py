"""16-lane loops of the engine's kernels as LLVM IR, where numba source leaves them scalar or LLVM's
vectoriser makes them 8 lanes wide: the attention kernel's tabled softmax (an int32 min/max with a
clamp, which numba widens to int64; a table look-up by index), the multi-bit attention's
bit-serial dots (32-bit popcounts) and map levels (threshold masks), and a linear's epilogue."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..kernels import _ctpop, _splat, _vec_ptr


def _blocks16(builder: ir.IRBuilder, n: ir.Value) -> ir.Value:
    return builder.sdiv(builder.add(n, ir.Constant(n.type, 15)), ir.Constant(n.type, 16))


@intrinsic
def clamp_index16(typingctx, idx, add, n, cap):
    """idx[j] = min(idx[j] + add[j], cap) for j < n rounded up to 16 (int32 1-D arrays with that
    room); returns (the smallest entry, the largest entry below cap or 0) as int32."""
    sig = types.UniTuple(types.int32, 2)(idx, add, n, cap)

    def codegen(context, builder, sig, args):
        idx_v, add_v, n_v, cap_v = args
        ia = context.make_array(sig.args[0])(context, builder, idx_v)
        aa = context.make_array(sig.args[1])(context, builder, add_v)
        n_v = context.cast(builder, n_v, sig.args[2], types.intp)
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        capv = _splat(builder, context.cast(builder, cap_v, sig.args[3], types.int32), 16)
        zero = ir.Constant(v16, None)
        lo = cgutils.alloca_once_value(builder, capv)
        hi = cgutils.alloca_once_value(builder, zero)
        with cgutils.for_range(builder, _blocks16(builder, n_v)) as loop:
            off = builder.mul(loop.index, ir.Constant(n_v.type, 16))
            ptr = _vec_ptr(builder, ia.data, off, v16)
            c = builder.add(builder.load(ptr, align=4), builder.load(_vec_ptr(builder, aa.data, off, v16), align=4))
            below = builder.icmp_signed("<", c, capv)
            c = builder.select(below, c, capv)
            builder.store(c, ptr, align=4)
            old = builder.load(lo)
            builder.store(builder.select(builder.icmp_signed("<", c, old), c, old), lo)
            kept, old = builder.select(below, c, zero), builder.load(hi)
            builder.store(builder.select(builder.icmp_signed(">", kept, old), kept, old), hi)
        reduce = ir.FunctionType(i32, [v16])
        fn = lambda name: cgutils.get_or_insert_function(builder.module, reduce, name)  # noqa: E731
        return context.make_tuple(builder, sig.return_type,
                                  [builder.call(fn("llvm.vector.reduce.smin.v16i32"), [builder.load(lo)]),
                                   builder.call(fn("llvm.vector.reduce.smax.v16i32"), [builder.load(hi)])])

    return sig, codegen


def _has_avx512(context) -> bool:
    """Whether numba compiles for AVX-512 (the target's features, NUMBA_CPU_FEATURES included)."""
    return "+avx512f" in getattr(context.codegen(), "_tm_features", "").split(",")


@intrinsic
def gather16(typingctx, row, table, idx, n, lo, cap):
    """row[0, j] = table[min(idx[j] − lo, cap)] for j < n rounded up to 16 (row and idx with that
    room, every such index of those lanes in [0, len(table)), a multiple of 32: the caller's promise,
    nothing is checked); int32 idx, lo, cap (a window of a larger table without a pass of its own).

    On AVX-512, a two-register permute (VPERMI2PS) per 32 entries of the table, which is small
    (the attention tables have d + 2 entries), instead of a memory gather (~3x slower here)."""
    sig = types.void(row, table, idx, n, lo, cap)

    def codegen(context, builder, sig, args):
        row_v, tab_v, idx_v, n_v, lo_v, cap_v = args
        ra = context.make_array(sig.args[0])(context, builder, row_v)
        ta = context.make_array(sig.args[1])(context, builder, tab_v)
        ia = context.make_array(sig.args[2])(context, builder, idx_v)
        n_v = context.cast(builder, n_v, sig.args[3], types.intp)
        entries = cgutils.unpack_tuple(builder, ta.shape, 1)[0]
        f, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
        f16, i16 = ir.VectorType(f, 16), ir.VectorType(i32, 16)
        table = lambda at: builder.load(_vec_ptr(builder, ta.data, at, f16), align=4)  # noqa: E731
        lov, capv = (_splat(builder, context.cast(builder, v, t, types.int32), 16)
                     for v, t in ((lo_v, sig.args[4]), (cap_v, sig.args[5])))

        def blocks(lookup):  # row[0, 16b : 16b + 16] = lookup(idx[16b : 16b + 16]) for each block b
            with cgutils.for_range(builder, _blocks16(builder, n_v)) as loop:
                off = builder.mul(loop.index, ir.Constant(n_v.type, 16))
                ix = builder.sub(builder.load(_vec_ptr(builder, ia.data, off, i16), align=4), lov)
                ix = builder.select(builder.icmp_signed("<", ix, capv), ix, capv)
                builder.store(lookup(ix), _vec_ptr(builder, ra.data, off, f16), align=4)

        if not _has_avx512(context):
            p16 = ir.VectorType(f.as_pointer(), 16)
            gather = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(f16, [p16, i32, ir.VectorType(ir.IntType(1), 16), f16]),
                "llvm.masked.gather.v16f32.v16p0f32")
            every = ir.Constant(ir.VectorType(ir.IntType(1), 16), [1] * 16)
            base = _splat(builder, builder.ptrtoint(ta.data, i64), 16)

            def by_gather(ix):
                offs = builder.shl(builder.sext(ix, ir.VectorType(i64, 16)), _splat(builder, ir.Constant(i64, 2), 16))
                return builder.call(gather, [builder.inttoptr(builder.add(base, offs), p16), ir.Constant(i32, 4), every,
                                             ir.Constant(f16, None)])

            blocks(by_gather)
            return
        permute = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f16, [f16, i16, f16]),
                                                 "llvm.x86.avx512.vpermi2var.ps.512")
        pairs = builder.sdiv(entries, ir.Constant(entries.type, 32))

        def by_pairs(ix, halves):  # halves: each pair's two 16-entry vectors
            part = builder.ashr(ix, _splat(builder, ir.Constant(i32, 5), 16))
            got = builder.call(permute, [halves[0][0], ix, halves[0][1]])
            for p, (lo, hi) in enumerate(halves[1:], 1):
                here = builder.icmp_signed("==", part, _splat(builder, ir.Constant(i32, p), 16))
                got = builder.select(here, builder.call(permute, [lo, ix, hi]), got)
            return got

        # Tables of up to _PAIRS_IN_REGISTERS pairs: loaded once, the block loop unrolled over them.
        done = builder.append_basic_block("gather16.done")
        for count in range(1, _PAIRS_IN_REGISTERS + 1):
            with builder.if_then(builder.icmp_signed("==", pairs, ir.Constant(pairs.type, count))):
                halves = [(table(ir.Constant(entries.type, 32 * p)), table(ir.Constant(entries.type, 32 * p + 16)))
                          for p in range(count)]
                blocks(lambda ix: by_pairs(ix, halves))
                builder.branch(done)
        got = cgutils.alloca_once(builder, f16)

        def by_pair_loop(ix):  # larger tables: one pair at a time from memory
            builder.store(ir.Constant(f16, None), got)
            part = builder.ashr(ix, _splat(builder, ir.Constant(i32, 5), 16))
            with cgutils.for_range(builder, pairs) as pair:
                at = builder.mul(pair.index, ir.Constant(entries.type, 32))
                here = builder.icmp_signed("==", part, _splat(builder, builder.trunc(pair.index, i32), 16))
                found = builder.call(permute, [table(at), ix, table(builder.add(at, ir.Constant(entries.type, 16)))])
                builder.store(builder.select(here, found, builder.load(got)), got)
            return builder.load(got)

        blocks(by_pair_loop)
        builder.branch(done)
        builder.position_at_end(done)

    return sig, codegen


_PAIRS_IN_REGISTERS = 4  # up to 128 entries (d up to 126): 8 zmm registers


@intrinsic
def affine16(typingctx, dot, coef, bias, residual, out):
    """out[n] = float32(dot[n] · coef[n]) + bias[n] (int32 dot, float64 coef: the exact dot rounded
    once), then + residual[n] unless residual is None, for n < len(out) rounded down to 16; returns
    that count (the caller does the rest)."""
    sig = types.intp(dot, coef, bias, residual, out)
    has_residual = not isinstance(residual, types.NoneType)

    def codegen(context, builder, sig, args):
        da, ca, ba, oa = (context.make_array(sig.args[i])(context, builder, args[i]) for i in (0, 1, 2, 4))
        n = cgutils.unpack_tuple(builder, oa.shape, 1)[0]
        f16, d16, i16 = (ir.VectorType(t, 16) for t in (ir.FloatType(), ir.DoubleType(), ir.IntType(32)))
        blocks = builder.sdiv(n, ir.Constant(n.type, 16))
        with cgutils.for_range(builder, blocks) as loop:
            off = builder.mul(loop.index, ir.Constant(n.type, 16))
            dots = builder.sitofp(builder.load(_vec_ptr(builder, da.data, off, i16), align=4), d16)
            scaled = builder.fptrunc(builder.fmul(dots, builder.load(_vec_ptr(builder, ca.data, off, d16), align=8)),
                                     f16)
            res = builder.fadd(scaled, builder.load(_vec_ptr(builder, ba.data, off, f16), align=4))
            if has_residual:
                ra = context.make_array(sig.args[3])(context, builder, args[3])
                res = builder.fadd(res, builder.load(_vec_ptr(builder, ra.data, off, f16), align=4))
            builder.store(res, _vec_ptr(builder, oa.data, off, f16), align=4)
        return builder.mul(blocks, ir.Constant(n.type, 16))

    return sig, codegen


@intrinsic
def dot_mask64(typingctx, dot, k0, thr, flip):
    """uint64 whose bit b is (dot[k0 + b] XOR flip[k0 + b]) >= thr[k0 + b], b < 64: int32 1-D arrays
    with room for 64 entries from k0 (the caller's promise); see `thresholds.DotThresholds`."""
    sig = types.uint64(dot, k0, thr, flip)

    def codegen(context, builder, sig, args):
        da, ta, fa = (context.make_array(sig.args[i])(context, builder, args[i]) for i in (0, 2, 3))
        k0 = context.cast(builder, args[1], sig.args[1], types.intp)
        i64 = ir.VectorType(ir.IntType(32), 64)
        load = lambda a: builder.load(_vec_ptr(builder, a.data, k0, i64), align=4)  # noqa: E731
        bits = builder.icmp_signed(">=", builder.xor(load(da), load(fa)), load(ta))
        return builder.bitcast(bits, ir.IntType(64))

    return sig, codegen


@intrinsic
def planes_dot16(typingctx, left, right, init, base, acc, n):
    """acc[j] = init[j] + base + Σ_{a, w, c} popcount(left[a, w] & right[c·W + w, j]) << (a + c) for
    j < n rounded up to 16: the bit-serial dot of one vector's bit planes (left (A, W) uint32: plane
    a's half-word w) with many vectors' planes laid out by rows (right (C·W, ≥ that) uint32: plane c's
    half-word w of 16 vectors at a time); init, acc int32 with that room (the caller's promise). The
    block's sums stay in registers (VPOPCNTD on 16 lanes; numba source would widen the popcount to
    64-bit lanes). Plane counts up to _UNROLLED_PLANES get their own loop with the plane pairs
    unrolled (a loop per pair of its few iterations cost ~2x): the sums by weight a + c, then
    combined by shifts (integers: the same result in any order)."""
    sig = types.void(left, right, init, base, acc, n)

    def codegen(context, builder, sig, args):
        la, ra, ia, _, aa, _ = (context.make_array(t)(context, builder, v) if isinstance(t, types.Array) else None
                                for t, v in zip(sig.args, args))
        n_v = context.cast(builder, args[5], sig.args[5], types.intp)
        intp = n_v.type
        planes_a, halves = cgutils.unpack_tuple(builder, la.shape, 2)
        rows, stride = cgutils.unpack_tuple(builder, ra.shape, 2)
        planes_c = builder.sdiv(rows, halves)
        v16 = ir.VectorType(ir.IntType(32), 16)
        one = _splat(builder, ir.Constant(ir.IntType(32), 1), 16)
        basev = _splat(builder, context.cast(builder, args[3], sig.args[3], types.int32), 16)
        total = cgutils.alloca_once(builder, v16)
        sums = [cgutils.alloca_once(builder, v16) for _ in range(2 * _UNROLLED_PLANES - 1)]
        right_at = lambda c, w, off: _vec_ptr(  # noqa: E731
            builder, ra.data, builder.add(builder.mul(builder.add(builder.mul(c, halves), w), stride), off), v16)
        done = builder.append_basic_block("planes_dot16.done")

        def unrolled(na, nc):  # sums[a + c] over the half-words, then Horner by weight
            with cgutils.for_range(builder, _blocks16(builder, n_v)) as loop:
                off = builder.mul(loop.index, ir.Constant(intp, 16))
                for s in sums[:na + nc - 1]:
                    builder.store(ir.Constant(v16, None), s)
                with cgutils.for_range(builder, halves) as w:
                    words = [_splat(builder, builder.load(builder.gep(la.data, [
                        builder.add(builder.mul(ir.Constant(intp, a), halves), w.index)])), 16) for a in range(na)]
                    right = [builder.load(right_at(ir.Constant(intp, c), w.index, off), align=4) for c in range(nc)]
                    for a in range(na):
                        for c in range(nc):
                            s = sums[a + c]
                            builder.store(builder.add(builder.load(s), _ctpop(builder, builder.and_(words[a], right[c]))), s)
                got = builder.load(sums[na + nc - 2])
                for s in reversed(sums[:na + nc - 2]):
                    got = builder.add(builder.shl(got, one), builder.load(s))
                start = builder.add(builder.load(_vec_ptr(builder, ia.data, off, v16), align=4), basev)
                builder.store(builder.add(got, start), _vec_ptr(builder, aa.data, off, v16), align=4)

        for na in range(1, _UNROLLED_PLANES + 1):
            for nc in range(1, _UNROLLED_PLANES + 1):
                match = builder.and_(builder.icmp_signed("==", planes_a, ir.Constant(intp, na)),
                                     builder.icmp_signed("==", planes_c, ir.Constant(intp, nc)))
                with builder.if_then(match):
                    unrolled(na, nc)
                    builder.branch(done)
        with cgutils.for_range(builder, _blocks16(builder, n_v)) as loop:  # more planes: every loop at run time
            off = builder.mul(loop.index, ir.Constant(intp, 16))
            builder.store(builder.add(builder.load(_vec_ptr(builder, ia.data, off, v16), align=4), basev), total)
            with cgutils.for_range(builder, planes_a) as a:
                with cgutils.for_range(builder, halves) as w:
                    at = builder.add(builder.mul(a.index, halves), w.index)
                    word = _splat(builder, builder.load(builder.gep(la.data, [at])), 16)
                    with cgutils.for_range(builder, planes_c) as c:
                        right = builder.load(right_at(c.index, w.index, off), align=4)
                        shift = _splat(builder, builder.trunc(builder.add(a.index, c.index), ir.IntType(32)), 16)
                        ones = _ctpop(builder, builder.and_(word, right))
                        builder.store(builder.add(builder.load(total), builder.shl(ones, shift)), total)
            builder.store(builder.load(total), _vec_ptr(builder, aa.data, off, v16), align=4)
        builder.branch(done)
        builder.position_at_end(done)

    return sig, codegen


_UNROLLED_PLANES = 4  # planes_dot16's unrolled plane counts (up to 4-bit levels and maps)


@intrinsic
def threshold_masks64(typingctx, row, scale, thr, rising, out):
    """out[l, w] bit b = row[0, 64w + b] · scale ≥ thr[l] when rising, else < thr[l] (float32; NaN
    compares false), for every l < len(thr) and w < out.shape[1]: a row's level sets as 64-key
    masks, each 64-float block loaded and scaled once for every threshold (row (1, ≥ 64·words) C,
    out (≥ len(thr), words) uint64 C: the caller's promise)."""
    sig = types.void(row, scale, thr, rising, out)

    def codegen(context, builder, sig, args):
        ra, _, ta, _, oa = (context.make_array(t)(context, builder, v) if isinstance(t, types.Array) else None
                            for t, v in zip(sig.args, args))
        levels = cgutils.unpack_tuple(builder, ta.shape, 1)[0]
        words = cgutils.unpack_tuple(builder, oa.shape, 2)[1]
        f64 = ir.VectorType(ir.FloatType(), 64)
        scale = _splat(builder, context.cast(builder, args[1], sig.args[1], types.float32), 64)
        up = context.cast(builder, args[3], sig.args[3], types.boolean)
        with cgutils.for_range(builder, words) as w:
            p = builder.fmul(builder.load(_vec_ptr(builder, ra.data, builder.mul(w.index, ir.Constant(words.type, 64)),
                                                   f64), align=4), scale)
            with cgutils.for_range(builder, levels) as lv:
                t = _splat(builder, builder.load(builder.gep(ta.data, [lv.index])), 64)
                bits = builder.select(up, builder.fcmp_ordered(">=", p, t), builder.fcmp_ordered("<", p, t))
                at = builder.add(builder.mul(lv.index, words), w.index)
                builder.store(builder.bitcast(bits, ir.IntType(64)), builder.gep(oa.data, [at]))

    return sig, codegen
