import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from llvmlite import binding as llvm

import bitbert
from bitbert.deploy import kernels
from bitbert.deploy.kernels import (
    and_gemm,
    binarize_pack_elastic,
    binarize_pack_signed,
    binarize_pack_unsigned,
    pack_bits,
    pack_heads,
    pack_heads_transposed,
    prepack,
    set_num_threads,
    unpack_bits,
    xnor_gemm,
)
from bitbert.deploy.peak import gemm_efficiency, measure_popcount_peak

# Odd sizes hit every border case of the 4 x 16 register tile: partial rows, partial column
# panels, K below / at / just past a word boundary.
SHAPES = [(1, 1, 1), (3, 5, 63), (7, 19, 64), (5, 16, 65), (13, 33, 200), (8, 48, 128), (37, 70, 777)]
THREADS = [1, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1]


@pytest.fixture
def threads(request):
    previous = numba.get_num_threads()
    set_num_threads(request.param)
    yield request.param
    set_num_threads(previous)


def random_bits(rng, *shape):
    return rng.integers(0, 2, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("K", [1, 63, 64, 65, 200])
def test_pack_unpack_round_trip(K):
    bits = random_bits(np.random.default_rng(K), 2, 3, K)
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (2, 3, (K + 63) // 64)
    np.testing.assert_array_equal(unpack_bits(words, K), bits)
    if K % 64:
        assert not (words[..., -1] >> np.uint64(K % 64)).any(), "padding bits must be 0"


def test_bit_layout_is_lsb_first():
    K = 130
    for k in (0, 1, 63, 64, 65, 129):
        onehot = np.zeros(K, bool)
        onehot[k] = True
        expected = np.zeros(3, np.uint64)
        expected[k // 64] = np.uint64(1) << np.uint64(k % 64)
        np.testing.assert_array_equal(pack_bits(onehot), expected)


def test_pack_treats_nonzero_as_set():
    np.testing.assert_array_equal(pack_bits(np.array([0, 2, 255, 0], np.uint8)), [0b0110])


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_xnor_gemm_matches_float_matmul(M, N, K, threads):
    rng = np.random.default_rng(M * 1000 + N + K)
    A, W = random_bits(rng, M, K), random_bits(rng, N, K)
    expected = (2.0 * A - 1) @ (2.0 * W - 1).T
    got = xnor_gemm(pack_bits(A), pack_bits(W), K)
    assert got.dtype == np.int32 and got.shape == (M, N)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_and_gemm_matches_float_matmul(M, N, K, threads):
    rng = np.random.default_rng(M * 1000 + N + K + 1)
    A01, W = random_bits(rng, M, K), random_bits(rng, N, K)
    expected = A01.astype(np.float64) @ (2.0 * W - 1).T
    np.testing.assert_array_equal(and_gemm(pack_bits(A01), pack_bits(W), K), expected)


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_prepacked_weights_give_the_same_gemms(M, N, K, threads):
    rng = np.random.default_rng(M + N + K)
    a, w = pack_bits(random_bits(rng, M, K)), pack_bits(random_bits(rng, N, K))
    packed = prepack(w, K)
    assert packed.n == N and packed.k == K and packed.panels.shape[1:] == (2 * ((K + 63) // 64), 32)
    np.testing.assert_array_equal(xnor_gemm(a, packed, K), xnor_gemm(a, w, K))
    np.testing.assert_array_equal(and_gemm(a, packed, K), and_gemm(a, w, K))
    with pytest.raises(ValueError, match="packed for K"):
        xnor_gemm(pack_bits(random_bits(rng, M, K + 64)), packed, K + 64)


def test_gemm_writes_into_out_and_validates():
    rng = np.random.default_rng(0)
    a, w = pack_bits(random_bits(rng, 6, 100)), pack_bits(random_bits(rng, 20, 100))
    out = np.full((6, 20), 12345, np.int32)
    assert xnor_gemm(a, w, 100, out=out) is out
    np.testing.assert_array_equal(out, xnor_gemm(a, w, 100))
    with pytest.raises(ValueError):
        xnor_gemm(a, w, 200)  # 4 words expected, 2 given
    with pytest.raises(ValueError):
        and_gemm(a, w[:, :1], 100)
    with pytest.raises(ValueError):
        xnor_gemm(a, w, 100, out=np.empty((20, 6), np.int32))


@pytest.mark.parametrize("K", [1, 64, 65, 200, 768])
@pytest.mark.parametrize("threshold", [0.0, 0.5, -0.25])
def test_fused_binarize_pack_matches_numpy(K, threshold):
    rng = np.random.default_rng(K)
    beta = rng.standard_normal(K).astype(np.float32)
    x = rng.standard_normal((9, K)).astype(np.float32)
    x[:, ::3] = beta[::3] + np.float32(threshold)  # ties: x - beta == threshold must set the bit
    expected = pack_bits((x - beta) >= np.float32(threshold))
    np.testing.assert_array_equal(binarize_pack_unsigned(x, beta, threshold), expected)
    if threshold == 0.0:
        np.testing.assert_array_equal(binarize_pack_signed(x, beta), expected)


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("K", [1, 64, 65, 768])
def test_elastic_unsigned_binarize_matches_pytorch_rule(K, threads):
    """bit = round(clip((x - beta) / alpha, 0, 1)) in float32, half to even: exactly 0.5 gives 0."""
    rng = np.random.default_rng(K)
    alpha = np.float32(0.37)
    beta = (rng.standard_normal(K) * 0.1).astype(np.float32)
    x = (rng.standard_normal((300, K)) * 0.5).astype(np.float32)
    x[:, ::5] = beta[::5] + np.float32(0.5) * alpha  # u lands on 0.5 (or one ulp beside it)
    u = (x - beta) / alpha
    expected = pack_bits(np.clip(np.round(u), 0, 1) == 1)
    assert (u == 0.5).any()
    np.testing.assert_array_equal(binarize_pack_elastic(x, beta, alpha), expected)


def test_pack_heads_layouts():
    rng = np.random.default_rng(0)
    for batch, L, heads, d, beta in ((2, 5, 3, 16, 0.1), (1, 70, 2, 64, -0.1), (3, 9, 2, 96, -5.0)):
        x = rng.standard_normal((batch * L, heads * d)).astype(np.float32)
        bits = (x - np.float32(beta) >= 0).reshape(batch, L, heads, d)
        rows = pack_heads(x, beta, batch, heads)
        np.testing.assert_array_equal(rows, pack_bits(bits.transpose(0, 2, 1, 3)))
        cols = pack_heads_transposed(x, beta, batch, heads)  # (B, H, words over L, d): padding bits 0
        ref = pack_bits(bits.transpose(0, 2, 3, 1))  # (B, H, d, words over L)
        np.testing.assert_array_equal(cols, ref.transpose(0, 1, 3, 2))


def test_binarize_then_gemm_is_sign_matmul():
    rng = np.random.default_rng(1)
    x, wf = rng.standard_normal((10, 300)).astype(np.float32), rng.standard_normal((12, 300)).astype(np.float32)
    zero = np.zeros(300, np.float32)
    got = xnor_gemm(binarize_pack_signed(x, zero), binarize_pack_signed(wf, zero), 300)
    np.testing.assert_array_equal(got, np.where(x >= 0, 1.0, -1.0) @ np.where(wf >= 0, 1.0, -1.0).T)


def test_peak_is_positive():
    peak = measure_popcount_peak(seconds=0.05)
    assert peak["gbit_ops_per_s"] > 0 and peak["threads"] == 1 and peak["cpu"]


def test_gemm_efficiency_runs():
    r = gemm_efficiency(16, 32, 256, threads=1, peak=1000.0, seconds=0.02)
    assert r["gbit_mac_per_s"] > 0
    assert r["fraction_of_peak"] == pytest.approx(r["gbit_mac_per_s"] / 1000.0)
    assert r["seconds_per_call"] == pytest.approx(16 * 32 * 256 / r["gbit_mac_per_s"] / 1e9)


# numba compiling for a CPU without AVX-512 (VPOPCNTDQ)
AVX2_ENV = dict(NUMBA_CPU_NAME="haswell",
                NUMBA_CPU_FEATURES="+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+lzcnt,+movbe,+popcnt,+sse4.2")
AVX2_CHECK = textwrap.dedent(
    """
    import numpy as np
    from bitbert.deploy.kernels import _gemm_serial, and_gemm, pack_bits, set_num_threads, xnor_gemm
    set_num_threads(1)
    rng = np.random.default_rng(0)
    A, W = rng.integers(0, 2, (13, 200), dtype=np.uint8), rng.integers(0, 2, (37, 200), dtype=np.uint8)
    a, w = pack_bits(A), pack_bits(W)
    assert (xnor_gemm(a, w, 200) == (2.0 * A - 1) @ (2.0 * W - 1).T).all()
    assert (and_gemm(a, w, 200) == A @ (2.0 * W - 1).T).all()
    asm = _gemm_serial.inspect_asm(_gemm_serial.signatures[0])
    assert "vpopcntq" not in asm and "zmm" not in asm, "not compiled for AVX2"
    """
)


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or not llvm.get_host_cpu_features().get("avx2", False),
    reason="needs an x86 CPU with AVX2 to run code compiled for haswell",
)
def test_avx2_fallback_is_correct(tmp_path):
    """The same kernels compiled for a CPU without AVX-512 (VPOPCNTDQ) give the same results."""
    env = dict(
        os.environ,
        **AVX2_ENV,
        NUMBA_CACHE_DIR=str(tmp_path),  # fresh cache: compiled here, so inspect_asm works
        PYTHONPATH=os.pathsep.join([str(Path(bitbert.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run([sys.executable, "-c", AVX2_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("bits,signed", [(2, True), (2, False), (4, True), (4, False), (8, True)])
def test_quantize_levels_match_elastic_quant(bits, signed):
    """The engine's levels are ElasticQuant's forward (the PyTorch quantizer itself), ties included."""
    import torch

    from bitbert.core.config import levels
    from bitbert.quant.quantizers import ElasticQuant

    qn, qp = levels(bits, signed)
    rng = np.random.default_rng(bits)
    alpha = np.float32(0.3)
    beta = (rng.standard_normal(70) * 0.1).astype(np.float32)
    x = (rng.standard_normal((50, 70)) * 2).astype(np.float32)
    x[:, ::7] = beta[::7] + np.float32(1.5) * alpha  # halfway between two levels: half to even
    assert ((x - beta) / alpha == 1.5).any()
    ref = ElasticQuant.apply(torch.from_numpy(x), torch.tensor(alpha), torch.from_numpy(beta), qn, qp) / alpha
    got = kernels.quantize_levels(x, beta, alpha, qn, qp)
    assert got.dtype == np.uint8 and got.max() <= qp - qn
    np.testing.assert_array_equal(got.astype(np.int64) + qn, torch.round(ref).numpy().astype(np.int64))
    # the fused kernel of the engine's linears: the same levels, packed plane by plane
    planes = kernels.quantize_pack_planes(x, beta, alpha, qn, qp, bits)
    np.testing.assert_array_equal(planes, kernels.pack_planes(got, bits))
    with pytest.raises(ValueError, match="8 bits"):
        kernels.quantize_levels(x, beta, alpha, 0, 256)


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("batch,L,heads,d", [(1, 128, 12, 64), (2, 70, 3, 20), (3, 5, 2, 130)])
@pytest.mark.parametrize("bits,signed,channel_beta", [(2, True, False), (2, False, True), (4, True, True)])
def test_quantize_pack_heads_matches_levels_per_head(batch, L, heads, d, bits, signed, channel_beta, threads):
    """The engine's multi-bit Q/K/V operands: each head's levels (ties half to even, β per channel or
    scalar) packed plane by plane along d, or along the tokens for V, with their sums over d."""
    from bitbert.core.config import levels

    qn, qp = levels(bits, signed)
    rng = np.random.default_rng(L + d + bits)
    alpha = np.float32(0.25)
    beta = (rng.standard_normal(heads * d) * 0.1).astype(np.float32) if channel_beta else np.float32(0.05)
    x = (rng.standard_normal((batch * L, heads * d)) * 1.5).astype(np.float32)
    x[:, ::5] = (np.broadcast_to(beta, (heads * d,))[::5] + np.float32(0.5) * alpha)  # ties: round to 0
    assert ((x - beta) / alpha == 0.5).any()
    lv = kernels.quantize_levels(x, beta, alpha, qn, qp).reshape(batch, L, heads, d).transpose(0, 2, 1, 3)
    planes, sums = kernels.quantize_pack_heads(x, beta, alpha, qn, qp, bits, batch, heads)
    assert planes.shape == (batch, heads, bits, L, (d + 63) // 64)
    np.testing.assert_array_equal(planes, kernels.pack_planes(lv, bits).transpose(1, 2, 0, 3, 4))
    np.testing.assert_array_equal(sums, lv.sum(-1, dtype=np.int64))
    cols, _ = kernels.quantize_pack_heads(x, beta, alpha, qn, qp, bits, batch, heads, along_tokens=True)
    assert cols.shape == (batch, heads, bits, (L + 63) // 64, d)
    np.testing.assert_array_equal(cols, kernels.pack_planes(lv.transpose(0, 1, 3, 2), bits).transpose(1, 2, 0, 4, 3))


@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("bits,offset", [(2, -2), (2, 0), (4, -8), (3, 0)])
@pytest.mark.parametrize("M,N,K", [(3, 5, 63), (13, 33, 200), (37, 70, 777)])
def test_bitserial_gemm_matches_integer_matmul(M, N, K, bits, offset, threads):
    rng = np.random.default_rng(M + N + K + bits)
    lv = rng.integers(0, 2**bits, size=(M, K), dtype=np.uint8)
    W = random_bits(rng, N, K)
    planes = kernels.pack_planes(lv, bits)
    assert planes.shape == (bits, M, (K + 63) // 64)
    np.testing.assert_array_equal(unpack_bits(planes[1], K), (lv >> 1) & 1)
    wsum = kernels.row_sums(pack_bits(W), K)
    np.testing.assert_array_equal(wsum, (2 * W.astype(np.int64) - 1).sum(1))
    got = kernels.bitserial_gemm(planes, prepack(pack_bits(W), K), offset, wsum)
    expected = (lv.astype(np.int64) + offset) @ (2 * W.astype(np.int64) - 1).T
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
