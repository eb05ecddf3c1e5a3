"""Old home of model files, atomic writes and the Hub-or-folder loader; kept so that
``bitbert.io.save`` and ``from bitbert.io import atomic_write`` keep working. New code imports from
`bitbert.model_files`, `bitbert.atomic` and `bitbert.hub`."""
from __future__ import annotations

from .atomic import WriteError, atomic_write  # noqa: F401
from .hub import TOKENIZER_FILES, from_hub_or_dir  # noqa: F401
from .model_files import load, save  # noqa: F401
