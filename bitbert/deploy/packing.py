"""Packed 1-bit model files: ``export`` (PyTorch side), the validating reader, ``packed_summary``.

One safetensors file; what it holds (tensor names, kinds, dtypes, the per-layer records, the
format version) is owned by :mod:`bitbert.core.packed_schema`. The metadata (all strings) holds:
``format`` ("bitbert.packed"), ``format_version``, ``architecture``, ``model_config`` (the Hugging
Face config as JSON: dimensions, label names), ``quant_config`` (QuantConfig JSON), ``layout`` (the
schema's records as JSON), ``float_dtype``, ``tokenizer`` (optional: the tokenizer.json of a fast
tokenizer, zlib-compressed and base64-encoded; the engine needs only the ``tokenizers`` library),
``payload_sha256`` (SHA-256 of the tensor bytes) and ``header_sha256`` (of the rest of the header,
canonical JSON).

Reading checks, before any kernel sees an array: both checksums (truncation, corruption), the
version, every metadata value's type and range (`ModelSpec`), every tensor's dtype, shape and
values against its record (`read_layout`: none missing, none extra), and the tokenizer's
decompressed size. Any failure is one :class:`PackedFormatError` naming the file and the field.
The checksums live in the file, so they prove integrity, not origin: for provenance, compare the
whole file's SHA-256 (printed by ``bitbert export``) with ``load_packed(path, sha256=...)``.

Floats: ``float_dtype`` float32 (default) makes the packed engine reproduce PyTorch's logits to
float rounding. float16 saves 1 MiB on BERT-base but rounds the model's own parameters: on tiny
random fp32 models it moved logits by up to 4% (BiT) / 36% (BiBERT) of their scale and changed 0.7%
of BiBERT's predictions; it is lossless only for checkpoints that are fp16 already (e.g.
../shared's MiniLM: 6e-6). Scales and quantizer parameters stay float32 either way.

Sizes (MB = 2**20 bytes, as bitbert.summary): 1 bit per binary weight plus the float tensors and a
header (names, config, the tokenizer if given: ~0.25 MB for a 30k WordPiece vocabulary). A
BERT-base-shaped 1-1-1 model (BiT preset) is a 15.5 MB file (14.5 MB with float16) against
417.65 MB in fp32. The reading path imports numpy and safetensors only (no torch).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import ConfigError, QuantConfig
from ..core.packed_schema import (FLOAT_DTYPES, FORMAT_NAME, FORMAT_VERSION, G_QUANT, G_SCALES, RETIRED_VERSIONS,
                            SUPPORTED_VERSIONS, ModelRecord, ModelSpec, PackedFormatError, read_layout)

__all__ = ["export", "read_packed", "read_header", "packed_summary", "file_sha256", "PackedModel",
           "PackedFormatError", "FORMAT_VERSION"]

SUPPORTED_ARCHITECTURES = {"BertForSequenceClassification": "bert", "RobertaForSequenceClassification": "roberta"}
MB = 2**20
MAX_TOKENIZER = 64 * MB  # decompressed tokenizer.json; a 250k-piece SentencePiece one is ~17 MB
_HASH_KEYS = ("payload_sha256", "header_sha256")
_MAX_HEADER = 256 * MB


@dataclass(frozen=True)
class PackedModel:
    """The validated content of a packed file: the model's records with their arrays (``layout``),
    its dimensions and labels (``spec``), and the configs it was exported with."""

    path: Path
    architecture: str
    config: dict[str, Any]
    spec: ModelSpec
    quant: QuantConfig
    layout: ModelRecord
    float_dtype: str
    tokenizer_json: str | None


# ----------------------------------------------------------------------------- export (torch side)


def _tokenizer_json(tokenizer: Any) -> str | None:
    """tokenizer.json text from a fast tokenizer, a ``tokenizers.Tokenizer``, a file or a directory."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer)
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the packed engine needs a fast tokenizer's tokenizer.json")
        return path.read_text(encoding="utf-8")
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise TypeError(f"cannot take a tokenizer.json from {type(tokenizer).__name__}: pass a fast tokenizer, "
                        "a tokenizers.Tokenizer, or the path of a tokenizer.json")
    return backend.to_str()


def _linear(m):
    from ..core.packed_schema import LinearRecord
    from ..quant.quantizers import to_numpy

    if hasattr(m, "packed_record"):  # QuantLinear
        return m.packed_record()
    return LinearRecord(m.in_features, m.out_features, False, weight=to_numpy(m.weight),
                        bias=None if m.bias is None else to_numpy(m.bias))


def _embedding(m):
    from ..core.packed_schema import EmbeddingRecord
    from ..quant.quantizers import to_numpy

    if hasattr(m, "packed_record"):  # QuantEmbedding
        return m.packed_record()
    return EmbeddingRecord(m.num_embeddings, m.embedding_dim, False, weight=to_numpy(m.weight))


def _layernorm(m):
    from ..core.packed_schema import LayerNormRecord
    from ..quant.quantizers import to_numpy

    return LayerNormRecord(to_numpy(m.weight), to_numpy(m.bias))


def model_record(model) -> ModelRecord:
    """The schema's records of a BERT / RoBERTa sequence classifier, each part giving its own."""
    from ..core.packed_schema import LayerRecord
    from ..quant.attention import binary_of
    from ..quant.convert import base_model

    base = base_model(model)
    emb = base.embeddings
    layers = []
    for layer in base.encoder.layer:
        sa, binary = layer.attention.self, binary_of(layer.attention.self)
        layers.append(LayerRecord(
            query=_linear(sa.query), key=_linear(sa.key), value=_linear(sa.value),
            attn_out=_linear(layer.attention.output.dense), ffn_in=_linear(layer.intermediate.dense),
            ffn_out=_linear(layer.output.dense), ln_attn=_layernorm(layer.attention.output.LayerNorm),
            ln_ffn=_layernorm(layer.output.LayerNorm), attention=None if binary is None else binary.packed_record()))
    if SUPPORTED_ARCHITECTURES[type(model).__name__] == "roberta":
        dense, out = model.classifier.dense, model.classifier.out_proj
    elif getattr(base, "pooler", None) is None:
        raise ValueError("cannot export a BertForSequenceClassification without a pooler")
    else:
        dense, out = base.pooler.dense, model.classifier
    return ModelRecord(_embedding(emb.word_embeddings), _embedding(emb.position_embeddings),
                       _embedding(emb.token_type_embeddings), _layernorm(emb.LayerNorm), tuple(layers),
                       _linear(dense), _linear(out))


def _serialize(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    from safetensors.numpy import save

    return save(tensors, metadata=metadata)


def _split(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """(header JSON, payload) of safetensors bytes."""
    if len(data) < 8:
        raise PackedFormatError(f"{where}: {len(data)} bytes is too short for a packed model (truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, _MAX_HEADER):
        raise PackedFormatError(f"{where}: truncated or not a safetensors file (header of {n} bytes, "
                                f"file of {len(data)})")
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError) as e:
        raise PackedFormatError(f"{where}: corrupted header, not a bitbert packed file or damaged ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise PackedFormatError(f"{where}: corrupted header")
    return header, data[8 + n :]


def _header_digest(header: dict[str, Any]) -> str:
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k not in _HASH_KEYS}
    canonical = json.dumps({**header, "__metadata__": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a whole file: the out-of-file digest ``load_packed(path, sha256=...)`` checks."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export(model, path: str | Path, tokenizer: Any = None, float_dtype: str = "float32") -> Path:
    """Write ``model`` (from :func:`bitbert.binarize` / :func:`bitbert.load`) as a packed file.

    Supports BertForSequenceClassification and RobertaForSequenceClassification. ``tokenizer``
    (a fast tokenizer, a ``tokenizers.Tokenizer``, or a tokenizer.json / model directory path) is
    embedded so :func:`bitbert.load_packed` can ``predict`` on text. ``float_dtype``: ``float32``
    (default, exact) or ``float16`` for the non-binary tensors (see the module docstring). Any
    quantization can be exported (1-bit weights are always packed); the packed engine itself runs
    1-bit weights with 1- to 8-bit activations. The write is atomic, and the bytes are read back
    through the validating reader first.
    """
    from ..core.atomic import atomic_write
    from ..quant.convert import quant_config_of

    arch = type(model).__name__
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"cannot export {arch}: supported architectures are {list(SUPPORTED_ARCHITECTURES)}")
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be one of {list(FLOAT_DTYPES)}, got {float_dtype!r}")
    from ..core.version import __version__

    record = model_record(model)
    config = model.config.to_dict()
    config.pop("_attn_implementation_autoset", None)
    metadata = {
        "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "bitbert_version": __version__,
        "architecture": arch, "model_config": json.dumps(config, sort_keys=True, default=str),
        "quant_config": quant_config_of(model).to_json(), "layout": json.dumps(record.meta(), sort_keys=True),
        "float_dtype": float_dtype,
    }
    tok = _tokenizer_json(tokenizer)
    if tok is not None:
        metadata["tokenizer"] = base64.b64encode(zlib.compress(tok.encode("utf-8"), 9)).decode("ascii")
    tensors = record.tensors(float_dtype)
    # The payload does not depend on the metadata, so hash a first serialization, then write the
    # final one with the hashes in its header.
    header, payload = _split(_serialize(tensors, metadata), "export")
    metadata["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    metadata["header_sha256"] = _header_digest(header)
    data = _serialize(tensors, metadata)
    _parse(data, Path(path))  # what we write is what we read
    path = Path(path)
    atomic_write(path, lambda p: p.write_bytes(data))
    return path


# ----------------------------------------------------------------------------- reading (no torch)


def _verify(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    header, payload = _split(data, where)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise PackedFormatError(f"{where}: not a bitbert packed model (no format marker {FORMAT_NAME!r})")
    bad = sorted(k for k, v in meta.items() if not isinstance(v, str))
    if bad:
        raise PackedFormatError(f"{where}: metadata {bad[0]!r} is not a string")
    version = meta.get("format_version")
    if version in RETIRED_VERSIONS:
        raise PackedFormatError(f"{where}: packed format version {version!r} is no longer read: "
                                f"{RETIRED_VERSIONS[version]}")
    if version not in {str(v) for v in SUPPORTED_VERSIONS}:
        raise PackedFormatError(f"{where}: packed format version {version!r} is not supported; this bitbert "
                                f"reads version(s) {list(SUPPORTED_VERSIONS)}")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != meta.get("payload_sha256"):
        raise PackedFormatError(f"{where}: checksum mismatch, the file is corrupted or truncated (tensor payload "
                                f"SHA-256 {digest[:16]}..., expected {str(meta.get('payload_sha256'))[:16]}...)")
    try:
        digest = _header_digest(header)
    except (ValueError, RecursionError):  # e.g. nesting too deep to serialise again
        raise PackedFormatError(f"{where}: corrupted header") from None
    if digest != meta.get("header_sha256"):
        raise PackedFormatError(f"{where}: checksum mismatch, the file header is corrupted")
    return header, meta


def _read_bytes(path: str | Path, sha256: str | None) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed model file {path} not found")
    data = path.read_bytes()
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != str(sha256).strip().lower():
            raise PackedFormatError(f"{path}: SHA-256 {digest} is not the expected {sha256}: not the file you meant "
                                    "to load")
    return path, data


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(safetensors header, metadata) of a packed file after checking its checksums and version."""
    path, data = _read_bytes(path, None)
    return _verify(data, str(path))


def _json(meta: dict[str, str], key: str, where: str) -> Any:
    value = meta.get(key)
    if not isinstance(value, str):
        raise PackedFormatError(f"{where}: metadata {key!r} missing")
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as e:
        raise PackedFormatError(f"{where}: metadata {key!r} is not valid JSON ({e})") from None


def _tokenizer_text(encoded: Any, where: str) -> str | None:
    """The embedded tokenizer.json, its decompressed size capped at MAX_TOKENIZER."""
    if encoded is None:
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
        inflate = zlib.decompressobj()
        text = inflate.decompress(raw, MAX_TOKENIZER)
        if inflate.unconsumed_tail or not inflate.eof:
            raise PackedFormatError(f"{where}: metadata 'tokenizer' is truncated or inflates past "
                                    f"{MAX_TOKENIZER // MB} MiB")
        return text.decode("utf-8")
    except (binascii.Error, ValueError, TypeError, zlib.error) as e:
        if isinstance(e, PackedFormatError):
            raise
        raise PackedFormatError(f"{where}: metadata 'tokenizer' is not a compressed tokenizer.json ({e})") from None


def _parse(data: bytes, path: Path) -> PackedModel:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    where = str(path)
    _, meta = _verify(data, where)
    arch = meta.get("architecture")
    if not isinstance(arch, str) or arch not in SUPPORTED_ARCHITECTURES:
        raise PackedFormatError(f"{where}: metadata 'architecture' {arch!r} is not one of "
                                f"{list(SUPPORTED_ARCHITECTURES)}")
    config = _json(meta, "model_config", where)
    spec = ModelSpec.from_config(config, where)
    if spec.model_type != SUPPORTED_ARCHITECTURES[arch]:
        raise PackedFormatError(f"{where}: model_config.model_type {spec.model_type!r} does not match {arch}")
    quant = _json(meta, "quant_config", where)
    try:
        quant = QuantConfig.from_dict(quant)
    except (ConfigError, ValueError, TypeError, AttributeError) as e:
        raise PackedFormatError(f"{where}: metadata 'quant_config': {e}") from None
    float_dtype = meta.get("float_dtype")
    if float_dtype not in FLOAT_DTYPES:
        raise PackedFormatError(f"{where}: metadata 'float_dtype' {float_dtype!r} is not one of {list(FLOAT_DTYPES)}")
    try:
        tensors = load(data)
    except SafetensorError as e:
        raise PackedFormatError(f"{where}: malformed tensor table ({e})") from None
    layout = read_layout(_json(meta, "layout", where), tensors, spec, float_dtype, where)
    return PackedModel(path, arch, config, spec, quant, layout, float_dtype,
                       _tokenizer_text(meta.get("tokenizer"), where))


def read_packed(path: str | Path, sha256: str | None = None) -> PackedModel:
    """Read and validate a packed file (see the module docstring). Raises FileNotFoundError, or
    PackedFormatError naming the file and the field. ``sha256``: the whole file's expected digest."""
    path, data = _read_bytes(path, sha256)
    return _parse(data, path)


# ----------------------------------------------------------------------------- summary


def packed_summary(path: str | Path) -> str:
    """A table of a packed file's tensors by group: count, stored bits, MiB, and fp32 MiB."""
    path = Path(path)
    packed = read_packed(path)
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])  # tensors, elements, bytes, fp32 bytes
    widths: dict[str, set[int]] = defaultdict(set)
    for e in packed.layout.entries():
        r = rows[e.group]
        r[0] += 1
        r[1] += e.elements
        r[2] += e.array.nbytes
        r[3] += 0 if e.group in (G_SCALES, G_QUANT) else 4 * e.elements
        widths[e.group].add(8 * e.array.nbytes // max(e.elements, 1))
    total, fp32 = sum(r[2] for r in rows.values()), sum(r[3] for r in rows.values())
    size = path.stat().st_size
    head = ["group", "tensors", "elements", "bits", "MiB", "fp32 MiB"]
    lines = [[g, f"{int(r[0])}", f"{int(r[1]):,}", "/".join(str(b) for b in sorted(widths[g])), f"{r[2] / MB:.3f}",
              f"{r[3] / MB:.3f}"] for g, r in sorted(rows.items(), key=lambda kv: -kv[1][2])]
    cols = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, cols)))  # noqa: E731
    rule = "-" * (sum(cols) + 2 * (len(cols) - 1))
    return "\n".join([
        f"{path.name}: {packed.architecture}, {packed.quant.preset} {packed.quant.bits}, packed format "
        f"v{FORMAT_VERSION}, floats in {packed.float_dtype}",
        fmt(head), rule, *map(fmt, lines), rule,
        f"tensors {total / MB:.2f} MiB + header {(size - total) / MB:.2f} MiB (config, tokenizer) = file "
        f"{size / MB:.2f} MiB vs {fp32 / MB:.2f} MiB fp32 ({fp32 / max(total, 1):.1f}x smaller)"])
