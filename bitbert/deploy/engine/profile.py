"""Where the packed engine's forward spends its time, per phase: embeddings, activation
quantize-and-pack, the popcount GEMMs, their scale/bias/activation epilogue (alone, or fused with
the next quantize-pack), attention (its score, map and context kernel and V's re-packing; 1-bit
attention's Q, K, V linears, GEMM and epilogue, run inside it and count in it; multi-bit ones
count in their own phases), LayerNorm + residual, and the rest (Python dispatch, the head, glue)
as overhead. All-1-bit layers, which normally run as one compiled call (`fused`), run their
kernels step by step while profiled.

The timers are installed only for the profiled calls, by swapping the kernel names the layer code
looks up (and each layer's attention function) for timing wrappers, and removed after: the engine's
normal path carries no instrumentation. Each numba call is timed from the Python side, so a phase
includes its own call overhead."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import layers

# layer-module kernel name -> phase
PHASES: dict[str, str] = {
    "embed": "embeddings",
    "binarize_pack_elastic": "quantize-pack", "binarize_pack_signed": "quantize-pack",
    "quantize_pack_planes": "quantize-pack",
    "xnor_gemm": "GEMMs", "and_gemm": "GEMMs", "bitserial_gemm": "GEMMs",
    "levels_pack_planes": "GEMM epilogue fused with the next quantize-pack",
    "affine": "GEMM epilogue (scale, bias, activation)",
    "affine_pack": "GEMM epilogue fused with the next quantize-pack",
    "affine_residual_layernorm": "LayerNorm + residual (with the epilogue)",
}
ATTENTION = "attention"
OVERHEAD = "overhead (dispatch, head, glue)"


def _timing(fn: Callable, phase: str, totals: dict[str, float], nested: list[float]) -> Callable:
    """fn, adding its own time to totals[phase]: the time of timed calls nested inside it (attention
    runs the Q, K, V GEMMs) goes to their phases, not to both. nested: a stack of child times."""
    def timed(*args: Any, **kw: Any) -> Any:
        nested.append(0.0)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            took = time.perf_counter() - t0
            children = nested.pop()
            totals[phase] += took - children
            if nested:
                nested[-1] += took
    return timed


@contextlib.contextmanager
def _instrumented(encoder, totals: dict[str, float]) -> Iterator[None]:
    originals = {name: getattr(layers, name) for name in PHASES}
    compiled = encoder.layers
    # all-1-bit layers run as one compiled call (`fused`): profiled, they run the same kernels step by step
    object.__setattr__(encoder, "layers", tuple(dataclasses.replace(layer, compiled=None) for layer in compiled))
    attention = [layer.attention for layer in encoder.layers]
    nested: list[float] = []
    try:
        for name, phase in PHASES.items():
            setattr(layers, name, _timing(originals[name], phase, totals, nested))
        for layer, fn in zip(encoder.layers, attention):
            object.__setattr__(layer, "attention", _timing(fn, ATTENTION, totals, nested))  # frozen dataclass
        yield
    finally:
        for name, fn in originals.items():
            setattr(layers, name, fn)
        for layer, fn in zip(encoder.layers, attention):
            object.__setattr__(layer, "attention", fn)
        object.__setattr__(encoder, "layers", compiled)


def profile_phases(engine, input_ids: np.ndarray, repeats: int = 5) -> dict[str, dict[str, float]]:
    """{phase: {"ms", "percent"}} of one ``engine.logits(input_ids)`` call, means over ``repeats``
    profiled calls after one warm-up; "forward" holds the total."""
    totals: dict[str, float] = defaultdict(float)
    with _instrumented(engine.model, totals):
        engine.logits(input_ids)  # warm-up of the step-by-step path (its kernels' first calls load them)
        totals.clear()
        t0 = time.perf_counter()
        for _ in range(max(1, repeats)):
            engine.logits(input_ids)
        total = time.perf_counter() - t0
    totals[OVERHEAD] = max(0.0, total - sum(totals.values()))
    n = max(1, repeats)
    out = {phase: {"ms": t / n * 1e3, "percent": 100 * t / total} for phase, t in totals.items()}
    out["forward"] = {"ms": total / n * 1e3, "percent": 100.0}
    return out


def phase_table(phases: dict[str, dict[str, float]]) -> str:
    rows = ["| phase | ms | % of forward |", "|---|---|---|"]
    rows += [f"| {p} | {v['ms']:.2f} | {v['percent']:.0f}% |" for p, v in phases.items()]
    return "\n".join(rows)
