"""Writes that never leave a half-written file (`atomic_write`) and name the file when they fail
(`WriteError`). Torch-free."""
from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path


class WriteError(OSError):
    """A file could not be written (read-only folder, full disk, ...); the message names it."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path`` and rename it into place, so a crash
    never leaves a half-written file where a good one was. The file gets the mode any new file
    gets (0666 less the umask; `tempfile.mkstemp` would give 0600). An `OSError` becomes a
    `WriteError` naming ``path``."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask gave
        write(tmp)
        os.chmod(tmp, mode)  # writers that replace the file (safetensors) would leave theirs, 0600
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
        raise
