"""Keep numba's on-disk cache of the engine's kernels in step with their sources.

numba keys a cached function on its own file's timestamp only. A compiled function that inlines
another module's function (the fused layers call the attention and GEMM kernels) keeps the old code
after that other module changes — e.g. after a `git pull` in an editable install. So the cache
files under this package are stamped with a digest of all of its sources and dropped when it
differs, before any kernel is compiled or loaded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

STAMP = "bitbert-jit.stamp"
CACHE_SUFFIXES = (".nbi", ".nbc")


def sources_digest(root: Path) -> str:
    """SHA-256 over every ``.py`` file under ``root`` (paths and contents, in sorted order)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def refresh(root: Path) -> int:
    """Remove numba cache files under ``root``'s ``__pycache__`` folders that were compiled from other
    sources than the current ones, and stamp the folders. Returns the number of files removed.
    Read-only installs are left alone (numba then caches elsewhere, keyed by the reinstalled files)."""
    digest = sources_digest(root)
    removed = 0
    for cache in root.rglob("__pycache__"):
        stamp = cache / STAMP
        try:
            if stamp.is_file() and stamp.read_text() == digest:
                continue
            for f in cache.iterdir():
                if f.suffix in CACHE_SUFFIXES:
                    f.unlink()
                    removed += 1
            stamp.write_text(digest)
        except OSError:
            continue
    return removed
