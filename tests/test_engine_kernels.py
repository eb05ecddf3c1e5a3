"""The packed engine's fused row and attention kernels against their reference paths on random
inputs, odd sizes included (hidden not a multiple of 64, one token, padding masks)."""
import numpy as np
import pytest
import torch
from numba import njit

import math

from bitbert.engine.floatmath import expf, fma32, gelu
from bitbert.engine.rows import GELU, NO_ACT, RELU, affine


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
