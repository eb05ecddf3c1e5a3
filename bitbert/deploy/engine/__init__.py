"""Bitwise CPU inference engine for packed 1-bit models (numpy + numba + tokenizers; no torch).

:func:`load_packed` reads a file written by :func:`bitbert.export` and returns a
:class:`PackedEngine` that runs the fake-quantized forward of the PyTorch model with packed bits:

- embeddings: binary word rows (scale · ±1) + position + token type, LayerNorm;
- every encoder linear: fused binarize-and-pack of its input (signed: bit = x − β ≥ 0, value
  α·±1; BiT's unsigned FFN2 input: bit = (x − β)/α > 0.5, value α), XNOR- or AND-popcount GEMM
  against the packed ±1 weights, × α·s (+ bias);
- attention: Q, K, V binarized (α·±1, scalar β), scores α_q α_k (d − 2 popcount(q ⊕ k)) / √d +
  mask, then BiT's softmax → {0, α_p} or BiBERT's bool(score ≥ 0); masked keys dropped; the
  context is an AND-popcount of the map bits with ±1 V; BiPFT residual estimators in float;
- residual adds, LayerNorm, ReLU/GELU, pooler (binarized when the model's is) + tanh, float head.

Multi-bit activations (BiT's W1A2 / W1A4 students, up to 8 bits) run bit-serially on the same
popcount arithmetic (`bitbert.deploy.kernels.bitserial_gemm`): a linear's input becomes the bit planes of
its levels clamp(round((x − β)/α), Qn, Qp) − Qn, AND-popcounted with the weights (2 planes: both in
one pass of the GEMM's register tile); attention (`attention.LevelsAttention`) AND-popcounts every
plane pair of Q and K, then of the map's levels and V.

Where a binarization threshold follows, the float32 operations are PyTorch's own CPU kernels'
(LayerNorm's Welford moments, softmax's SLEEF exp and 16-lane sum, the vectorised erf of GELU),
so values land on the same side of a threshold; the only unavoidable difference is the summation
order inside PyTorch's float GEMMs (a few ulps), which the engine replaces by exact integer dots.

Speed without changing a bit: where a linear's output is only binarized (Q, K, V; the FFN's
hidden layer), its bits are integer thresholds on the exact dot, found at build time by running
the float kernels on every possible dot (`thresholds`), and its multi-bit levels likewise (one
threshold per level, by bisection on the monotone epilogue); BiT's softmax comes from a table, since
a kept key's score depends only on popcount(q ⊕ k) (`attention.score_exps`), or at 2+ bits on the
integer dot (each row's exps over its own range of dots), and the multi-bit map's levels are compares
on the probability (`thresholds.map_thresholds`); an all-1-bit or
all-2-bit layer runs as one compiled call (`fused`); a batch padded past its longest sequence runs
at that length.

Modules, one job each: `floatmath` (PyTorch-exact float32 math as numba / LLVM IR), `lanes`
(16-lane loops as LLVM IR), `rows` (fused row kernels), `attention` (attention kernels; the file's
attention mode becomes a kernel choice once, at build time), `thresholds` (output bits and levels
as dot thresholds), `layers` (the model pieces), `fused` (an all-1-bit or all-2-bit layer as one
compiled call),
`builder` (validated file → finished model), `packed_engine` (`load_packed`, logits, predict),
`profile` (per-phase timing), `threads` (the default thread count), `errors`. The popcount GEMMs
and packing kernels are `bitbert.deploy.kernels`; the file format is `bitbert.core.packed_schema`.
"""
from .errors import EngineError
from .packed_engine import PackedEngine, load_packed

__all__ = ["load_packed", "PackedEngine", "EngineError"]
