"""A task's data for fine-tuning and distillation: loaded, tokenized once, batched; its digests are
a run's identity for resume."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.validate import SEED_MAX, SettingError, integer
from ..tasks.batching import BucketBatcher, TokenizedSplit, tokenize
from ..tasks.specs import DataError, Examples, TaskSpec, get_task, load_custom, load_glue, load_glue_hub, load_split
from .rundir import digest_module
from .train import MIN_LENGTH


@dataclass
class TaskData:
    spec: TaskSpec
    train: TokenizedSplit | None  # None: loaded for evaluation only
    dev: dict[str, TokenizedSplit]
    pad_id: int

    def _train_split(self) -> TokenizedSplit:
        if self.train is None:
            raise ValueError("this task data was loaded without its training split (dev_only=True)")
        return self.train

    def train_batches(self, batch_size: int, seed: int, device_is_gpu: bool = False) -> BucketBatcher:
        return BucketBatcher(self._train_split(), batch_size, shuffle=True, seed=seed, pad_id=self.pad_id,
                             pad_to_multiple_of=8 if device_is_gpu else None)

    def dev_batches(self, batch_size: int) -> dict[str, BucketBatcher]:
        return {name: BucketBatcher(split, batch_size, shuffle=False, seed=0, pad_id=self.pad_id)
                for name, split in self.dev.items()}

    def digests(self) -> dict[str, str]:
        """Digests of the tokenized training and dev data: a run's identity (`bitbert.training.rundir`)."""
        splits = {"train_data": [self.train] if self.train is not None else [], "dev_data": list(self.dev.values())}
        return {key: _digest_splits(parts) for key, parts in splits.items()}

    def check_fits(self, model_config) -> None:
        """Raise before training if a sequence is longer than ``model_config``'s position embeddings
        (it would fail at the first evaluation, an epoch later)."""
        from ..quant.accounting import max_positions

        limit = max_positions(model_config)
        for split in ([self.train] if self.train is not None else []) + list(self.dev.values()):
            longest = int(split.lengths.max()) if len(split) else 0
            if longest > limit:
                raise SettingError("max_length", f"must be <= the model's {limit} positions ({split.source} has "
                                   f"sequences of {longest} tokens)", longest)

    def calibration_batches(self, batch_size: int, n: int = 4) -> list[dict[str, torch.Tensor]]:
        batcher = BucketBatcher(self._train_split(), batch_size, shuffle=False, seed=0, pad_id=self.pad_id)
        return [batcher.collate(idx) for idx in batcher.batch_indices()[:n]]


def subsample(examples: Examples, n: int, seed: int = 0) -> Examples:
    """``n`` examples drawn without replacement with ``seed``, in file order; all when fewer."""
    if len(examples) <= n:
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), n, replace=False))
    return Examples([examples.texts_a[i] for i in keep],
                    None if examples.texts_b is None else [examples.texts_b[i] for i in keep],
                    examples.labels[keep], f"{examples.source}[{n} sampled]")


def _is_glue(task: str) -> bool:
    try:
        get_task(task)
    except DataError:
        return False
    return True


def _digest_splits(splits: list[TokenizedSplit]) -> str:
    h = hashlib.sha256()
    for split in splits:
        h.update(np.ascontiguousarray(split.lengths).tobytes())
        for arrays in (split.input_ids, split.token_type_ids):
            h.update(np.concatenate(arrays).tobytes() if len(arrays) else b"")
        h.update(np.ascontiguousarray(split.labels).tobytes())
    return "sha256:" + h.hexdigest()[:16]


def load_task_data(task: str | None, tokenizer, max_length: int, data_dir: str | Path | None = None,
                   train_file: str | Path | None = None, dev_file: str | Path | None = None,
                   text_columns: list[str] | None = None, label_column: str = "label",
                   regression: bool = False, max_train_examples: int = 0, dev_only: bool = False,
                   seed: int = 0, augmented_file: str | Path | None = None,
                   labels: list[str] | None = None) -> TaskData:
    """Load a GLUE task (from ``data_dir``, else the Hub) or a custom task from files.

    ``task`` names a GLUE task; with ``train_file`` it may only be another name (not a GLUE one).
    ``dev_only``: tokenize only the dev splits (``TaskData.train`` is None). A custom classification
    task reads its training file for its label set, unless ``labels`` (a model's stored class
    names) are given with ``dev_only``: then the dev file alone is read, with those classes.
    ``max_train_examples`` > 0 keeps that many training examples, drawn with ``seed``.
    ``augmented_file`` (written by ``bitbert augment``) replaces the training split: its originals,
    then its copies with unknown labels (`bitbert.training.augmented.load_augmented`)."""
    integer("max_train_examples", max_train_examples, 0)
    integer("seed", seed, 0, SEED_MAX)
    integer("max_length", max_length, MIN_LENGTH)
    if augmented_file is not None and max_train_examples:
        raise DataError("--max-train-examples cannot subsample an augmented file: augment the subsample instead "
                        "(bitbert augment --max-train-examples)")
    dev_alone = train_file is None and dev_file is not None and dev_only and (labels is not None or regression)
    if train_file is not None or dev_alone:
        if task is not None and _is_glue(task):
            raise SettingError("task", "is a GLUE task; a custom task comes from --train-file/--dev-file: give one "
                               "of the two", task)
        if data_dir is not None:
            raise SettingError("data_dir", "is for GLUE tasks; a custom task reads --train-file/--dev-file", data_dir)
        if not text_columns:
            raise DataError("a custom task needs --text-columns (one or two column names)")
    if dev_alone:
        spec, dev = load_custom(dev_file, text_columns, label_column, None if regression else labels,
                                regression=regression)
        devs, train = {"dev": dev}, None
    elif train_file is not None:
        if dev_file is None:
            raise DataError("a custom task needs --dev-file as well as --train-file")
        spec, train = load_custom(train_file, text_columns, label_column, regression=regression)
        devs = {"dev": load_split(spec, dev_file)}
    elif dev_file is not None and task is None:  # with a GLUE task, --dev-file is refused below
        raise DataError("a custom task needs --train-file (its labels define the classes) as well as --dev-file")
    else:
        if task is None:
            raise SettingError("task", "is missing: give a GLUE task, or --train-file/--dev-file for a custom task",
                               None)
        for name, value in (("dev_file", dev_file), ("text_columns", text_columns), ("regression", regression)):
            if value:
                raise SettingError(name, f"is for custom tasks (--train-file); GLUE task {task} sets its own "
                                   "files, columns and kind (stsb is the regression one)", value)
        spec = get_task(task)
        load = (lambda split: load_glue(spec, data_dir, split)) if data_dir is not None else (
            lambda split: load_glue_hub(spec, split))
        train = None if dev_only or augmented_file is not None else load("train")
        devs = {s: load(s) for s in spec.dev_splits}
    if dev_only:
        train = None
    elif augmented_file is not None:
        from .augmented import load_augmented

        train = load_augmented(spec, augmented_file)
    elif max_train_examples:
        train = subsample(train, max_train_examples, seed)
    return TaskData(spec, None if train is None else tokenize(tokenizer, train, max_length),
                    {k: tokenize(tokenizer, v, max_length) for k, v in devs.items()},
                    tokenizer.pad_token_id)


def run_identity(data: TaskData, teacher: nn.Module | None = None) -> dict[str, str]:
    """What a run is computed from besides its settings: the task, the data (tokenized: the files,
    columns, subsample and tokenizer all show) and the teacher's weights."""
    identity = {"task": data.spec.name, **data.digests()}
    if teacher is not None:
        identity["teacher"] = digest_module(teacher)
    return identity
