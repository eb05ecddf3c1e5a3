"""A linear's output bits as integer thresholds on its exact dot.

Where a 1-bit linear's output is only binarized (attention's Q, K, V; the FFN's hidden activation,
binarized for the second FFN linear), output bit n is a function of one integer: the popcount
GEMM's dot[n], always in [−K, K]. The float epilogue (× α·s, + bias, GELU, − β, compare) is
monotone in the dot for almost every channel, and then bit n = dot[n] ≥ D_n (or ≤): one integer
compare instead of ~40 float operations. Nothing here re-derives the float rule: each channel's
bits are those the float kernels themselves give for every dot in [−K, K], computed once at build
time; a linear with any channel whose bits are not monotone in its dot keeps the float path."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..kernels import unpack_bits
from .rows import affine_pack, affine_pack_heads

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

