"""Popcount peak of this CPU and how close the packed GEMMs get to it.

Unit: one bit-MAC (bit-op) is one ±1 multiply-accumulate; one XOR + popcount over a 64-bit word
is 64 bit-MACs. An M x N x K xnor_gemm performs M * N * K bit-MACs.
"""

from __future__ import annotations

import platform
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import njit

from bitbert.deploy.kernels import pack_bits, popcount64, prepack, xnor_gemm

__all__ = ["measure_popcount_peak", "gemm_efficiency", "cpu_name"]

_WORDS = 1024  # 8 KiB per thread: stays in L1
_KEYS = 4  # words XORed with each loaded word (register blocking: 1 load feeds 4 XOR+popcount)


@njit(cache=True, nogil=True)
def _xor_popcount_loop(data, reps, seed):
    """Sum over reps r and words x of popcount(x ^ key_j(r)), j < 4.

    The keys change every rep, so LLVM can neither hoist the word loop out of the rep loop nor
    fold it; the sum is returned, so none of it is dead. The word loop vectorises to
    VPXORQ + VPOPCNTQ + VPADDQ with 4 x (interleave) accumulators.
    """
    total = np.uint64(0)
    for r in range(reps):
        k = np.uint64(seed) + np.uint64(r)
        k0, k1, k2, k3 = k, k * np.uint64(3), k * np.uint64(5), k * np.uint64(7)
        s0 = s1 = s2 = s3 = np.uint64(0)
        for i in range(data.shape[0]):
            x = data[i]
            s0 += popcount64(x ^ k0)
            s1 += popcount64(x ^ k1)
            s2 += popcount64(x ^ k2)
            s3 += popcount64(x ^ k3)
        total += s0 + s1 + s2 + s3
    return total


def cpu_name() -> str:
    """CPU model (from /proc/cpuinfo where available) and LLVM's name for it."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({llvm.get_host_cpu_name()})"


def measure_popcount_peak(seconds: float = 1.0, threads: int = 1) -> dict:
    """XOR + popcount throughput on L1-resident data, in Gbit-MAC/s summed over `threads` threads.

    Runs about `seconds` in total (5 timed runs after calibration) and reports the best run.
    Returns {"gbit_ops_per_s": float, "threads": int, "cpu": str}.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 2**63, size=_WORDS, dtype=np.int64).view(np.uint64) for _ in range(threads)]

    with ThreadPoolExecutor(threads) as pool:

        def run(reps: int) -> float:
            t0 = time.perf_counter()
            futures = [pool.submit(_xor_popcount_loop, d, reps, t) for t, d in enumerate(data)]
            for f in futures:
                f.result()
            return time.perf_counter() - t0

        run(1)  # compile / load from cache, start the threads
        reps = 64
        while (dt := run(reps)) < 0.02:
            reps *= 4
        reps = max(1, int(reps * seconds / 5 / dt))
        best = min(run(reps) for _ in range(5))
    bit_ops = threads * reps * _WORDS * _KEYS * 64
    return {"gbit_ops_per_s": bit_ops / best / 1e9, "threads": threads, "cpu": cpu_name()}


def gemm_efficiency(
    M: int, N: int, K: int, threads: int = 1, peak: float | None = None, seconds: float = 0.5,
    prepacked: bool = False,
) -> dict:
    """Time xnor_gemm on random M x K by N x K packed operands; compare with the popcount peak.

    `peak` (Gbit-MAC/s) reuses an earlier measure_popcount_peak result for the same thread count;
    otherwise it is measured here. `prepacked` times weights laid out once (kernels.prepack, as the
    packed engine does) instead of re-laid out per call. Returns {"M", "N", "K", "threads",
    "prepacked", "seconds_per_call", "gbit_mac_per_s", "peak_gbit_ops_per_s", "fraction_of_peak", "noisy"};
    ``fraction_of_peak`` is None (and ``noisy`` True) when the GEMM beat the peak, i.e. the machine
    was too busy to measure the peak;
    the time is the best of the calls made in about `seconds`, including the Python call overhead a
    user pays.
    """
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be in [1, {numba.config.NUMBA_NUM_THREADS}]")
    rng = np.random.default_rng(0)
    a = pack_bits(rng.integers(0, 2, size=(M, K), dtype=np.uint8))
    w = pack_bits(rng.integers(0, 2, size=(N, K), dtype=np.uint8))
    if prepacked:
        w = prepack(w, K)
    out = np.empty((M, N), np.int32)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        xnor_gemm(a, w, K, out)  # compile / load from cache
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == float("inf"):
            t0 = time.perf_counter()
            xnor_gemm(a, w, K, out)
            best = min(best, time.perf_counter() - t0)
    finally:
        numba.set_num_threads(previous)
    if peak is None:
        peak = measure_popcount_peak(seconds=seconds, threads=threads)["gbit_ops_per_s"]
    rate = M * N * K / best / 1e9
    return {
        "M": M,
        "N": N,
        "K": K,
        "threads": threads,
        "prepacked": prepacked,
        "seconds_per_call": best,
        "gbit_mac_per_s": rate,
        "peak_gbit_ops_per_s": peak,
        # Above the peak means the peak probe ran while other work held the cores: no honest fraction.
        "fraction_of_peak": rate / peak if rate <= peak else None,
        "noisy": rate > peak,
    }
