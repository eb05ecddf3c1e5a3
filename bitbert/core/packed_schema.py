"""The packed file's schema: the one owner of what a ``.bitbert`` file holds (format version 2).

A packed file is a safetensors file whose metadata ``layout`` is a JSON tree of records, one per
part of the encoder: the embeddings, each layer's six linears, two LayerNorms and attention, and
the head. Every array of a record is a tensor named by its place in that tree
(``layers.3.query.weight_bits``, ``layers.3.attention.p.alpha``), never by a Hugging Face module
path. The quantized modules build their own records (``packed_record()`` of QuantLinear,
QuantEmbedding, ActQuantizer, BinaryAttention); `bitbert.deploy.packing` arranges them, and
:func:`read_layout` here rebuilds them from a file, checking every tensor's dtype and shape against
its record and the model's dimensions (`ModelSpec`), before any kernel sees it.

Tensor kinds and dtypes: 1-bit weights are ``weight_bits`` (uint64 words, element k of a row in word
k // 64, bit k % 64, a set bit meaning +1; the padding bits of the last word are 0) with
``weight_scale`` (float32, one per tensor or per row); activation quantizers' ``alpha`` (shape (1,))
and ``beta`` (one per input channel of a linear, one for attention) are float32; every other array
(biases, LayerNorms, float tables and weights) is in the file's ``float_dtype``. Values are finite.

Torch-free: the packed engine imports this with numpy only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ATTENTION_PROBS

FORMAT_NAME = "bitbert.packed"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (2,)
RETIRED_VERSIONS = {
    "1": "version 1 named tensors by Hugging Face module paths and checked no shapes; re-export the model "
         "directory with `bitbert export` to write version 2",
}
FLOAT_DTYPES = ("float32", "float16")
MODEL_TYPES = ("bert", "roberta")
QUANT_KINDS = ("elastic", "sign")
QUANT_BITS = (1, 2, 4, 8)
MAX_DIM = 1 << 20  # sizes beyond this are a crafted file, not a BERT-family model
MAX_LAYERS = 1024

# Summary groups of the stored tensors (`bitbert.deploy.packing.packed_summary`).
G_BITS_EMB, G_BITS_LIN, G_SCALES = "1-bit embeddings", "1-bit linear weights", "1-bit weight scales"
G_QUANT, G_RESIDUAL, G_LN = "activation binarizers (alpha, beta)", "BiPFT residual estimators", "LayerNorms"
G_EMB, G_BIAS, G_HEAD = "float embeddings", "biases", "float weights (heads)"


class PackedFormatError(ValueError):
    """A packed model file that cannot be used: corrupted, truncated, inconsistent, or of an unknown
    version. The message names the file and the field."""


def words(cols: int) -> int:
    """uint64 words per packed row of ``cols`` bits."""
    return (cols + 63) // 64


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a (..., K) bool/uint8 array (nonzero = set) into (..., ceil(K/64)) uint64, LSB first."""
    bits = np.asarray(bits)
    K = bits.shape[-1]
    nbytes = words(K) * 8
    packed = np.packbits(bits, axis=-1, bitorder="little")
    if packed.shape[-1] != nbytes:
        pad = [(0, 0)] * (packed.ndim - 1) + [(0, nbytes - packed.shape[-1])]
        packed = np.pad(packed, pad)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_bits(packed: np.ndarray, K: int) -> np.ndarray:
    """Inverse of pack_bits: (..., ceil(K/64)) uint64 -> (..., K) uint8 in {0, 1}."""
    packed = np.ascontiguousarray(packed, dtype="<u8")
    if packed.shape[-1] != words(K):
        raise ValueError(f"{packed.shape[-1]} words cannot hold K={K} (need {words(K)})")
    return np.unpackbits(packed.view(np.uint8), axis=-1, count=K, bitorder="little")


@dataclass(frozen=True)
class Entry:
    """One stored tensor: its name, array, summary group and logical element count."""

    name: str
    array: np.ndarray
    group: str
    elements: int


# ----------------------------------------------------------------------------- checked access


class _Fields:
    """Typed access to one JSON object of the layout (or the model config); errors name the field."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise PackedFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
        self.data, self.where = data, where

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise PackedFormatError(f"{self.where}.{key}: missing")
        return self.data[key]

    def int(self, key: str, lo: int = 1, hi: int = MAX_DIM, default: Any = ...) -> int:
        v = self.data.get(key, default) if default is not ... else self._get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise PackedFormatError(f"{self.where}.{key}: expected an integer in [{lo}, {hi}], got {v!r}")
        return v

    def expect(self, key: str, want: int) -> None:
        """An integer field that must equal what the model config gives."""
        if self.int(key) != want:
            raise PackedFormatError(f"{self.where}.{key}: {self.data[key]}, the model config gives {want}")

    def bool(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise PackedFormatError(f"{self.where}.{key}: expected true or false, got {v!r}")
        return v

    def choice(self, key: str, valid: tuple, default: Any = ...) -> Any:
        v = self.data.get(key, default) if default is not ... else self._get(key)
        if isinstance(v, bool) or v not in valid:
            raise PackedFormatError(f"{self.where}.{key}: expected one of {list(valid)}, got {v!r}")
        return v

    def positive_float(self, key: str, default: float) -> float:
        """A number that stays finite and > 0 in float32 (the engine divides by it)."""
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < abs(v) < 1e38 or not 0 < np.float32(v):
            raise PackedFormatError(f"{self.where}.{key}: expected a number > 0 that float32 holds, got {v!r}")
        return float(v)

    def obj(self, key: str, optional: bool = False) -> "_Fields | None":
        v = self.data.get(key) if optional else self._get(key)
        return None if v is None else _Fields(v, f"{self.where}.{key}")


class _Tensors:
    """The file's tensors, handed out once each after their dtype, shape and values are checked."""

    def __init__(self, tensors: dict[str, np.ndarray], float_dtype: str, where: str) -> None:
        self.left, self.float_dtype, self.where = dict(tensors), np.dtype(float_dtype), where

    def take(self, name: str, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        dtype = self.float_dtype if dtype is None else np.dtype(dtype)
        if name not in self.left:
            raise PackedFormatError(f"{self.where}: tensor {name!r} missing (the layout needs it)")
        a = self.left.pop(name)
        if a.dtype != dtype or a.shape != tuple(shape):
            raise PackedFormatError(f"{self.where}: tensor {name!r} is {a.dtype}{list(a.shape)}, the layout needs "
                                    f"{dtype}{list(shape)}")
        if dtype.kind == "f" and not np.isfinite(a).all():
            raise PackedFormatError(f"{self.where}: tensor {name!r} holds non-finite values")
        return a

    def finish(self) -> None:
        if self.left:
            extra = sorted(self.left)
            raise PackedFormatError(f"{self.where}: {len(extra)} tensor(s) not in the layout, e.g. {extra[:3]}")


# ----------------------------------------------------------------------------- the model's dimensions


@dataclass(frozen=True)
class ModelSpec:
    """The dimensions and labels the engine needs, read (and range-checked) from the model config."""

    model_type: str
    hidden: int
    heads: int
    layers: int
    intermediate: int
    vocab: int
    positions: int
    type_vocab: int
    pad_id: int
    eps: float
    activation: str
    labels: tuple[str, ...]  # class names in output order (one name for regression)
    regression: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def max_length(self) -> int:
        """Longest input: RoBERTa's positions start after its padding index (fairseq)."""
        return self.positions - self.pad_id - 1 if self.model_type == "roberta" else self.positions

    @classmethod
    def from_config(cls, cfg: dict[str, Any], where: str) -> "ModelSpec":
        f = _Fields(cfg, f"{where}: model_config")
        hidden, heads = f.int("hidden_size"), f.int("num_attention_heads")
        if hidden % heads:
            raise PackedFormatError(f"{f.where}.num_attention_heads: {heads} heads do not divide hidden_size {hidden}")
        vocab, positions = f.int("vocab_size"), f.int("max_position_embeddings")
        pad = cfg.get("pad_token_id")
        pad_id = 0 if pad is None else f.int("pad_token_id", 0, vocab - 1)
        model_type = f.choice("model_type", MODEL_TYPES)
        if model_type == "roberta" and pad_id + 1 >= positions:
            raise PackedFormatError(f"{f.where}.pad_token_id: {pad_id} leaves no RoBERTa position below "
                                    f"max_position_embeddings {positions}")
        act = cfg.get("hidden_act", "gelu")
        if not isinstance(act, str):
            raise PackedFormatError(f"{f.where}.hidden_act: expected a name, got {act!r}")
        labels = _labels(cfg, f)
        regression = cfg.get("problem_type") == "regression" or len(labels) == 1
        return cls(model_type, hidden, heads, f.int("num_hidden_layers", 1, MAX_LAYERS), f.int("intermediate_size"),
                   vocab, positions, f.int("type_vocab_size", default=2), pad_id,
                   f.positive_float("layer_norm_eps", 1e-12), act, labels, regression)


def _labels(cfg: dict[str, Any], f: _Fields) -> tuple[str, ...]:
    id2label = cfg.get("id2label")
    if not id2label:
        return tuple(f"LABEL_{i}" for i in range(f.int("num_labels", 1, MAX_DIM, default=2)))
    if not isinstance(id2label, dict) or len(id2label) > MAX_DIM:
        raise PackedFormatError(f"{f.where}.id2label: expected an object of class ids to names")
    names: dict[int, str] = {}
    for key, name in id2label.items():
        if not (isinstance(key, str) and key.isdigit() and isinstance(name, str)):
            raise PackedFormatError(f"{f.where}.id2label: {key!r}: {name!r} is not a class id and a name")
        names[int(key)] = name
    if sorted(names) != list(range(len(names))):
        raise PackedFormatError(f"{f.where}.id2label: class ids must be 0..{len(names) - 1}, got {sorted(names)}")
    return tuple(names[i] for i in range(len(names)))


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class QuantizerRecord:
    """An activation quantizer: ``sign`` (1-bit, value ±1) or ``elastic`` (learned α, β; 1-bit
    signed α·±1, 1-bit unsigned {0, α}, or multi-bit levels)."""

    kind: str
    bits: int
    signed: bool
    alpha: np.ndarray | None = field(default=None, repr=False)  # (1,) float32; None for sign
    beta: np.ndarray | None = field(default=None, repr=False)  # (channels,) float32; None for sign

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits, "signed": self.signed}

    def entries(self, prefix: str) -> Iterator[Entry]:
        for name in ("alpha", "beta"):
            a = getattr(self, name)
            if a is not None:
                yield Entry(f"{prefix}.{name}", np.asarray(a, np.float32).reshape(-1), G_QUANT, a.size)

    @classmethod
    def read(cls, f: _Fields, t: _Tensors, prefix: str, channels: int) -> "QuantizerRecord":
        kind, bits, signed = f.choice("kind", QUANT_KINDS), f.choice("bits", QUANT_BITS), f.bool("signed")
        if kind == "sign":
            if bits != 1 or not signed:
                raise PackedFormatError(f"{f.where}: a sign quantizer is 1-bit and signed")
            return cls(kind, bits, signed)
        alpha = t.take(f"{prefix}.alpha", (1,), np.float32)
        if alpha[0] == 0:
            raise PackedFormatError(f"{t.where}: tensor {prefix + '.alpha'!r} is 0 (a quantizer's scale)")
        return cls(kind, bits, signed, alpha, t.take(f"{prefix}.beta", (channels,), np.float32))


@dataclass(frozen=True)
class LinearRecord:
    """A linear layer: 1-bit (``weight_bits`` + ``weight_scale``) or float (``weight``), an optional
    bias and an optional quantizer of its input."""

    in_features: int
    out_features: int
    binary: bool
    per_row: bool = False
    weight_bits: np.ndarray | None = field(default=None, repr=False)
    weight_scale: np.ndarray | None = field(default=None, repr=False)
    weight: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)
    act: QuantizerRecord | None = None

    def meta(self) -> dict[str, Any]:
        return {"in": self.in_features, "out": self.out_features, "binary": self.binary, "per_row": self.per_row,
                "bias": self.bias is not None, "act": None if self.act is None else self.act.meta()}

    def entries(self, prefix: str, float_group: str = G_HEAD) -> Iterator[Entry]:
        n = self.in_features * self.out_features
        if self.binary:
            yield Entry(f"{prefix}.weight_bits", self.weight_bits, G_BITS_LIN, n)
            yield Entry(f"{prefix}.weight_scale", self.weight_scale, G_SCALES, self.weight_scale.size)
        else:
            yield Entry(f"{prefix}.weight", self.weight, float_group, n)
        if self.bias is not None:
            yield Entry(f"{prefix}.bias", self.bias, G_BIAS if float_group == G_HEAD else float_group, self.bias.size)
        if self.act is not None:
            yield from self.act.entries(f"{prefix}.act")

    @classmethod
    def read(cls, f: _Fields, t: _Tensors, prefix: str, in_features: int, out_features: int) -> "LinearRecord":
        f.expect("in", in_features)
        f.expect("out", out_features)
        binary, per_row = f.bool("binary"), f.bool("per_row")
        act_f = f.obj("act", optional=True)
        act = None if act_f is None else QuantizerRecord.read(act_f, t, f"{prefix}.act", in_features)
        bias = t.take(f"{prefix}.bias", (out_features,)) if f.bool("bias") else None
        if not binary:
            return cls(in_features, out_features, False, weight=t.take(f"{prefix}.weight", (out_features, in_features)),
                       bias=bias, act=act)
        bits = t.take(f"{prefix}.weight_bits", (out_features, words(in_features)), np.uint64)
        _check_padding(bits, in_features, f"{t.where}: tensor {prefix + '.weight_bits'!r}")
        scale = t.take(f"{prefix}.weight_scale", (out_features if per_row else 1,), np.float32)
        return cls(in_features, out_features, True, per_row, bits, scale, bias=bias, act=act)


def _check_padding(bits: np.ndarray, cols: int, where: str) -> None:
    if cols % 64 and bits.size and (bits[:, -1] >> np.uint64(cols % 64)).any():
        raise PackedFormatError(f"{where}: bits set past column {cols} (the row padding must be 0)")


@dataclass(frozen=True)
class EmbeddingRecord:
    """An embedding table: 1-bit rows (``weight_bits``, one ``weight_scale`` per row) or float."""

    rows: int
    cols: int
    binary: bool
    weight_bits: np.ndarray | None = field(default=None, repr=False)
    weight_scale: np.ndarray | None = field(default=None, repr=False)
    weight: np.ndarray | None = field(default=None, repr=False)

    def meta(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "binary": self.binary}

    def entries(self, prefix: str) -> Iterator[Entry]:
        if self.binary:
            yield Entry(f"{prefix}.weight_bits", self.weight_bits, G_BITS_EMB, self.rows * self.cols)
            yield Entry(f"{prefix}.weight_scale", self.weight_scale, G_SCALES, self.rows)
        else:
            yield Entry(f"{prefix}.weight", self.weight, G_EMB, self.rows * self.cols)

    @classmethod
    def read(cls, f: _Fields, t: _Tensors, prefix: str, rows: int, cols: int) -> "EmbeddingRecord":
        f.expect("rows", rows)
        f.expect("cols", cols)
        if not f.bool("binary"):
            return cls(rows, cols, False, weight=t.take(f"{prefix}.weight", (rows, cols)))
        bits = t.take(f"{prefix}.weight_bits", (rows, words(cols)), np.uint64)
        _check_padding(bits, cols, f"{t.where}: tensor {prefix + '.weight_bits'!r}")
        return cls(rows, cols, True, bits, t.take(f"{prefix}.weight_scale", (rows,), np.float32))


@dataclass(frozen=True)
class LayerNormRecord:
    weight: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)

    def entries(self, prefix: str) -> Iterator[Entry]:
        yield Entry(f"{prefix}.weight", self.weight, G_LN, self.weight.size)
        yield Entry(f"{prefix}.bias", self.bias, G_LN, self.bias.size)

    @classmethod
    def read(cls, t: _Tensors, prefix: str, size: int) -> "LayerNormRecord":
        return cls(t.take(f"{prefix}.weight", (size,)), t.take(f"{prefix}.bias", (size,)))


@dataclass(frozen=True)
class ResidualRecord:
    """BiPFT's low-rank estimators of one attention layer (float, no bias)."""

    rank: int
    qk: LinearRecord
    v_down: LinearRecord
    v_up: LinearRecord

    def parts(self) -> tuple[tuple[str, LinearRecord], ...]:
        return (("qk", self.qk), ("v_down", self.v_down), ("v_up", self.v_up))

    @classmethod
    def read(cls, rank: int, f: _Fields, t: _Tensors, prefix: str, spec: ModelSpec) -> "ResidualRecord":
        dims = {"qk": (spec.hidden, 4 * spec.heads * rank), "v_down": (spec.hidden, rank),
                "v_up": (rank, spec.hidden)}
        parts = {}
        for name, (i, o) in dims.items():
            rec = LinearRecord.read(f.obj(name), t, f"{prefix}.{name}", i, o)
            if rec.binary or rec.bias is not None or rec.act is not None:
                raise PackedFormatError(f"{f.where}.{name}: BiPFT's estimators are float linears without bias")
            parts[name] = rec
        return cls(rank, **parts)


@dataclass(frozen=True)
class AttentionRecord:
    """One layer's quantized self-attention: the map ``mode`` (QuantConfig.attention_probs), the
    quantizers of Q, K, V (None: kept in float) and of the map (BiT's elastic one), BiPFT's estimators."""

    mode: str
    q: QuantizerRecord | None
    k: QuantizerRecord | None
    v: QuantizerRecord | None
    p: QuantizerRecord | None
    residual: ResidualRecord | None

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"mode": self.mode}
        for name in "qkvp":
            quant = getattr(self, name)
            meta[name] = None if quant is None else quant.meta()
        if self.residual is not None:
            meta["residual"] = {"rank": self.residual.rank, **{n: r.meta() for n, r in self.residual.parts()}}
        return meta

    def entries(self, prefix: str) -> Iterator[Entry]:
        for name in "qkvp":
            quant = getattr(self, name)
            if quant is not None:
                yield from quant.entries(f"{prefix}.{name}")
        if self.residual is not None:
            for name, rec in self.residual.parts():
                yield from rec.entries(f"{prefix}.residual.{name}", G_RESIDUAL)

    @classmethod
    def read(cls, f: _Fields, t: _Tensors, prefix: str, spec: ModelSpec) -> "AttentionRecord":
        quants = {}
        for name in "qkvp":
            qf = f.obj(name, optional=True)
            quants[name] = None if qf is None else QuantizerRecord.read(qf, t, f"{prefix}.{name}", 1)
        rf = f.obj("residual", optional=True)
        residual = None
        if rf is not None:
            rank = rf.int("rank", 1, spec.hidden)
            residual = ResidualRecord.read(rank, rf, t, f"{prefix}.residual", spec)
        return cls(f.choice("mode", ATTENTION_PROBS), **quants, residual=residual)


LINEARS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class LayerRecord:
    """One encoder layer: attention (Q, K, V projections, the map, output dense + LayerNorm), then the
    FFN (in, activation, out + LayerNorm)."""

    query: LinearRecord
    key: LinearRecord
    value: LinearRecord
    attn_out: LinearRecord
    ffn_in: LinearRecord
    ffn_out: LinearRecord
    ln_attn: LayerNormRecord
    ln_ffn: LayerNormRecord
    attention: AttentionRecord | None  # None: plain float attention

    def meta(self) -> dict[str, Any]:
        return {**{n: getattr(self, n).meta() for n in LINEARS},
                "attention": None if self.attention is None else self.attention.meta()}

    def entries(self, prefix: str) -> Iterator[Entry]:
        for name in LINEARS:
            yield from getattr(self, name).entries(f"{prefix}.{name}")
        yield from self.ln_attn.entries(f"{prefix}.ln_attn")
        yield from self.ln_ffn.entries(f"{prefix}.ln_ffn")
        if self.attention is not None:
            yield from self.attention.entries(f"{prefix}.attention")

    @classmethod
    def read(cls, f: _Fields, t: _Tensors, prefix: str, spec: ModelSpec) -> "LayerRecord":
        h, i = spec.hidden, spec.intermediate
        dims = {"query": (h, h), "key": (h, h), "value": (h, h), "attn_out": (h, h), "ffn_in": (h, i),
                "ffn_out": (i, h)}
        linears = {n: LinearRecord.read(f.obj(n), t, f"{prefix}.{n}", *dims[n]) for n in LINEARS}
        af = f.obj("attention", optional=True)
        return cls(**linears, ln_attn=LayerNormRecord.read(t, f"{prefix}.ln_attn", h),
                   ln_ffn=LayerNormRecord.read(t, f"{prefix}.ln_ffn", h),
                   attention=None if af is None else AttentionRecord.read(af, t, f"{prefix}.attention", spec))


EMBEDDINGS = ("word", "position", "token_type")


@dataclass(frozen=True)
class ModelRecord:
    """The whole encoder and its head (``dense`` → tanh → ``out`` on the first token: BERT's pooler
    and classifier, RoBERTa's classification head)."""

    word: EmbeddingRecord
    position: EmbeddingRecord
    token_type: EmbeddingRecord
    ln_embed: LayerNormRecord
    layers: tuple[LayerRecord, ...]
    head_dense: LinearRecord
    head_out: LinearRecord

    def meta(self) -> dict[str, Any]:
        return {**{n: getattr(self, n).meta() for n in EMBEDDINGS}, "layers": [layer.meta() for layer in self.layers],
                "head_dense": self.head_dense.meta(), "head_out": self.head_out.meta()}

    def entries(self) -> Iterator[Entry]:
        for name in EMBEDDINGS:
            yield from getattr(self, name).entries(f"embeddings.{name}")
        yield from self.ln_embed.entries("embeddings.ln")
        for i, layer in enumerate(self.layers):
            yield from layer.entries(f"layers.{i}")
        yield from self.head_dense.entries("head.dense")
        yield from self.head_out.entries("head.out")

    def tensors(self, float_dtype: str) -> dict[str, np.ndarray]:
        """The arrays to store, by schema name, in their stored dtypes (see the module docstring)."""
        out: dict[str, np.ndarray] = {}
        for e in self.entries():
            if e.name in out:
                raise ValueError(f"two parts of the layout store {e.name!r}")
            out[e.name] = np.ascontiguousarray(e.array, _FIXED_DTYPES.get(e.group, float_dtype))
        return out


_FIXED_DTYPES = {G_BITS_EMB: np.uint64, G_BITS_LIN: np.uint64, G_SCALES: np.float32, G_QUANT: np.float32}


def read_layout(layout: Any, tensors: dict[str, np.ndarray], spec: ModelSpec, float_dtype: str,
                where: str) -> ModelRecord:
    """Rebuild the records of a file's ``layout`` from its tensors; every tensor is checked (dtype,
    shape, finite values, zero padding bits) and none may be left over. Raises PackedFormatError."""
    f = _Fields(layout, f"{where}: layout")
    t = _Tensors(tensors, float_dtype, where)
    tables = {"word": spec.vocab, "position": spec.positions, "token_type": spec.type_vocab}
    emb = {n: EmbeddingRecord.read(f.obj(n), t, f"embeddings.{n}", tables[n], spec.hidden) for n in EMBEDDINGS}
    layers = f._get("layers")
    if not isinstance(layers, list) or len(layers) != spec.layers:
        raise PackedFormatError(f"{f.where}.layers: expected a list of num_hidden_layers={spec.layers} layers")
    records = tuple(LayerRecord.read(_Fields(lf, f"{f.where}.layers[{i}]"), t, f"layers.{i}", spec)
                    for i, lf in enumerate(layers))
    model = ModelRecord(**emb, ln_embed=LayerNormRecord.read(t, "embeddings.ln", spec.hidden), layers=records,
                        head_dense=LinearRecord.read(f.obj("head_dense"), t, "head.dense", spec.hidden, spec.hidden),
                        head_out=LinearRecord.read(f.obj("head_out"), t, "head.out", spec.hidden, spec.num_labels))
    t.finish()
    return model
