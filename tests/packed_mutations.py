"""Rewriting packed files the way an attacker would: change the metadata or the tensors, then
recompute both checksums so the file passes them (they prove integrity, not origin). numpy and
safetensors only, so the fuzz subprocess stays torch-free."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bitbert.deploy.packing import _header_digest, _split


def reseal(header: dict[str, Any], payload: bytes) -> bytes:
    """Safetensors bytes of ``header`` + ``payload`` with both checksums recomputed."""
    meta = header.setdefault("__metadata__", {})
    meta["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    meta["header_sha256"] = _header_digest(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + payload


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    return _split(data, "test")


def with_metadata(data: bytes, key: str, change: Callable[[Any], Any]) -> bytes:
    """The file with metadata JSON ``key`` replaced by ``change(parsed value)``, resealed."""
    header, payload = split(data)
    meta = header["__metadata__"]
    meta[key] = json.dumps(change(json.loads(meta[key])))
    return reseal(header, payload)


def with_tensors(data: bytes, change: Callable[[dict[str, np.ndarray]], None]) -> bytes:
    """The file with its tensors changed in place by ``change`` (same metadata), resealed."""
    from safetensors.numpy import load, save

    header, _ = split(data)
    meta = {k: v for k, v in header["__metadata__"].items() if k not in ("payload_sha256", "header_sha256")}
    tensors = load(data)
    change(tensors)
    header, payload = split(save(tensors, metadata=meta))
    return reseal(header, payload)


def rewrite(path: Path, mutate: Callable[[bytes], bytes]) -> Path:
    path.write_bytes(mutate(path.read_bytes()))
    return path
