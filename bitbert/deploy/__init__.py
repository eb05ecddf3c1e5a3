"""Deployment: the packed 1-bit file (packing), the bitwise kernels and CPU engine, the shipped
model, benchmarks against ONNX Runtime and the popcount peak. Builds on core and quant; the engine
itself runs without torch."""
from pathlib import Path as _Path

from .jitcache import refresh as _refresh_jit_cache

_refresh_jit_cache(_Path(__file__).parent)  # before any kernel loads a stale compiled copy
