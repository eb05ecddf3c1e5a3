"""A sequence classifier for a task from a model directory or checkpoint, its head checked
against the task's classes (`load_classifier`, `head_columns`)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..tasks.label_map import match_labels, placeholder_names
from ..tasks.specs import DataError, TaskSpec
from .rundir import read_json

log = logging.getLogger("bitbert")


def load_classifier(path: str | Path, spec: TaskSpec, by_name: bool = False) -> nn.Module:
    """A teacher/student for ``spec``: a bitbert directory, or any HF checkpoint (local or hub id),
    given a fresh classification head of ``spec.num_labels`` outputs when it has none. ``by_name``:
    accept a head whose classes are the task's in another order (the caller maps them with
    `head_columns`); otherwise such a head is refused."""
    from ..core.hub import from_hub_or_dir
    from ..quant import model_files

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
            model = model_files.load(path_s, **new_head)
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

    model, info = from_hub_or_dir(from_pretrained, path_s, "model")
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
    (`bitbert.tasks.label_map.match_labels`)."""
    names = [model.config.id2label.get(i) for i in range(model.config.num_labels)]
    return match_labels(names, spec.class_names if spec.labels is not None else None, path, spec.labels)
