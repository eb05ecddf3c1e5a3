"""Old home of the task data, evaluation, classifier loading and paper recipes; kept so that
``from bitbert.pipeline import ...`` keeps working. New code imports from the modules named below."""
from __future__ import annotations

from .training.classifier import HEAD_PREFIX, head_columns, load_classifier  # noqa: F401
from .training.evaluation import engine_logits, make_evaluator, packed_tokenizer  # noqa: F401
from .training.recipes import BIPFT_FINETUNE_EPOCHS, PAPER_DEFAULTS, paper_defaults  # noqa: F401
from .training.task_data import TaskData, load_task_data, run_identity, subsample  # noqa: F401
