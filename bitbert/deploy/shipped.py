"""The 1-bit SST-2 sentiment model that ships inside the package: what ``bitbert predict "text"`` and
``bitbert evaluate`` use when no model is named.

It is a `bit` 1-1-1 student of the MiniLM-L6 teacher, exported with its tokenizer. How it was
trained, and its dev accuracy measured on the packed engine by ``bitbert evaluate``, are in
``benchmarks/results/shipped_model.json`` (``benchmarks/record_shipped.py`` installs a new one); the
file's SHA-256 is pinned here, so a damaged or swapped file is refused before the engine reads it.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_MODEL", "SHIPPED_SHA256", "SHIPPED_TASK", "shipped_model", "looks_like_model"]

SHIPPED_MODEL = Path(__file__).parents[1] / "data" / "sst2-bit-w1a1.bitbert"
SHIPPED_SHA256 = "60a3553fd5362ebb64b6ccc9b8969a7e44782a61762c8e461f660c6744101e1a"  # set when the file is added (bitbert export prints it); checked by load_packed
SHIPPED_TASK = "sst2"


def shipped_model() -> Path:
    """The shipped packed file; a clear error where an install or checkout lacks it."""
    if not SHIPPED_MODEL.is_file():
        raise FileNotFoundError(f"{SHIPPED_MODEL}: the shipped SST-2 model is missing from this install "
                                "(reinstall bitbert, or name a packed model: bitbert predict MODEL.bitbert TEXT)")
    return SHIPPED_MODEL


def looks_like_model(arg: str) -> bool:
    """Whether a command's first word names a model rather than a text to classify: an existing file
    or folder, or a name ending in ``.bitbert`` (so a mistyped model path is an error, not a text)."""
    return arg.endswith(".bitbert") or Path(arg).exists()
