"""The packed engine's fused row and attention kernels against their reference paths on random
inputs, odd sizes included (hidden not a multiple of 64, one token, padding masks)."""
import numpy as np
import pytest
import torch
from numba import njit

import math

from bitbert.deploy.engine.floatmath import expf, fma32, gelu, gelu16
from bitbert.deploy.engine.rows import GELU, NO_ACT, RELU, affine


@njit(cache=True)
def _gelu_all(x, out):
    for i in range(x.shape[0]):
        out[i] = gelu(x[i])
    return out


@njit(cache=True)
def _gelu_scalar(x, out):
    """The reference: the same float32 steps one element at a time, the sign taken by a branch."""
    for i in range(x.shape[0]):
        z = x[i] * np.float32(0.7071067811865476)
        t = np.float32(1.0) / fma32(np.float32(0.3275911), abs(z), np.float32(1.0))
        r = fma32(np.float32(1.061405429), t, np.float32(-1.453152027))
        r = fma32(r, t, np.float32(1.421413741))
        r = fma32(r, t, np.float32(-0.284496736))
        r = fma32(r, t, np.float32(0.254829592))
        e = fma32(-expf(-(z * z)) * t, r, np.float32(1.0))
        erf = -e if z < 0 or (z == 0 and math.copysign(1.0, z) < 0) else e
        out[i] = x[i] * np.float32(0.5) * (np.float32(1.0) + erf)
    return out


def _gelu_inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.standard_normal(10_001).astype(np.float32) * 4,
                           np.array([0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 1e4, -1e4], np.float32)])


def test_vectorised_gelu_is_the_scalar_one_bit_for_bit():
    x = _gelu_inputs()
    got, ref = _gelu_all(x, np.empty_like(x)), _gelu_scalar(x, np.empty_like(x))
    np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))


@njit(cache=True)
def _gelu_lanes(x):
    out = x.copy()
    for i in range(gelu16(out), out.shape[0]):
        out[i] = gelu(out[i])
    return out


def test_16_lane_gelu_is_the_scalar_one_bit_for_bit():
    x = _gelu_inputs()
    got, ref = _gelu_lanes(x), _gelu_scalar(x, np.empty_like(x))
    np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))


def test_gelu_is_pytorchs_within_ulps():
    x = _gelu_inputs()
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_gelu_all(x, np.empty_like(x)), ref, rtol=1e-5, atol=1e-6)


def _gelu_ref(y):
    return _gelu_scalar(y.ravel(), np.empty(y.size, np.float32)).reshape(y.shape)


@pytest.mark.parametrize("act", [NO_ACT, RELU, GELU])
@pytest.mark.parametrize("shape", [(1, 1), (3, 100), (7, 257)])
def test_affine_matches_reference(act, shape):
    rng = np.random.default_rng(1)
    dot = rng.integers(-500, 500, shape).astype(np.int32)
    coef = rng.uniform(0.001, 0.01, shape[1])
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    ref = (dot * coef).astype(np.float32) + bias
    if act == RELU:
        ref = np.maximum(ref, np.float32(0))
    elif act == GELU:
        ref = _gelu_ref(ref)
    got = affine(dot, coef, bias, act, np.empty(shape, np.float32))
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("n", [64, 100, 384, 1000])
@pytest.mark.parametrize("threads", [1, 2])
def test_residual_layernorm_is_pytorchs_bit_for_bit(n, threads):
    """LayerNorm rows, several at a time (floatmath.LN_ROWS; 33 rows leave a partial group), give
    torch's layer_norm bits."""
    import numba

    from bitbert.deploy.engine.rows import affine_residual_layernorm

    rng = np.random.default_rng(n)
    x = (rng.standard_normal((33, n)) * 3 + 1).astype(np.float32)
    gamma, beta = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (n,), torch.from_numpy(gamma), torch.from_numpy(beta),
                                         1e-12).numpy()
    zeros = np.zeros(n)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        got = affine_residual_layernorm(np.zeros(x.shape, np.int32), zeros, zeros.astype(np.float32), x, gamma, beta,
                                        np.float32(1e-12), np.empty_like(x), threads)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))


# ----------------------------------------------------------------------------- fused epilogue + pack

from bitbert.deploy.engine.rows import affine_pack, affine_pack_heads  # noqa: E402
from bitbert.deploy.engine.thresholds import NONE, heads_thresholds, pack_thresholds  # noqa: E402
from bitbert.deploy.kernels import (binarize_pack_elastic, binarize_pack_signed, heads_along_tokens, pack_heads,  # noqa: E402
                             pack_heads_transposed, transpose64)


def _dot(rng, m, n):
    """Dots in [-_K, _K] and coefficients of both signs."""
    return (rng.integers(-_K, _K + 1, (m, n)).astype(np.int32), rng.uniform(0.001, 0.02, n) * rng.choice([-1, 1], n),
            rng.standard_normal(n).astype(np.float32) * 0.3)


_K = 300


@pytest.mark.parametrize("act", [NO_ACT, RELU, GELU])
@pytest.mark.parametrize("elastic", [False, True])
@pytest.mark.parametrize("m, n", [(1, 1), (5, 63), (4, 64), (3, 200)])
@pytest.mark.parametrize("threads", [1, 2])
def test_affine_pack_is_affine_then_pack(act, elastic, m, n, threads):
    rng = np.random.default_rng(m * n)
    dot, coef, bias = _dot(rng, m, n)
    y = affine(dot, coef, bias, act, np.empty((m, n), np.float32))
    beta = rng.standard_normal(n).astype(np.float32) * 0.1
    alpha = np.float32(0.7)
    ref = binarize_pack_elastic(y, beta, alpha) if elastic else binarize_pack_signed(y, beta)
    rule = (beta, alpha if elastic else np.float32(1.0), np.float32(0.5 if elastic else 0.0), elastic)
    out = np.full(ref.shape, 0xFFFF, np.uint64)  # padding bits must be written as 0
    got = affine_pack(dot, coef, bias, act, *rule, NONE.thr, NONE.flip, out, threads)
    np.testing.assert_array_equal(got, ref)
    by_dot = pack_thresholds(coef, bias, act, rule, _K)  # the same bits by integer compares on the dot
    assert by_dot is not None or act == GELU  # only GELU's dip below 0 can make a channel not monotone
    if by_dot is not None:
        out[:] = 0xFFFF
        np.testing.assert_array_equal(affine_pack(dot, coef, bias, act, *rule, by_dot.thr, by_dot.flip, out, threads),
                                      ref)


@pytest.mark.parametrize("batch, length, heads, d", [(1, 1, 1, 1), (1, 128, 12, 64), (2, 7, 3, 32), (3, 70, 2, 100),
                                                     (1, 65, 4, 130)])
@pytest.mark.parametrize("threads", [1, 2])
def test_affine_pack_heads_is_affine_then_pack_heads(batch, length, heads, d, threads):
    rng = np.random.default_rng(length * d)
    dot, coef, bias = _dot(rng, batch * length, heads * d)
    y = affine(dot, coef, bias, NO_ACT, np.empty(dot.shape, np.float32))
    beta = np.float32(0.05)
    rows = pack_heads(y, beta, batch, heads)
    by_dot = heads_thresholds(coef, bias, beta, heads, _K)
    assert by_dot is not None  # affine then a compare: monotone in the dot
    for rule in (NONE, by_dot):  # the float epilogue, and the same bits by integer compares on the dot
        got = affine_pack_heads(dot, coef, bias, beta, heads, False, rule.thr, rule.flip,
                                np.full(rows.shape, 7, np.uint64), threads)
        np.testing.assert_array_equal(got, rows)
        keys = np.full(rows.transpose(0, 1, 3, 2).shape, 7, np.uint64)
        np.testing.assert_array_equal(affine_pack_heads(dot, coef, bias, beta, heads, True, rule.thr, rule.flip, keys,
                                                        threads), rows.transpose(0, 1, 3, 2))
    # V: the same bits re-packed along the tokens
    along = heads_along_tokens(rows, d, np.full((batch, heads, (length + 63) // 64, d), 7, np.uint64))
    np.testing.assert_array_equal(along, pack_heads_transposed(y, beta, batch, heads))


@njit(cache=True)
def _transpose(a):
    transpose64(a)
    return a


def test_transpose64_is_the_bit_transpose():
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**63, 64, dtype=np.uint64) ^ rng.integers(0, 2, 64, dtype=np.uint64) << np.uint64(63)
    bits = ((words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)  # [word, bit]
    got = _transpose(words.copy())
    got_bits = ((got[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    np.testing.assert_array_equal(got_bits, bits.T)


# ----------------------------------------------------------------------------- attention

from bitbert.deploy.engine.attention import BOOL, ELASTIC, SIGN, attention_kernel  # noqa: E402
from bitbert.deploy.engine.rows import key_add as _key_add  # noqa: E402
from bitbert.deploy.kernels import elastic_rule, pack_bits  # noqa: E402


def _attention_reference(q, k, v, key_mask, mode, qk_coef, scaling, pa, pb, pv_coef):
    """Float reference of BinaryAttention on ±1 q, k, v (B, H, L, d): integer dots, PyTorch's softmax."""
    dots = np.einsum("bhid,bhjd->bhij", q, k).astype(np.int64)
    scores = (dots * qk_coef).astype(np.float32) * scaling + _key_add(key_mask)[:, None, None, :]
    keep = key_mask[:, None, None, :]
    if mode == ELASTIC:
        p = torch.softmax(torch.from_numpy(scores), dim=-1).numpy()
        bits = ((p - np.float32(pb)) / np.float32(pa) > np.float32(0.5)) & keep
    elif mode == BOOL:
        bits = (scores >= 0) & keep
    else:
        bits = np.broadcast_to(keep, scores.shape)
    ones = bits.sum(-1, keepdims=True)
    pos = np.einsum("bhij,bhjd->bhid", bits.astype(np.int64), (v > 0).astype(np.int64))
    ctx = ((2 * pos - ones) * pv_coef).astype(np.float32)
    B, H, L, d = q.shape
    return ctx.transpose(0, 2, 1, 3).reshape(B * L, H * d)


@pytest.mark.parametrize("mode", [ELASTIC, BOOL, SIGN])
@pytest.mark.parametrize("batch, length, heads, d", [(1, 1, 1, 8), (2, 7, 3, 32), (1, 128, 2, 64), (2, 70, 2, 100)])
@pytest.mark.parametrize("threads", [1, 2])
def test_attention_kernel_matches_reference(mode, batch, length, heads, d, threads, qk_alphas=(0.31, 0.27),
                                           all_masked=False):
    import numba

    rng = np.random.default_rng(length * d + mode)
    q, k, v = (rng.choice(np.array([-1, 1], np.int8), (batch, heads, length, d)) for _ in range(3))
    key_mask = rng.random((batch, length)) < 0.7
    key_mask[:, 0] = True  # padding masks with at least one kept key
    key_mask[-1] &= not all_masked
    pack = lambda t: pack_bits((t > 0).reshape(-1, d)).reshape(batch, heads, length, -1)  # noqa: E731
    vt = pack_bits((v > 0).transpose(0, 1, 3, 2).reshape(-1, length)).reshape(batch, heads, d, -1).transpose(0, 1, 3, 2)
    qk_coef, scaling, pa, pb, pv_coef = np.prod(qk_alphas), np.float32(d ** -0.5), 0.0078125, 0.0, 0.0078125 * 0.29
    no_res = np.zeros((0, 0, 0, 0), np.float32)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        got = attention_kernel(pack(q), np.ascontiguousarray(pack(k).transpose(0, 1, 3, 2)), np.ascontiguousarray(vt),
                               qk_coef, scaling, _key_add(key_mask), pack_bits(key_mask), mode, np.float32(pa),
                               np.float32(pb), *elastic_rule(pa), pv_coef, no_res, no_res, np.empty((batch * length, heads * d), np.float32))
    finally:
        numba.set_num_threads(previous)
    ref = _attention_reference(q, k, v, key_mask, mode, qk_coef, scaling, pa, pb, pv_coef)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("qk_alphas, all_masked", [((1e15, 1e15), False), ((0.31, 0.27), True), ((-0.31, 0.27), False)])
def test_softmax_by_table_or_not_matches_reference(qk_alphas, all_masked):
    """Scores too large for the tabled softmax, a sequence with every key masked (both take the
    general path) and a negative coefficient (the row maximum at the largest popcount)."""
    test_attention_kernel_matches_reference(ELASTIC, 2, 40, 2, 32, 1, qk_alphas, all_masked)


@pytest.mark.parametrize("alpha", [0.0078125, 0.3, 1.0, 7.77, 1e-30, 3e38, 0.0, -0.5, float("inf")])
def test_elastic_rule_without_division_gives_the_divisions_bits(alpha):
    """fl((x − β) / α) > 0.5 against the compare elastic_rule gives, near the threshold and away from it."""
    a = np.float32(alpha)
    rng = np.random.default_rng(0)
    c = np.float32(abs(a) * np.float32(0.5)) if np.isfinite(a) else np.float32(1.0)
    x = np.concatenate([np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32),
                        c + np.arange(-64, 64, dtype=np.float32) * np.spacing(c),
                        rng.standard_normal(1000).astype(np.float32) * max(min(abs(a), 1e30), 1e-30)]).astype(np.float32)
    x = x[: len(x) // 64 * 64].reshape(-1, 64)
    beta = np.zeros(64, np.float32)
    with np.errstate(all="ignore"):
        ref = pack_bits((x - beta) / a > np.float32(0.5))
    np.testing.assert_array_equal(binarize_pack_elastic(x, beta, a), ref)


def test_one_packed_input_for_q_k_v_only_when_their_bits_agree():
    from bitbert.deploy.engine.layers import InputQuant

    beta = np.zeros(8, np.float32)
    sign = InputQuant(0.5, beta, True)
    assert sign.same_bits(InputQuant(2.0, beta.copy(), True))  # α scales a sign's values, not its bits
    assert not sign.same_bits(InputQuant(0.5, beta + np.float32(0.1), True))
    assert not sign.same_bits(InputQuant(0.5, beta, False))
    assert not InputQuant(0.5, beta, False).same_bits(InputQuant(0.6, beta, False))  # elastic: α sets the bits
    assert not InputQuant(0.5, beta, True, 2).same_bits(InputQuant(0.6, beta, True, 2))


AVX2_ATTENTION = """
import test_engine_kernels as t
from bitbert.deploy.engine.attention import attention_kernel
for mode in (t.ELASTIC, t.BOOL):
    for batch, length, heads, d in ((2, 70, 2, 64), (1, 33, 3, 32)):
        t.test_attention_kernel_matches_reference(mode, batch, length, heads, d, 1)
t.test_16_lane_gelu_is_the_scalar_one_bit_for_bit()
assert "zmm" not in attention_kernel.inspect_asm(attention_kernel.signatures[0]), "not compiled for AVX2"
"""


def test_avx2_attention_and_gelu(tmp_path):
    """The tabled softmax's gather and the 16-lane GELU compiled for a CPU without AVX-512 give the
    reference's bits (the AVX-512 build takes other instructions for both)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from llvmlite import binding as llvm

    if not llvm.get_host_cpu_features().get("avx2", False):
        pytest.skip("needs an x86 CPU with AVX2 to run code compiled for haswell")
    from test_kernels import AVX2_ENV

    here = Path(__file__).resolve().parent
    env = dict(os.environ, **AVX2_ENV, NUMBA_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", AVX2_ATTENTION], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ----------------------------------------------------------------------------- multi-bit levels by dot thresholds

from bitbert.deploy.engine.thresholds import level_thresholds  # noqa: E402
from bitbert.deploy.kernels import (levels_pack_heads, levels_pack_planes, quantize_pack_heads,  # noqa: E402
                                    quantize_pack_planes)


@pytest.mark.parametrize("act", [NO_ACT, RELU, GELU])
@pytest.mark.parametrize("levels", [(-2, 1), (0, 3), (-8, 7)])
@pytest.mark.parametrize("heads, d", [(1, 1), (3, 32), (2, 100)])
def test_levels_by_dot_are_affine_then_quantize(act, levels, heads, d):
    """A multi-bit output's levels by integer compares on the dot (thresholds found by bisection, or
    for GELU by every dot) are those of the float epilogue then the quantizer, at every dot in the
    bound (as planes, and per head along d and along the tokens)."""
    rng = np.random.default_rng(heads * d + 3 * act + levels[0] + 20)
    n = heads * d
    _, coef, bias = _dot(rng, 1, n)
    coef[::7] = 0.0  # constant channels
    dots = np.repeat(np.arange(-_K, _K + 1, dtype=np.int32)[:, None], n, axis=1)  # every dot, every channel
    dots = np.ascontiguousarray(dots[rng.permutation(len(dots))])
    y = affine(dots, coef, bias, act, np.empty(dots.shape, np.float32))
    alpha, (lo, hi) = np.float32(0.6 if levels != (-8, 7) else 0.15), levels
    planes = (hi - lo).bit_length()
    beta = rng.standard_normal(n).astype(np.float32) * 0.1
    by_dot = level_thresholds(coef, bias, act, beta, alpha, lo, hi, _K)
    assert by_dot is not None or act == GELU  # only GELU's dip can make a channel not monotone
    if by_dot is not None:
        np.testing.assert_array_equal(levels_pack_planes(dots, by_dot.thr, by_dot.flip, planes),
                                      quantize_pack_planes(y, beta, alpha, lo, hi, planes))
    scalar = np.full(n, beta[0], np.float32)  # attention's Q, K, V: one β
    by_dot = level_thresholds(coef, bias, act, scalar, alpha, lo, hi, _K)
    if by_dot is not None:
        batch = 1 if len(dots) % 2 else 2
        for along_tokens in (False, True):
            ref = quantize_pack_heads(y, beta[0], alpha, lo, hi, planes, batch, heads, along_tokens)
            got = levels_pack_heads(dots, by_dot.thr, by_dot.flip, planes, batch, heads, along_tokens)
            np.testing.assert_array_equal(got[0], ref[0])
            np.testing.assert_array_equal(got[1], ref[1])


def test_level_thresholds_refuse_what_the_float_path_would_not_order():
    coef, bias, beta = np.full(4, 0.01), np.zeros(4, np.float32), np.zeros(4, np.float32)
    assert level_thresholds(coef, bias, NO_ACT, beta, 0.5, -2, 1, 10) is not None
    assert level_thresholds(coef, bias, NO_ACT, beta, 0.0, -2, 1, 10) is None
    assert level_thresholds(coef, bias, NO_ACT, beta, -0.5, -2, 1, 10) is None
    bad = bias.copy()
    bad[2] = np.nan
    assert level_thresholds(coef, bad, NO_ACT, beta, 0.5, -2, 1, 10) is None
    # a GELU channel whose dip crosses a level boundary keeps the float path
    assert level_thresholds(np.full(1, 0.01), np.zeros(1, np.float32), GELU, np.full(1, -0.1, np.float32),
                            0.1, 0, 3, 300) is None


def test_two_plane_gemm_is_the_bit_serial_dot():
    """2-bit levels' dot with ±1 weights in one pass of the register tile (both planes, the offset
    term in its epilogue) equals the integer product, at partial tiles and panels, 1 and 2 threads."""
    from bitbert.deploy.kernels import bitserial_gemm, pack_bits, pack_planes, prepack, row_sums

    rng = np.random.default_rng(1)
    for M, N, K in [(1, 1, 1), (5, 33, 70), (37, 100, 384), (9, 64, 1536)]:
        w = pack_bits(rng.integers(0, 2, (N, K)))
        levels = rng.integers(0, 4, (M, K)).astype(np.uint8)
        for offset in (0, -2):
            ref = (levels.astype(np.int64) + offset) @ (2 * unpack(w, K) - 1).T
            for threads in (1, 2):
                got = bitserial_gemm(pack_planes(levels, 2), prepack(w, K), offset, row_sums(w, K), threads=threads)
                np.testing.assert_array_equal(got, ref)


def unpack(w, K):
    from bitbert.deploy.kernels import unpack_bits

    return unpack_bits(w, K).astype(np.int64)


# ----------------------------------------------------------------------------- multi-bit attention

from bitbert.deploy.engine.attention import attention_levels_kernel  # noqa: E402
from bitbert.deploy.engine.lanes import planes_dot16  # noqa: E402
from bitbert.deploy.engine.thresholds import NO_MAP, map_thresholds  # noqa: E402
from bitbert.deploy.kernels import _level  # noqa: E402


@njit
def _planes_dot(left, right, init, base, acc, n):
    planes_dot16(left, right, init, base, acc, n)


@pytest.mark.parametrize("n, a, c, w", [(1, 1, 1, 1), (16, 2, 2, 1), (37, 2, 4, 3), (128, 4, 2, 2)])
def test_planes_dot_is_the_bit_serial_dot(n, a, c, w):
    rng = np.random.default_rng(n + 10 * a + c)
    room = (n + 15) // 16 * 16
    left = rng.integers(0, 2 ** 32, (a, w), dtype=np.uint32)
    right = rng.integers(0, 2 ** 32, (c * w, room), dtype=np.uint32)
    init = rng.integers(-100, 100, room).astype(np.int32)
    acc = np.full(room + 3, 7, np.int32)
    _planes_dot(left, right, init, np.int32(-9), acc, n)
    ones = np.vectorize(lambda x: bin(int(x)).count("1"))
    ref = init - 9 + sum(ones(left[i, k] & right[j * w + k]) << (i + j) for i in range(a) for j in range(c)
                         for k in range(w))
    np.testing.assert_array_equal(acc[:room], ref)
    assert (acc[room:] == 7).all()  # nothing written past n rounded up to 16


@pytest.mark.parametrize("alpha, beta, top", [(0.01, 0.0, 3), (0.3, -0.2, 3), (1e-30, 0.5, 15), (-0.02, 0.05, 3),
                                              (3e38, 0.0, 1), (0.004, 0.001, 15)])
def test_map_thresholds_are_the_map_levels(alpha, beta, top):
    """Compares with the thresholds give clamp(rint((p − β)/α), 0, top) for p ≥ 0, rising or falling
    α, near each level boundary and away from it."""
    a, b = np.float32(alpha), np.float32(beta)
    with np.errstate(over="ignore"):  # α = 3e38: the edges past the first overflow to inf
        edges = [b + np.float32(a * np.float32(m + 0.5)) for m in range(-1, top + 1)]
    p = np.concatenate([np.array([0.0, 1.0, np.float32(1e-45), np.inf], np.float32),
                        *(e + np.arange(-8, 9, dtype=np.float32) * np.spacing(np.float32(abs(e)) or np.float32(1e-45))
                          for e in edges), np.random.default_rng(0).random(500, np.float32)])
    p = p[p >= 0]
    levels = map_thresholds(alpha, beta, top)
    assert levels.rising == (alpha > 0)
    got = ((p[:, None] >= levels.thr) if levels.rising else (p[:, None] < levels.thr)).sum(1)
    ref = np.array([_level(x, b, a, np.float32(0.0), np.float32(top)) for x in p])
    np.testing.assert_array_equal(got, ref)


def _levels_attention_reference(q, k, v, offset, key_mask, mode, qk_coef, scaling, pa, pb, top, pv_coef):
    """Float reference of LevelsAttention on levels q, k, v (B, H, L, d) offset by ``offset``:
    integer dots, PyTorch's softmax and BiT's map quantizer (torch.round, clamp)."""
    q, k, v = (t.astype(np.int64) + offset for t in (q, k, v))
    dots = np.einsum("bhid,bhjd->bhij", q, k)
    scores = (dots * qk_coef).astype(np.float32) * scaling + _key_add(key_mask)[:, None, None, :]
    keep = key_mask[:, None, None, :]
    if mode == ELASTIC:
        p = torch.softmax(torch.from_numpy(scores), dim=-1)
        levels = torch.clamp(torch.round((p - np.float32(pb)) / np.float32(pa)), 0, top).numpy().astype(np.int64)
    elif mode == BOOL:
        levels = (scores >= 0).astype(np.int64)
    else:
        levels = np.ones(scores.shape, np.int64)
    ctx = (np.einsum("bhij,bhjd->bhid", levels * keep, v) * pv_coef).astype(np.float32)
    B, H, L, d = q.shape
    return ctx.transpose(0, 2, 1, 3).reshape(B * L, H * d)


@pytest.mark.parametrize("mode", [ELASTIC, BOOL, SIGN])
@pytest.mark.parametrize("batch, length, heads, d", [(1, 1, 1, 8), (2, 7, 3, 32), (1, 128, 2, 64), (2, 70, 2, 100)])
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("threads", [1, 2])
def test_levels_attention_kernel_matches_reference(mode, batch, length, heads, d, bits, threads):
    """Multi-bit attention (BiT's 1-1-2, 1-1-4) on random levels with padding masks, against the float
    reference, at partial words and 16-lane blocks, 1 and 2 threads; the map's α rising and falling."""
    import numba

    rng = np.random.default_rng(length * d + mode + bits)
    offset, top = -(1 << (bits - 1)), (1 << bits) - 1
    q, k, v = (rng.integers(0, 1 << bits, (batch, heads, length, d)).astype(np.uint8) for _ in range(3))
    key_mask = rng.random((batch, length)) < 0.7
    key_mask[:, 0] = True
    planes = lambda t, along_tokens: np.stack([  # noqa: E731
        (pack_bits(((t >> a) & 1).reshape(-1, d)).reshape(batch, heads, length, -1) if not along_tokens else
         pack_bits(((t >> a) & 1).transpose(0, 1, 3, 2).reshape(-1, length)).reshape(batch, heads, d, -1)
         .transpose(0, 1, 3, 2)) for a in range(bits)], axis=2)
    sums = lambda t: t.astype(np.int64).sum(-1)  # noqa: E731
    qk_coef, scaling, pv_coef = 0.031 * 0.027, np.float32(d ** -0.5), 0.0078125 * 0.29
    no_res = np.zeros((0, 0, 0, 0), np.float32)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for pa, pb in ((1.0 / length / 2, 0.0), (-0.5 / length, 1.2 / length)):
            levels = map_thresholds(pa, pb, top) if mode == ELASTIC else NO_MAP  # as LevelsAttention.consts
            got = attention_levels_kernel(
                planes(q, False), sums(q), np.ascontiguousarray(planes(k, False)), sums(k),
                np.ascontiguousarray(planes(v, True)), np.int32(offset), qk_coef, scaling, _key_add(key_mask),
                pack_bits(key_mask), mode, levels.thr, levels.rising, np.float32(pa), pv_coef, no_res, no_res,
                np.empty((batch * length, heads * d), np.float32))
            ref = _levels_attention_reference(q, k, v, offset, key_mask, mode, qk_coef, scaling, pa, pb, top, pv_coef)
            np.testing.assert_array_equal(got, ref)
    finally:
        numba.set_num_threads(previous)
