"""The packed engine's model pieces: input quantizers, 1-bit and float linears, BiPFT's estimators,
an encoder layer and the whole encoder. Each is built once from validated records (`builder`) and
holds every setting it runs with; none reads anything back from the engine."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...core.config import levels
from ...core.packed_schema import ModelSpec, QuantizerRecord
from ..kernels import (NO_COLS, PackedWeights, and_gemm, binarize_pack_elastic, binarize_pack_signed, bitserial_gemm,
                       elastic_rule, levels_pack_planes, planes_offset, quantize_pack_planes, xnor_gemm)
from .rows import NO_ACT, KeyMask, affine, affine_pack, affine_residual_layernorm, embed
from .thresholds import NO_LEVELS, NONE, LevelThresholds, OutputThresholds


@dataclass(frozen=True)
class InputQuant:
    """An activation quantizer: 1-bit signed (bit = x − β ≥ 0, value α·±1; plain sign is α = 1,
    β = 0), 1-bit unsigned elastic (bit = (x − β)/α > 0.5, value α), or multi-bit with integer
    ``levels`` (Qn, Qp) (value α · clamp(round((x − β)/α), Qn, Qp)). β: per channel or one value."""

    alpha: float
    beta: np.ndarray
    signed: bool
    bits: int = 1

    @classmethod
    def from_record(cls, record: QuantizerRecord, channels: int) -> "InputQuant":
        """From a validated record; β has ``channels`` values (plain sign: α 1, β 0)."""
        if record.kind == "sign":
            return cls(1.0, np.zeros(channels, np.float32), True, 1)
        assert record.beta.shape == (channels,)
        return cls(float(record.alpha[0]), np.ascontiguousarray(record.beta, np.float32), record.signed, record.bits)

    @property
    def levels(self) -> tuple[int, int]:
        return levels(self.bits, self.signed)

    def same_bits(self, other: InputQuant) -> bool:
        """Whether ``pack`` gives the same bits as other's for every input (a 1-bit sign's α scales
        values, not bits)."""
        alpha_matters = self.bits > 1 or not self.signed
        return (self.bits, self.signed) == (other.bits, other.signed) and np.array_equal(self.beta, other.beta) \
            and (not alpha_matters or self.alpha == other.alpha)

    @property
    def scalar_beta(self) -> float:
        return float(self.beta.reshape(-1)[0])

    def pack(self, x: np.ndarray, threads: int) -> np.ndarray:
        """Packed 1-bit rows (M, Kw), or for multi-bit the bit planes (bits, M, Kw) of the offset levels."""
        if self.bits > 1:
            return quantize_pack_planes(x, self.beta, self.alpha, *self.levels, self.bits)
        if self.signed:
            return binarize_pack_signed(x, self.beta, threads=threads)
        return binarize_pack_elastic(x, self.beta, self.alpha, threads=threads)

    @property
    def rule(self) -> tuple[np.ndarray, np.float32, np.float32, bool]:
        """(β, α, threshold, divide) of the 1-bit rule, as `affine_pack` takes it (those of
        binarize_pack_signed / binarize_pack_elastic)."""
        alpha, thr, divide = (np.float32(1.0), np.float32(0.0), False) if self.signed else elastic_rule(self.alpha)
        return self.beta, alpha, thr, divide

    @property
    def levels_rule(self) -> tuple[np.ndarray, np.float32, int, int, int]:
        """(β, α, Qn, Qp, bit planes) of a multi-bit rule, as the compiled level kernels take it."""
        return self.beta, np.float32(self.alpha), *self.levels, self.bits

    def pack_affine(self, dot: np.ndarray, coef: np.ndarray, bias: np.ndarray, act: int, threads: int,
                    by_dot: OutputThresholds = NONE) -> np.ndarray:
        """``pack(affine(dot, coef, bias, act))``: for 1 bit without the float rows in between; with
        ``by_dot`` (this rule's thresholds for that epilogue: `LevelThresholds` for multi-bit) by
        integer compares on dot."""
        if self.bits > 1:
            if isinstance(by_dot, LevelThresholds) and by_dot.thr.size:
                return levels_pack_planes(dot, by_dot.thr, by_dot.flip, self.bits)
            return self.pack(affine(dot, coef, bias, act, np.empty(dot.shape, np.float32)), threads)
        out = np.empty((dot.shape[0], (dot.shape[1] + 63) // 64), np.uint64)
        return affine_pack(dot, coef, bias, act, *self.rule, by_dot.thr, by_dot.flip, out, threads)


class BinaryLinear:
    """y = (α · s) · dot(Q(x), ±1 W) + b with the integer dot from the popcount GEMMs (bit-serial,
    one AND-popcount GEMM per bit plane, for multi-bit inputs)."""

    def __init__(self, weights: PackedWeights, scale: np.ndarray, bias: np.ndarray, quant: InputQuant,
                 row_sum: np.ndarray) -> None:
        assert quant.beta.shape == (weights.k,) and bias.shape == (weights.n,) and row_sum.shape == (weights.n,)
        self.weights, self.quant, self.row_sum = weights, quant, row_sum
        self.coef = np.ascontiguousarray(np.float64(quant.alpha) * scale.astype(np.float64) * np.ones(weights.n))
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        # multi-bit input: the bit-serial dot's offset term offset · Σ_k w (`kernels.levels_gemm_into`)
        self.col_add = planes_offset(row_sum, quant.levels[0]) if quant.bits > 1 else NO_COLS
        # Where the output is only quantized, its bits (1-bit consumer) or levels (multi-bit) as
        # thresholds on the dot (set by the builder, which knows the consumer:
        # `bitbert.deploy.engine.thresholds`); NONE / NO_LEVELS: the float epilogue.
        self.by_dot: OutputThresholds = NONE

    def dot(self, x: np.ndarray, threads: int) -> np.ndarray:
        return self.gemm(self.quant.pack(x, threads), threads)

    def gemm(self, bits: np.ndarray, threads: int) -> np.ndarray:
        """The integer dot of packed input bits (`InputQuant.pack`'s layout) with the weights."""
        if self.quant.bits > 1:
            return bitserial_gemm(bits, self.weights, self.quant.levels[0], self.row_sum, threads)
        gemm = xnor_gemm if self.quant.signed else and_gemm
        return gemm(bits, self.weights, self.weights.k, threads=threads)

    def __call__(self, x: np.ndarray, threads: int, act: int = NO_ACT) -> np.ndarray:
        return self.of_bits(self.quant.pack(x, threads), threads, act)

    def of_bits(self, bits: np.ndarray, threads: int, act: int = NO_ACT) -> np.ndarray:
        """The float output for input bits already packed by ``quant``."""
        dot = self.gemm(bits, threads)
        return affine(dot, self.coef, self.bias, act, np.empty(dot.shape, np.float32))

    def into(self, x: np.ndarray, act: int, following: BinaryLinear, threads: int) -> np.ndarray:
        """``following.dot(self(x, act))``, the output quantized and packed for ``following`` as it
        is produced."""
        bits = following.quant.pack_affine(self.dot(x, threads), self.coef, self.bias, act, threads, self.by_dot)
        return following.gemm(bits, threads)

    @property
    def dot_bound(self) -> int:
        """The largest |dot| of this linear's GEMM: K times its input's largest |level| (1-bit: 1)."""
        return self.weights.k * (1 if self.quant.bits == 1 else max(abs(v) for v in self.quant.levels))

    @property
    def params(self) -> tuple:
        """What the compiled paths (`attention.binary_heads`, `attention.levels_attention`, `fused`)
        take of a linear with 1- or 2-bit input: (panels, N, K, use_and, coef, bias, dot thresholds,
        flips, col_add, input planes); thresholds (N,) for a 1-bit consumer, (levels − 1, N) for a
        multi-bit one (empty: the float epilogue)."""
        by_dot = self.by_dot
        if self.quant.bits > 1 and not isinstance(by_dot, LevelThresholds):
            by_dot = NO_LEVELS  # the output feeds multi-bit levels: their thresholds' type
        return (self.weights.panels, self.weights.n, self.weights.k, not self.quant.signed or self.quant.bits > 1,
                self.coef, self.bias, by_dot.thr, by_dot.flip, self.col_add, self.quant.bits)


class FloatLinear:
    """A full-precision linear (task heads, BiPFT estimators): x @ Wᵀ + b in float32."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        self.weight_t = np.ascontiguousarray(weight.astype(np.float32).T)
        self.bias = None if bias is None else bias.astype(np.float32)

    def __call__(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


Linear = BinaryLinear | FloatLinear


@dataclass(frozen=True)
class Residual:
    """BiPFT's low-rank estimators of one attention layer (see bitbert.quant.estimators)."""

    qk: FloatLinear
    v_down: FloatLinear
    v_up: FloatLinear
    heads: int
    rank: int

    def terms(self, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        L = x.shape[0] // batch
        split = lambda t, width: t.reshape(batch, L, self.heads, width).transpose(0, 2, 1, 3)  # noqa: E731
        q_p, k_p, q_m, k_m = (split(t, self.rank) for t in np.split(self.qk(x), 4, axis=1))
        scores = q_m @ k_p.transpose(0, 1, 3, 2) + q_p @ (k_m + k_p).transpose(0, 1, 3, 2)
        values = self.v_up(self.v_down(x))
        return scores.astype(np.float32), split(values, values.shape[1] // self.heads).astype(np.float32)


# attention(q_linear, k_linear, v_linear, their packed inputs, batch, keys (KeyMask), threads, score_res, value_res)
# -> context: a kernel
# chosen at build time, which also chooses how Q, K and V leave their linears (bits or floats)
AttentionFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Layer:
    """One encoder layer with everything it runs with (its attention kernel already chosen)."""

    q: BinaryLinear
    k: BinaryLinear
    v: BinaryLinear
    out: BinaryLinear
    ffn_in: BinaryLinear
    ffn_out: BinaryLinear
    attention: AttentionFn
    ln_attn: tuple[np.ndarray, np.ndarray]
    ln_ffn: tuple[np.ndarray, np.ndarray]
    residual: Residual | None
    activation: int
    eps: np.float32
    qkv_one_input: bool = False  # Q, K and V quantize their input alike: it is packed once
    # An all-1-bit layer runs as one compiled call, compiled(x, batch, key_add, key_bits, threads,
    # compiled_params) (`bitbert.deploy.engine.fused`, set by the builder); None: the steps below.
    compiled: Callable | None = None
    compiled_params: tuple = ()

    def __call__(self, x: np.ndarray, batch: int, keys: KeyMask, threads: int) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled(x, batch, keys.add, keys.bits, threads, self.compiled_params)
        sres = vres = None
        if self.residual is not None:
            sres, vres = self.residual.terms(x, batch)
        q_in = self.q.quant.pack(x, threads)
        k_in, v_in = (q_in, q_in) if self.qkv_one_input else (self.k.quant.pack(x, threads),
                                                              self.v.quant.pack(x, threads))
        ctx = self.attention(self.q, self.k, self.v, (q_in, k_in, v_in), batch, keys, threads, sres, vres)
        x = self._add_norm(self.out, self.out.dot(ctx, threads), x, self.ln_attn, threads)
        hidden = self.ffn_in.into(x, self.activation, self.ffn_out, threads)
        return self._add_norm(self.ffn_out, hidden, x, self.ln_ffn, threads)

    def _add_norm(self, linear: BinaryLinear, dot: np.ndarray, residual: np.ndarray, ln, threads: int) -> np.ndarray:
        return affine_residual_layernorm(dot, linear.coef, linear.bias, residual, ln[0], ln[1], self.eps,
                                         np.empty(dot.shape, np.float32), threads)


@dataclass(frozen=True)
class Embeddings:
    """Word (1-bit rows unpacked on the fly, or float), position and token-type tables + LayerNorm."""

    word_bits: np.ndarray  # (vocab, words) uint64, or (0, 0) when the table is float
    word_scale: np.ndarray
    word_fp: np.ndarray  # (vocab, hidden) float32, or (0, 0) when the table is 1-bit
    position: np.ndarray
    token_type: np.ndarray
    ln: tuple[np.ndarray, np.ndarray]
    eps: np.float32

    def __call__(self, ids: np.ndarray, positions: np.ndarray, types_: np.ndarray, hidden: int,
                 threads: int) -> np.ndarray:
        return embed(ids.ravel(), np.ascontiguousarray(positions).ravel(), types_.ravel(), self.word_bits,
                     self.word_scale, self.word_fp, self.position, self.token_type, *self.ln, self.eps,
                     np.empty((ids.size, hidden), np.float32), threads)


@dataclass(frozen=True)
class Encoder:
    """The whole packed model: embeddings, layers, and the head on the first token
    (``out(tanh(dense(x)))``: BERT's pooler + classifier, RoBERTa's classification head)."""

    spec: ModelSpec
    embeddings: Embeddings
    layers: tuple[Layer, ...]
    head_dense: Linear
    head_out: Linear

    def __post_init__(self) -> None:
        # What `embed` indexes with the ids, positions and token types `PackedEngine.logits` checked.
        e, s = self.embeddings, self.spec
        word_rows = e.word_bits.shape[0] if e.word_bits.size else e.word_fp.shape[0]
        assert word_rows == s.vocab and e.position.shape == (s.positions, s.hidden)
        assert e.token_type.shape == (s.type_vocab, s.hidden) and e.ln[0].shape == (s.hidden,)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        if self.spec.model_type == "roberta":  # fairseq: padding keeps padding_idx, others count from it + 1
            keep = (ids != self.spec.pad_id).astype(np.int64)
            return np.cumsum(keep, axis=1) * keep + self.spec.pad_id
        return np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape)

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types_: np.ndarray, threads: int) -> np.ndarray:
        """(B, num_labels) logits for validated ids (B, L) int64, mask (B, L) bool, token types."""
        B, L = ids.shape
        x = self.embeddings(ids, self.positions(ids), types_, self.spec.hidden, threads)
        keys = KeyMask.of(mask)
        for layer in self.layers:
            x = layer(x, B, keys, threads)
        cls = np.ascontiguousarray(x.reshape(B, L, -1)[:, 0])
        return self.head_out(np.tanh(self.head_dense(cls, threads)), threads).astype(np.float32)
