"""Old home of model files, atomic writes and the Hub-or-folder loader; kept so that
``bitbert.io.save`` and ``from bitbert.io import atomic_write`` keep working. New code imports from
`bitbert.quant.model_files`, `bitbert.core.atomic` and `bitbert.core.hub`."""
from __future__ import annotations

from .core.atomic import WriteError, atomic_write  # noqa: F401
from .core.hub import TOKENIZER_FILES, from_hub_or_dir  # noqa: F401
from .quant.model_files import load, save  # noqa: F401
