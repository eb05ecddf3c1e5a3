"""Labels by name: which model output is which of a task's classes.

A model stores its class names (``id2label``, carried into packed files); a task has its own
(a GLUE task's, or a custom file's sorted labels). Matching by count alone silently swaps classes
whenever the two orders differ, so outputs are matched by name, and names that cannot be matched
are refused with both lists. Torch-free.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from .specs import DataError

log = logging.getLogger("bitbert")


def placeholder_names(n: int) -> list[str]:
    """Hugging Face's names for unnamed classes."""
    return [f"LABEL_{i}" for i in range(n)]


def match_labels(model: Sequence[str], task: Sequence[str] | None, where: str,
                 file_labels: Sequence[str] | None = None) -> list[int] | None:
    """The model output of each of the task's classes, in the task's order (None for a regression
    task, which has one output and no names). ``task`` holds the classes' names (`TaskSpec.class_names`);
    ``file_labels`` the same classes as the task's files write them (GLUE's 0/1), which a model may
    use as its names too. Placeholder names (LABEL_0, ...) carry no meaning: they are taken in index
    order, with a warning. Raises DataError when the names cannot be matched."""
    model = list(model)
    if file_labels is not None and sorted(model) == sorted(file_labels):
        task = file_labels
    if task is None:
        if len(model) != 1:
            raise DataError(f"{where} has {len(model)} class outputs {model}; the task is a regression (one output)")
        return None
    task = list(task)
    if model == placeholder_names(len(model)) and len(model) == len(task):
        log.warning("%s does not name its classes: output i is taken as the task's class %s", where, task)
        return list(range(len(task)))
    if sorted(model) != sorted(task) or len(set(model)) != len(model):
        raise DataError(f"{where} names its classes {model}; the task's classes are {task}: they cannot be matched "
                        "by name")
    index = {name: i for i, name in enumerate(model)}
    return [index[name] for name in task]
