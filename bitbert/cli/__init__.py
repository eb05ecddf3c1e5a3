"""The ``bitbert`` command (`main`): a thin layer over the library. ``app`` builds the parser and
holds the model commands; ``deploy``, ``pretrain`` and ``augment`` add theirs; ``common`` holds
what they share."""
from __future__ import annotations

from . import app
from .app import main

__all__ = ["main"]


def __getattr__(name: str):  # the rest of the old `bitbert.cli` module's names (patch them on `app`)
    try:
        return getattr(app, name)
    except AttributeError:
        raise AttributeError(f"module 'bitbert.cli' has no attribute {name!r}") from None
