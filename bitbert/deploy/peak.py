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

from bitbert.deploy.kernels import _MR, _NB, NO_COLS, _tile, pack_bits, prepack, xnor_gemm

__all__ = ["measure_popcount_peak", "gemm_efficiency", "cpu_name"]

_WORDS = 64  # words per row: the tile's operands, (_MR + _NB) x 64 words, 18 KiB per thread, stay in L1


@njit(cache=True, nogil=True)
def _tile_loop(a, panel, reps):
    """reps calls of the GEMMs' own register tile (`kernels._tile`, XOR form) on L1-resident
    operands: the popcount GEMM's instruction throughput with no memory traffic, i.e. its peak.
    Returns a checksum of the last tile, so none of it is dead."""
    out = np.empty((_MR, _NB), np.int32)
    rowpop = np.zeros(a.shape[0], np.int64)
    for _ in range(reps):
        _tile(a, rowpop, 0, panel, a.shape[1] * 64, out, 0, 0, False, 1, NO_COLS)
    return out.sum()


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
    """XOR + popcount throughput of the GEMMs' register tile on L1-resident data (no memory traffic,
    no partial tiles), in Gbit-MAC/s summed over `threads` threads.

    Runs about `seconds` in total (5 timed runs after calibration) and reports the best run.
    Returns {"gbit_ops_per_s": float, "threads": int, "cpu": str}.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    rng = np.random.default_rng(0)
    words = lambda *shape: rng.integers(0, 2**63, size=shape, dtype=np.int64).view(np.uint64)  # noqa: E731
    data = [(words(_MR, _WORDS), words(_WORDS, _NB).view(np.uint32).reshape(2 * _WORDS, _NB)) for _ in range(threads)]

    with ThreadPoolExecutor(threads) as pool:

        def run(reps: int) -> float:
            t0 = time.perf_counter()
            futures = [pool.submit(_tile_loop, a, panel, reps) for a, panel in data]
            for f in futures:
                f.result()
            return time.perf_counter() - t0

        run(1)  # compile / load from cache, start the threads
        reps = 64
        while (dt := run(reps)) < 0.02:
            reps *= 4
        reps = max(1, int(reps * seconds / 5 / dt))
        best = min(run(reps) for _ in range(5))
    bit_ops = threads * reps * _MR * _NB * _WORDS * 64
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
