"""Task data for fine-tuning and distillation: load, tokenize once, batch, evaluate.

Per-task defaults are those of BiT's public scripts (epochs / max length / batch / lr).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .batching import BucketBatcher, TokenizedSplit, tokenize
from .label_map import match_labels, placeholder_names
from .metrics import compute_metrics
from .tasks import DataError, Examples, TaskSpec, get_task, load_custom, load_glue, load_glue_hub, load_split
from .train import MIN_LENGTH, evaluate_batches
from .rundir import read_json
from .validate import SEED_MAX, SettingError, integer

log = logging.getLogger("bitbert")

# task: (epochs, max_length, batch_size, lr) of BiT's scripts; WNLI and custom tasks take RTE's.
PAPER_DEFAULTS: dict[str, tuple[float, int, int, float]] = {
    "cola": (50, 64, 16, 5e-4), "mnli": (6, 128, 16, 2e-4), "mrpc": (20, 128, 8, 5e-4),
    "sst2": (10, 64, 8, 1e-4), "stsb": (20, 128, 8, 5e-4), "qqp": (6, 128, 32, 2e-4),
    "qnli": (10, 128, 8, 2e-4), "rte": (20, 128, 8, 5e-4), "wnli": (20, 128, 8, 5e-4),
}


# BiPFT fine-tunes without distillation with one setting for all tasks (lr 2e-5 constant, batch 32,
# seq 128); only the epochs differ.
BIPFT_FINETUNE_EPOCHS = {"cola": 50, "mnli": 6, "mrpc": 20, "sst2": 10, "stsb": 20, "qqp": 6, "qnli": 10, "rte": 20}


def paper_defaults(task: str) -> dict[str, Any]:
    """Epochs, max length, batch size and lr for distilling on ``task``, the same for every method so
    that methods are compared under one training setting. (BiBERT's scripts use lr 1e-4 on every
    task; on CoLA, seed 42, that left our bibert student at the majority class, 0 MCC, where the
    task's 5e-4 reached 6.0: benchmarks/results/bibert_ablation.json.)"""
    epochs, max_length, batch, lr = PAPER_DEFAULTS.get(task, PAPER_DEFAULTS["rte"])
    return {"epochs": epochs, "max_length": max_length, "batch_size": batch, "lr": lr}


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
        """Digests of the tokenized training and dev data: a run's identity (`bitbert.rundir`)."""
        splits = {"train_data": [self.train] if self.train is not None else [], "dev_data": list(self.dev.values())}
        return {key: _digest_splits(parts) for key, parts in splits.items()}

    def check_fits(self, model_config) -> None:
        """Raise before training if a sequence is longer than ``model_config``'s position embeddings
        (it would fail at the first evaluation, an epoch later)."""
        from .accounting import max_positions

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
    then its copies with unknown labels (`bitbert.augmented.load_augmented`)."""
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


def engine_logits(engine: Any, batches: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """`evaluate_batches` for a packed model (`bitbert.engine.PackedEngine`) on the CPU."""
    logits, labels = [], []
    for batch in batches:
        logits.append(torch.from_numpy(engine.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                                                     batch["token_type_ids"].numpy())))
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(labels)


def packed_tokenizer(engine: Any):
    """The tokenizer embedded in a packed file as a `PreTrainedTokenizerFast` (what `tokenize` takes)."""
    from transformers import PreTrainedTokenizerFast

    backend = engine.tokenizer  # EngineError when the file was exported without one
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=backend.id_to_token(engine.pad_id))


def make_evaluator(data: TaskData, batch_size: int, columns: list[int] | None = None):
    """``evaluate(model) -> metrics``: the first dev split's metrics unprefixed, others prefixed.
    ``model`` is a PyTorch classifier (run on the device of its parameters) or a packed engine;
    ``columns``: the model output of each of the task's classes (`bitbert.label_map.match_labels`)."""
    integer("batch_size", batch_size, 1)
    dev = data.dev_batches(batch_size)

    def evaluate(model: nn.Module | Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, (name, batches) in enumerate(dev.items()):
            if isinstance(model, nn.Module):
                logits, labels = evaluate_batches(model, batches, next(model.parameters()).device)
            else:
                logits, labels = engine_logits(model, batches)
            if columns is not None:
                logits = logits[:, columns]
            preds = logits.squeeze(-1) if data.spec.is_regression else logits.argmax(-1)
            metrics = compute_metrics(data.spec, preds.cpu().numpy(), labels.cpu().numpy())
            out.update(metrics if i == 0 else {f"{name}/{k}": v for k, v in metrics.items()})
        return out

    return evaluate


def load_classifier(path: str | Path, spec: TaskSpec, by_name: bool = False) -> nn.Module:
    """A teacher/student for ``spec``: a bitbert directory, or any HF checkpoint (local or hub id),
    given a fresh classification head of ``spec.num_labels`` outputs when it has none. ``by_name``:
    accept a head whose classes are the task's in another order (the caller maps them with
    `head_columns`); otherwise such a head is refused."""
    from . import io

    path_s = str(path)
    problem_type = "regression" if spec.is_regression else "single_label_classification"
    if Path(path_s, "config.json").is_file():
        cfg = read_json(Path(path_s, "config.json"))
        if "bitbert" in cfg:
            archs = cfg.get("architectures") or []
            # A binary pretrained (BiPFT) encoder, e.g. a BertForMaskedLM: keep it, start a fresh head.
            new_head = {} if any(a.endswith("ForSequenceClassification") for a in archs) else dict(
                model_class="AutoModelForSequenceClassification", num_labels=spec.num_labels,
                problem_type=problem_type)
            model = io.load(path_s, **new_head)
            _check_head(model, spec, path_s, by_name)
            return model
        if any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
            n = len(cfg.get("id2label") or {}) or cfg.get("num_labels", 2)
            if n != spec.num_labels:  # transformers would fail on the head's shape deep inside loading
                kind = "a regression (1 output)" if spec.is_regression else f"{spec.num_labels} classes"
                raise DataError(f"model {path_s} has a classification head of {n} outputs but task {spec.name} "
                                f"needs {kind}: start from a model without that task head")
    from transformers import AutoModelForSequenceClassification

    def from_pretrained(p: str):
        # transformers' own report calls the new head MISSING, which reads as a failure: say it ourselves
        hf_log = logging.getLogger("transformers.modeling_utils")
        level = hf_log.level
        hf_log.setLevel(logging.ERROR)
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                p, num_labels=spec.num_labels, dtype=torch.float32, problem_type=problem_type, output_loading_info=True)
        finally:
            hf_log.setLevel(level)

    model, info = io.from_hub_or_dir(from_pretrained, path_s, "model")
    _report_loading(info, path_s)
    _check_head(model, spec, path_s, by_name)
    return model


HEAD_PREFIX = "classifier."  # the sequence-classification head of BERT and RoBERTa


def _report_loading(info: dict, path: str) -> None:
    """A fresh classification head is expected; any other weight the checkpoint lacks (or holds in
    another shape) is initialised at random, which is worth a warning."""
    missing = list(info.get("missing_keys") or [])
    head = [k for k in missing if k.startswith(HEAD_PREFIX)]
    other = [k for k in missing if not k.startswith(HEAD_PREFIX)]
    mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys") or []]
    if head:
        log.info("%s: new classification head (%s), trained from here", path, ", ".join(sorted(head)))
    if other or mismatched:
        log.warning("%s lacks %d weight(s) the model needs, initialised at random: %s", path,
                    len(other) + len(mismatched), ", ".join(sorted(other + mismatched)[:10]))


def _check_head(model: nn.Module, spec: TaskSpec, path: str, by_name: bool = False) -> None:
    """The model's outputs are the task's classes in the task's order, or it is refused: a model
    that names its classes in another order would be trained or scored with its classes swapped
    (`bitbert evaluate` maps them by name instead: `head_columns`)."""
    n = getattr(model.config, "num_labels", None)
    if n != spec.num_labels:
        raise DataError(f"model {path} has {n} outputs but task {spec.name} has {spec.num_labels} labels")
    if spec.labels is None:
        return
    names = [model.config.id2label.get(i) for i in range(n)]
    if names == placeholder_names(n) or names == list(spec.labels) != list(spec.class_names):
        # placeholders or the files' 0/1: name the classes, for predict's output
        model.config.id2label = dict(enumerate(spec.class_names))
        model.config.label2id = {label: i for i, label in enumerate(spec.class_names)}
    elif names != list(spec.class_names):
        columns = head_columns(model, spec, path)  # DataError when the names cannot be matched at all
        if by_name:
            return
        raise DataError(f"model {path} names its classes {names}, in another order than task {spec.name}'s "
                        f"{list(spec.class_names)} (output {columns[0]} is the task's class {spec.class_names[0]!r}); "
                        "re-train it on this task's labels")


def head_columns(model: nn.Module, spec: TaskSpec, path: str) -> list[int] | None:
    """The output of each of the task's classes, matched by the names the model stores
    (`bitbert.label_map.match_labels`)."""
    names = [model.config.id2label.get(i) for i in range(model.config.num_labels)]
    return match_labels(names, spec.class_names if spec.labels is not None else None, path, spec.labels)