"""Tasks and their text: task specifications and split loading (specs, re-exported here as
``bitbert.tasks`` always exported them), metrics, batching, the pretraining corpus and label
matching. Builds on `bitbert.core` only."""
from __future__ import annotations

from . import specs
from .specs import (GLUE_TASKS, DataError, Examples, TaskSpec, find_split_file, get_task, load_custom, load_glue,
                    load_glue_hub, load_split)

__all__ = list(specs.__all__)


def __getattr__(name: str):  # the rest of the old `bitbert.tasks` module's names
    try:
        return getattr(specs, name)
    except AttributeError:
        raise AttributeError(f"module 'bitbert.tasks' has no attribute {name!r}") from None
