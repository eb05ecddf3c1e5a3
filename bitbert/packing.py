"""Packed 1-bit model files: ``export`` (PyTorch side), validated reading and ``packed_summary``.

Format (version 1): one safetensors file.
- Every 1-bit tensor (QuantLinear weights with ``weight_bits == 1``, QuantEmbedding tables) is
  stored as ``<module>.weight_bits``: uint64 words in the bit layout of :mod:`bitbert.kernels`
  (row-major, element k of a row in word k // 64, bit k % 64), a set bit meaning +1, i.e. the sign
  of W − centre with the centre folded in; plus ``<module>.weight_scale``: float32, one value per
  tensor (shape (1,)) or per row.
- Everything else keeps its state-dict name: learned α/β of the activation binarizers and the
  weight scales always in float32; biases, LayerNorms, position / token-type embeddings, the
  classifier and BiPFT's residual estimators in ``float_dtype``. The default is float32: the
  packed engine then reproduces PyTorch's logits to float rounding. float16 saves 1 MiB on
  BERT-base but rounds the model's own parameters: on tiny random fp32 models it moved logits by
  up to 4% (BiT) / 36% (BiBERT) of their scale and changed 0.7% of BiBERT's predictions; it is
  lossless only for checkpoints that are fp16 already (e.g. ../shared's MiniLM: 6e-6).
- The safetensors metadata (all strings) holds: ``format`` ("bitbert.packed"), ``format_version``,
  ``architecture``, ``base_prefix`` ("bert"/"roberta"), ``model_config`` (the Hugging Face config
  as JSON), ``quant_config`` (QuantConfig JSON), ``quantizers`` (JSON: every activation binarizer's
  kind, bits and signedness by module name), ``binary`` (JSON: the 1-bit modules and their scale
  granularity), ``float_dtype``, ``tokenizer`` (optional: the tokenizer.json of a fast tokenizer,
  zlib-compressed and base64-encoded; the engine needs only the ``tokenizers`` library),
  ``payload_sha256`` (SHA-256 of the tensor bytes) and ``header_sha256`` (of the rest of the
  header, canonical JSON). Reading checks both, so truncation or corruption fails loudly.

Sizes (MB = 2**20 bytes, as bitbert.summary): 1 bit per binary weight plus the float tensors and a
header (names, config, the tokenizer if given: ~0.25 MB for a 30k WordPiece vocabulary). A
BERT-base-shaped 1-1-1 model (BiT preset) is a 15.48 MB file (16.24e6 bytes; 14.50 MB with
float16) against 417.65 MB in fp32.
The reading path imports numpy and safetensors only (no torch).
"""
from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "bitbert.packed"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
SUPPORTED_ARCHITECTURES = ("BertForSequenceClassification", "RobertaForSequenceClassification")
FLOAT_DTYPES = ("float32", "float16")
MB = 2**20
_HASH_KEYS = ("payload_sha256", "header_sha256")
_MAX_HEADER = 256 * MB


class PackedFormatError(ValueError):
    """A packed model file that cannot be used: corrupted, truncated, or of an unknown version."""


@dataclass
class PackedModel:
    """The validated content of a packed file (see the module docstring for the fields)."""

    path: Path
    tensors: dict[str, np.ndarray]
    architecture: str
    base_prefix: str
    config: dict[str, Any]
    quant_config: dict[str, Any]
    quantizers: dict[str, dict[str, Any]]
    binary: dict[str, dict[str, Any]]
    float_dtype: str
    tokenizer_json: str | None

    def get(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise PackedFormatError(f"{self.path}: tensor {name!r} missing from the packed file") from None


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


def _binary_parts(module) -> tuple[np.ndarray, np.ndarray, bool]:
    """(packed sign bits, scales, per_row) of a 1-bit module, read off its own quantized weight, so
    the signs and scales are exactly the values PyTorch uses (|W_B| = scale everywhere in a row)."""
    from .kernels import pack_bits
    from .layers import QuantEmbedding

    q = module.quantized_weight().detach().float().cpu()
    per_row = isinstance(module, QuantEmbedding) or module.per_row
    scale = q.abs().amax(dim=1) if per_row else q.abs().amax().reshape(1)
    return pack_bits((q > 0).numpy()), scale.numpy().astype(np.float32), per_row


def _collect(model, float_dtype: str) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    from .layers import QuantEmbedding, QuantLinear
    from .quantizers import ActQuantizer

    binary, quantizers, scalars = {}, {}, set()
    for name, m in model.named_modules():
        if (isinstance(m, QuantLinear) and m.weight_bits == 1) or (isinstance(m, QuantEmbedding) and m.bits == 1):
            binary[name] = m
        elif isinstance(m, ActQuantizer):
            quantizers[name] = {"kind": m.kind, "bits": m.bits, "signed": m.signed}
            scalars.update(f"{name}.{p}" for p, _ in m.named_parameters(recurse=False))
    tensors: dict[str, np.ndarray] = {}
    binary_meta: dict[str, Any] = {}
    for name, module in binary.items():
        bits, scale, per_row = _binary_parts(module)
        tensors[f"{name}.weight_bits"], tensors[f"{name}.weight_scale"] = bits, scale
        binary_meta[name] = {"rows": int(bits.shape[0]), "cols": int(module.weight.shape[1]), "per_row": per_row}
    skip = {f"{name}.weight" for name in binary}
    for key, value in model.state_dict().items():
        if key in skip or key.endswith(".calibrated") or key in tensors:
            continue
        if not value.is_floating_point():
            raise ValueError(f"unexpected non-float tensor {key} ({value.dtype}) in the model's state dict")
        dtype = np.float32 if key in scalars else np.dtype(float_dtype)
        tensors[key] = value.detach().cpu().float().numpy().astype(dtype)
    return tensors, quantizers, binary_meta


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
    except ValueError as e:
        raise PackedFormatError(f"{where}: corrupted header, not a bitbert packed file or damaged ({e})") from None
    if not isinstance(header, dict):
        raise PackedFormatError(f"{where}: corrupted header")
    return header, data[8 + n :]


def _header_digest(header: dict[str, Any]) -> str:
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k not in _HASH_KEYS}
    canonical = json.dumps({**header, "__metadata__": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def export(model, path: str | Path, tokenizer: Any = None, float_dtype: str = "float32") -> Path:
    """Write ``model`` (from :func:`bitbert.binarize` / :func:`bitbert.load`) as a packed file.

    Supports BertForSequenceClassification and RobertaForSequenceClassification. ``tokenizer``
    (a fast tokenizer, a ``tokenizers.Tokenizer``, or a tokenizer.json / model directory path) is
    embedded so :func:`bitbert.load_packed` can ``predict`` on text. ``float_dtype``: ``float32``
    (default, exact) or ``float16`` for the non-binary tensors (see the module docstring). Any
    quantization can be exported (1-bit weights are always packed); the packed engine itself runs
    1-bit weights with 1- to 8-bit activations. The write is atomic.
    """
    from .convert import quant_config_of
    from .io import atomic_write

    arch = type(model).__name__
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"cannot export {arch}: supported architectures are {list(SUPPORTED_ARCHITECTURES)}")
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be one of {list(FLOAT_DTYPES)}, got {float_dtype!r}")
    from . import __version__

    tensors, quantizers, binary = _collect(model, float_dtype)
    config = model.config.to_dict()
    config.pop("_attn_implementation_autoset", None)
    metadata = {
        "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "bitbert_version": __version__,
        "architecture": arch, "base_prefix": model.base_model_prefix,
        "model_config": json.dumps(config, sort_keys=True, default=str),
        "quant_config": quant_config_of(model).to_json(), "quantizers": json.dumps(quantizers, sort_keys=True),
        "binary": json.dumps(binary, sort_keys=True), "float_dtype": float_dtype,
    }
    tok = _tokenizer_json(tokenizer)
    if tok is not None:
        metadata["tokenizer"] = base64.b64encode(zlib.compress(tok.encode("utf-8"), 9)).decode("ascii")
    # The payload does not depend on the metadata, so hash a first serialization, then write the
    # final one with the hashes in its header.
    header, payload = _split(_serialize(tensors, metadata), "export")
    metadata["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    metadata["header_sha256"] = _header_digest(header)
    data = _serialize(tensors, metadata)
    _verify(data, "export")
    path = Path(path)
    atomic_write(path, lambda p: p.write_bytes(data))
    return path


# ----------------------------------------------------------------------------- reading (no torch)


def _verify(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    header, payload = _split(data, where)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise PackedFormatError(f"{where}: not a bitbert packed model (no format marker {FORMAT_NAME!r})")
    version = meta.get("format_version")
    if version not in {str(v) for v in SUPPORTED_VERSIONS}:
        raise PackedFormatError(f"{where}: packed format version {version!r} is not supported; this bitbert "
                                f"reads version(s) {list(SUPPORTED_VERSIONS)}")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != meta.get("payload_sha256"):
        raise PackedFormatError(f"{where}: checksum mismatch, the file is corrupted or truncated (tensor payload "
                                f"SHA-256 {digest[:16]}..., expected {str(meta.get('payload_sha256'))[:16]}...)")
    if _header_digest(header) != meta.get("header_sha256"):
        raise PackedFormatError(f"{where}: checksum mismatch, the file header is corrupted")
    return header, meta


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(safetensors header, metadata) of a packed file after checking it (see :func:`read_packed`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed model file {path} not found")
    return _verify(path.read_bytes(), str(path))


def read_packed(path: str | Path) -> PackedModel:
    """Read and validate a packed file. Raises FileNotFoundError, or PackedFormatError for a
    truncated / corrupted file (checksums) or an unsupported format version."""
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed model file {path} not found")
    data = path.read_bytes()
    _, meta = _verify(data, str(path))
    try:
        tensors = load(data)
        tok = meta.get("tokenizer")
        return PackedModel(
            path=path, tensors=tensors, architecture=meta["architecture"], base_prefix=meta["base_prefix"],
            config=json.loads(meta["model_config"]), quant_config=json.loads(meta["quant_config"]),
            quantizers=json.loads(meta["quantizers"]), binary=json.loads(meta["binary"]),
            float_dtype=meta["float_dtype"],
            tokenizer_json=zlib.decompress(base64.b64decode(tok)).decode("utf-8") if tok else None)
    except (KeyError, ValueError, zlib.error) as e:
        raise PackedFormatError(f"{path}: malformed packed model ({e!r})") from None


# ----------------------------------------------------------------------------- summary


def _group(name: str, binary: dict[str, Any]) -> str:
    module = name.rsplit(".", 1)[0]
    if name.endswith(".weight_bits"):
        return "1-bit embeddings" if "embeddings" in module else "1-bit linear weights"
    if name.endswith(".weight_scale"):
        return "1-bit weight scales"
    if ".act_quant." in name or (".bitbert." in name and name.rsplit(".", 1)[1] in ("alpha", "beta")):
        return "activation binarizers (alpha, beta)"
    if ".residual." in name:
        return "BiPFT residual estimators"
    if "LayerNorm" in name:
        return "LayerNorms"
    if "embeddings" in name:
        return "float embeddings"
    if name.endswith(".bias") and (module in binary or ".encoder." in name or ".pooler." in name):
        return "biases"
    return "float weights (heads)"


def packed_summary(path: str | Path) -> str:
    """A table of a packed file's tensors by group: count, stored bits, MiB, and fp32 MiB."""
    path = Path(path)
    header, meta = read_header(path)
    binary = json.loads(meta["binary"])
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])  # tensors, elements, bytes, fp32 bytes
    widths: dict[str, set[int]] = defaultdict(set)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        g = _group(name, binary)
        nbytes = info["data_offsets"][1] - info["data_offsets"][0]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        r = rows[g]
        r[0] += 1
        if name.endswith(".weight_bits"):
            module = binary[name[: -len(".weight_bits")]]
            elements = module["rows"] * module["cols"]
            r[1] += elements
            r[3] += 4 * elements
            widths[g].add(1)
        else:
            r[1] += count
            r[3] += 0 if g in ("1-bit weight scales", "activation binarizers (alpha, beta)") else 4 * count
            widths[g].add(8 * nbytes // max(count, 1))
        r[2] += nbytes
    total, fp32 = sum(r[2] for r in rows.values()), sum(r[3] for r in rows.values())
    size = path.stat().st_size
    head = ["group", "tensors", "elements", "bits", "MiB", "fp32 MiB"]
    lines = [[g, f"{int(r[0])}", f"{int(r[1]):,}", "/".join(str(b) for b in sorted(widths[g])), f"{r[2] / MB:.3f}",
              f"{r[3] / MB:.3f}"] for g, r in sorted(rows.items(), key=lambda kv: -kv[1][2])]
    cols = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, cols)))  # noqa: E731
    rule = "-" * (sum(cols) + 2 * (len(cols) - 1))
    quant = json.loads(meta["quant_config"])
    return "\n".join([
        f"{path.name}: {meta['architecture']}, {quant.get('preset')} {quant['embed_bits']}-{quant['weight_bits']}-"
        f"{quant['act_bits']}, packed format v{meta['format_version']}, floats in {meta['float_dtype']}",
        fmt(head), rule, *map(fmt, lines), rule,
        f"tensors {total / MB:.2f} MiB + header {(size - total) / MB:.2f} MiB (config, tokenizer) = file "
        f"{size / MB:.2f} MiB vs {fp32 / MB:.2f} MiB fp32 ({fp32 / max(total, 1):.1f}x smaller)"])
