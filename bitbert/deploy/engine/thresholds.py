"""A linear's output bits as integer thresholds on its exact dot.

Where a 1-bit linear's output is only binarized (attention's Q, K, V; the FFN's hidden activation,
binarized for the second FFN linear), output bit n is a function of one integer: the popcount
GEMM's dot[n], always in [−K, K]. The float epilogue (× α·s, + bias, GELU, − β, compare) is
monotone in the dot for almost every channel, and then bit n = dot[n] ≥ D_n (or ≤): one integer
compare instead of ~40 float operations. Nothing here re-derives the float rule: each channel's
bits are those the float kernels themselves give for every dot in [−K, K], computed once at build
time; a linear with any channel whose bits are not monotone in its dot keeps the float path.

A multi-bit output (BiT's W1A2 Q, K, V and FFN hidden layer) is the same idea with one threshold
per level (`LevelThresholds`); its dots span ±K·max|level|, so each threshold is found by bisection
where every step of the epilogue is monotone, and only GELU's channels are run at every dot."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..kernels import _level, unpack_bits
from .floatmath import gelu
from .rows import GELU, RELU, affine_pack, affine_pack_heads

_NEVER = np.iinfo(np.int32).max  # a threshold no dot in [−K, K] reaches: the bit is never set


@dataclass(frozen=True)
class DotThresholds:
    """bit n = (dot[n] XOR flip[n]) ≥ thr[n] (int32; flip −1 turns "dot ≤ E" into "~dot ≥ ~E").
    Both arrays padded past the N channels (thr never reached there: padding bits stay 0) so
    64-lane loads from any channel a kernel packs from stay inside."""

    thr: np.ndarray
    flip: np.ndarray


NONE = DotThresholds(np.zeros(0, np.int32), np.zeros(0, np.int32))  # the kernels' "use the float path"


def from_bits(bits_of: Callable[[np.ndarray], np.ndarray], k: int, n: int, pad: int) -> DotThresholds | None:
    """The thresholds of a float epilogue given as ``bits_of(dots) -> (rows, n)`` {0, 1} bits of
    each row of int32 dots, or None when some channel's bits are not monotone in its dot."""
    dots = np.repeat(np.arange(-k, k + 1, dtype=np.int32)[:, None], n, axis=1)
    bits = bits_of(dots).astype(bool)
    rising = ~(bits[:-1] & ~bits[1:]).any(axis=0)  # never 1 then 0 (constant channels included)
    falling = ~(~bits[:-1] & bits[1:]).any(axis=0)
    if not (rising | falling).all():
        return None
    thr = np.full(n + pad, _NEVER, np.int32)
    flip = np.zeros(n + pad, np.int32)
    some = bits.any(axis=0)
    first = np.argmax(bits, axis=0) - k  # rising: the smallest dot with the bit set
    last = bits.shape[0] - 1 - np.argmax(bits[::-1], axis=0) - k  # falling: the largest
    up, down = rising & some, ~rising & some
    thr[:n][up] = first[up]
    thr[:n][down] = ~last[down]
    flip[:n][down] = -1
    return DotThresholds(thr, flip)


def heads_thresholds(coef: np.ndarray, bias: np.ndarray, beta: float, heads: int, k: int) -> DotThresholds | None:
    """Thresholds of `affine_pack_heads`' bits (attention's Q, K or V with scalar β) for a linear
    with K = k inputs."""
    n = coef.shape[0]
    d = n // heads

    def bits_of(dots: np.ndarray) -> np.ndarray:
        rows = dots.shape[0]
        out = np.empty((1, heads, rows, (d + 63) // 64), np.uint64)
        affine_pack_heads(dots, coef, bias, np.float32(beta), heads, False, NONE.thr, NONE.flip, out, 1)
        return unpack_bits(out[0], d).transpose(1, 0, 2).reshape(rows, n)

    return from_bits(bits_of, k, n, pad=64)


def pack_thresholds(coef: np.ndarray, bias: np.ndarray, act: int, rule: tuple, k: int) -> DotThresholds | None:
    """Thresholds of `affine_pack`'s bits with the next quantizer's 1-bit rule (`InputQuant.rule`)
    for a linear with K = k inputs."""
    n = coef.shape[0]
    words = (n + 63) // 64

    def bits_of(dots: np.ndarray) -> np.ndarray:
        out = np.empty((dots.shape[0], words), np.uint64)
        affine_pack(dots, coef, bias, act, *rule, NONE.thr, NONE.flip, out, 1)
        return unpack_bits(out, n)

    return from_bits(bits_of, k, n, pad=words * 64 - n)



@dataclass(frozen=True)
class LevelThresholds:
    """A multi-bit output's level (offset to start at 0) = #{l : (dot[n] XOR flip[n]) ≥ thr[l, n]}:
    thr (top level, N) int32, flip (N,) as `DotThresholds` (each level set is a dot interval too)."""

    thr: np.ndarray
    flip: np.ndarray


# GELU's channels are evaluated at every dot: beyond this many evaluations (~30 ms) a linear keeps
# the float path rather than slow the model's load (MiniLM's FFN at 2 bits: 2.4 M)
_SCAN_BUDGET = 1 << 25
NO_LEVELS = LevelThresholds(np.zeros((0, 0), np.int32), np.zeros(0, np.int32))  # the kernels' float path
OutputThresholds = DotThresholds | LevelThresholds  # a linear's, by its consumer's bit width


@njit(inline="always")
def _epilogue_level(dot, coef, bias, act, beta, alpha, lo, hi):
    """The level `affine` then `quantize_pack_planes` give one channel's dot: the same float32
    operations (`rows.affine_row`, `kernels._level`)."""
    x = np.float32(dot * coef) + bias
    if act == RELU:
        x = max(x, np.float32(0.0))
    elif act == GELU:
        x = gelu(x)
    return _level(x, beta, alpha, lo, hi)


@njit(cache=True)
def _level_thresholds(coef, bias, act, beta, alpha, lo, hi, bound, thr, flip):
    """Fill thr (top, N) and flip (N,) for dots in [−bound, bound]; False when some channel's level
    is not monotone in its dot.

    Without GELU every step from the dot to the level (× coef in float64, rounding to float32,
    + bias, ReLU, − β, / α > 0, rint, clamp) is monotone, each rounding being monotone: a channel
    rises with its dot for coef > 0 and falls for coef < 0, and each threshold is found by
    bisection (about log2(4·bound) evaluations). GELU dips (and its float erf is not provably
    monotone anywhere), so its channels are evaluated at every dot and checked."""
    top = thr.shape[0]
    N = coef.shape[0]
    flo, fhi = np.float32(lo), np.float32(hi)
    span = 2 * bound + 1
    levels = np.empty(span if act == GELU else 0, np.int32)
    for n in range(N):
        c, b, be = coef[n], bias[n], beta[n]
        if act == GELU:
            for j in range(span):
                levels[j] = _epilogue_level(np.int32(j - bound), c, b, act, be, alpha, flo, fhi)
            rising = falling = True
            for j in range(1, span):
                rising = rising and levels[j] >= levels[j - 1]
                falling = falling and levels[j] <= levels[j - 1]
            if not (rising or falling):
                return False
            for level in range(1, top + 1):
                found = -1  # rising: the first dot at this level or above; falling: the last
                for j in range(span):
                    if levels[j] >= level:
                        found = j
                        if rising:
                            break
                _set_threshold(thr, flip, level - 1, n, found, bound, rising)
            continue
        rising = c >= 0
        for level in range(1, top + 1):
            # the dot where the level is first (rising) / last (falling) at least `level`, by bisection
            a, z = 0, span  # found in [a, z); z: none
            if rising:
                while a < z:
                    mid = (a + z) // 2
                    if _epilogue_level(np.int32(mid - bound), c, b, act, be, alpha, flo, fhi) >= level:
                        z = mid
                    else:
                        a = mid + 1
                found = a if a < span else -1
            else:
                while a < z:  # the first dot below the level
                    mid = (a + z) // 2
                    if _epilogue_level(np.int32(mid - bound), c, b, act, be, alpha, flo, fhi) < level:
                        z = mid
                    else:
                        a = mid + 1
                found = a - 1
            _set_threshold(thr, flip, level - 1, n, found, bound, rising)
    return True


@njit(inline="always")
def _set_threshold(thr, flip, row, n, found, bound, rising):
    """thr[row, n] of a channel whose level set starts (rising) / ends (falling) at dot index found
    (−1: never reached)."""
    if found < 0:
        thr[row, n] = _NEVER
    elif rising:
        thr[row, n] = found - bound
    else:
        thr[row, n] = ~np.int32(found - bound)
    flip[n] = 0 if rising else -1


def level_thresholds(coef: np.ndarray, bias: np.ndarray, act: int, beta: np.ndarray, alpha: float, lo: int, hi: int,
                     bound: int) -> LevelThresholds | None:
    """Thresholds of the levels lo..hi that `affine` (act) then `quantize_pack_planes` (per-channel
    β (N,), α) give for dots in [−bound, bound], or None where they are not integer compares: some
    channel's level not monotone in its dot, or values the float path would not order (α not > 0,
    a non-finite coef, bias or β), or a GELU linear too large to check at every dot."""
    alpha = np.float32(alpha)
    if act == GELU and (2 * bound + 1) * coef.shape[0] > _SCAN_BUDGET:
        return None
    if not (alpha > 0 and np.isfinite(alpha) and np.isfinite(coef).all() and np.isfinite(bias).all()
            and np.isfinite(beta).all()):
        return None
    n = coef.shape[0]
    thr, flip = np.empty((hi - lo, n), np.int32), np.zeros(n, np.int32)
    coef, bias, beta = (np.ascontiguousarray(a, t) for a, t in ((coef, np.float64), (bias, np.float32),
                                                                 (beta, np.float32)))
    if not _level_thresholds(coef, bias, act, beta, alpha, lo, hi, bound, thr, flip):
        return None
    return LevelThresholds(thr, flip)


_FLOAT_BITS_INF = 0x7F800000  # +inf's bit pattern: non-negative float32s order as their bit patterns up to it


@njit(cache=True)
def _map_thresholds(alpha, beta, top, thr):
    """Fill thr (top,) for probabilities p ≥ +0; each threshold by bisection over the float32 bit
    patterns (every step of `_level` is monotone in p: rising for α > 0, falling for α < 0)."""
    pattern = np.zeros(1, np.int32)
    p = pattern.view(np.float32)
    rising = alpha > 0
    span = _FLOAT_BITS_INF + 1
    for level in range(1, top + 1):
        a, z = 0, span  # the first pattern where the level is reached (rising) / no longer reached
        while a < z:
            mid = (a + z) // 2
            pattern[0] = mid
            if (_level(p[0], beta, alpha, np.float32(0.0), np.float32(top)) >= level) == rising:
                z = mid
            else:
                a = mid + 1
        if rising:  # reached from here on; NaN: never
            pattern[0] = a
            thr[level - 1] = p[0] if a < span else np.float32(np.nan)
        else:  # reached below here; +0: never, +inf: always
            pattern[0] = min(a, _FLOAT_BITS_INF)
            thr[level - 1] = p[0]


@dataclass(frozen=True)
class MapThresholds:
    """BiT's attention-map level of a probability 0 ≤ p < inf, clamp(rint((p − β)/α), 0, top), as
    compares: #{l : p ≥ thr[l]} (rising, α > 0; NaN: never) or #{l : p < thr[l]} (falling);
    thr (top,) float32."""

    thr: np.ndarray
    rising: bool


NO_MAP = MapThresholds(np.zeros(0, np.float32), True)  # maps without levels (bool, softmax-sign)


def map_thresholds(alpha: float, beta: float, top: int) -> MapThresholds:
    """The map's level thresholds; exact for any finite α ≠ 0 and β, which the file format guarantees."""
    thr = np.empty(top, np.float32)
    _map_thresholds(np.float32(alpha), np.float32(beta), top, thr)
    return MapThresholds(thr, bool(np.float32(alpha) > 0))
