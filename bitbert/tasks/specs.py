"""Task specifications (the GLUE registry and custom files) and loading a split into `Examples`.

Readers are strict: a bad row raises `DataError` naming the file and line; nothing is skipped
except blank lines, which carry no data.
"""
from __future__ import annotations

import csv
import gzip
import json
import lzma
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .metrics import METRICS, REGRESSION_METRICS

__all__ = [
    "DataError", "TaskSpec", "Examples", "GLUE_TASKS", "get_task", "find_split_file",
    "load_split", "load_glue", "load_glue_hub", "load_custom",
]

_FORMATS = ("tsv", "csv", "jsonl")
MAX_FIELD_CHARS = 2**31 - 1
# A numeric label column with more distinct values than this is taken for a regression target.
MAX_NUMERIC_CLASSES = 20
FLOAT32_MAX = float(np.finfo(np.float32).max)
_OPENERS = {".gz": gzip.open, ".xz": lzma.open}  # compressed variants of the same file names


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and, when known, the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path, self.line = (str(path) if path is not None else None), line
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class TaskSpec:
    """What a task's files look like and how it is scored.

    ``labels`` are the label strings as written in the files, in class-id order; ``None`` means
    regression. ``header`` names the columns of a headerless file (CoLA); ``None`` means the
    first row is the header. ``dir_name`` / ``hub_*`` locate the task in glue_data / on the Hub.
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    metric: str = "accuracy"
    main_key: str = ""  # empty: the metric's own main key
    dev_splits: tuple[str, ...] = ("dev",)
    file_format: str = "tsv"
    header: tuple[str, ...] | None = None
    dir_name: str = ""
    hub_config: str | None = None
    hub_text_columns: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None  # what the classes mean, where the files say 0/1 (default: the labels)

    def __post_init__(self) -> None:
        # Accept lists for convenience, store tuples so the spec stays hashable.
        for name in ("text_columns", "labels", "dev_splits", "header", "hub_text_columns", "names"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if not 1 <= len(self.text_columns) <= 2:
            raise ValueError(f"task {self.name}: need 1 or 2 text columns, got {self.text_columns}")
        if self.label_column in self.text_columns:
            raise ValueError(f"task {self.name}: the label column {self.label_column!r} is also a text column: "
                             "the model would read its answer")
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name}: unknown metric {self.metric!r}; known: {METRICS}")
        if self.is_regression != (self.metric in REGRESSION_METRICS):
            kind = "regression" if self.is_regression else "classification"
            raise ValueError(f"task {self.name}: metric {self.metric!r} does not suit a {kind} task")
        if self.labels is not None and (not self.labels or len(set(self.labels)) != len(self.labels)):
            raise ValueError(f"task {self.name}: labels must be non-empty and unique: {self.labels}")
        if self.names is not None and (self.labels is None or len(set(self.names)) != len(self.labels)):
            raise ValueError(f"task {self.name}: names must be unique, one per label: {self.names}")
        if self.file_format not in _FORMATS:
            raise ValueError(f"task {self.name}: file_format must be one of {_FORMATS}")
        if not self.main_key:
            object.__setattr__(self, "main_key", self.metric)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The classes' names in class-id order (a model's id2label; what ``predict`` prints)."""
        return self.names or self.labels

    @property
    def num_labels(self) -> int:
        """Output width of the classifier head (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.dev_splits)


@dataclass
class Examples:
    """A loaded split: raw texts, label ids (int64) or scores (float32), and where it came from."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.texts_a) or (
                self.texts_b is not None and len(self.texts_b) != len(self.texts_a)):
            raise ValueError(f"{self.source}: texts and labels differ in length")

    def __len__(self) -> int:
        return len(self.texts_a)


# --------------------------------------------------------------------------- GLUE registry
# Column names are those of the standard glue_data files (download_glue_data.py). Labels are the
# strings in those files, sorted (MNLI: contradiction, entailment, neutral, as in the original
# GLUE processors); align a teacher's id2label with `spec.labels` when it was trained otherwise.
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("cola", ("sentence",), "label", _BINARY, "mcc", dir_name="CoLA",
             header=("source", "label", "original_label", "sentence"),
             hub_config="cola", hub_text_columns=("sentence",), names=("unacceptable", "acceptable")),
    TaskSpec("sst2", ("sentence",), "label", _BINARY, dir_name="SST-2",
             hub_config="sst2", hub_text_columns=("sentence",), names=("negative", "positive")),
    TaskSpec("mrpc", ("#1 String", "#2 String"), "Quality", _BINARY, "f1", dir_name="MRPC",
             hub_config="mrpc", hub_text_columns=("sentence1", "sentence2"), names=("not_equivalent", "equivalent")),
    TaskSpec("stsb", ("sentence1", "sentence2"), "score", None, "pearson_spearman", dir_name="STS-B",
             hub_config="stsb", hub_text_columns=("sentence1", "sentence2")),
    TaskSpec("qqp", ("question1", "question2"), "is_duplicate", _BINARY, "f1", dir_name="QQP",
             hub_config="qqp", hub_text_columns=("question1", "question2"), names=("not_duplicate", "duplicate")),
    TaskSpec("mnli", ("sentence1", "sentence2"), "gold_label", ("contradiction", "entailment", "neutral"),
             dev_splits=("dev_matched", "dev_mismatched"), dir_name="MNLI",
             hub_config="mnli", hub_text_columns=("premise", "hypothesis")),
    TaskSpec("qnli", ("question", "sentence"), "label", _NLI2, dir_name="QNLI",
             hub_config="qnli", hub_text_columns=("question", "sentence")),
    TaskSpec("rte", ("sentence1", "sentence2"), "label", _NLI2, dir_name="RTE",
             hub_config="rte", hub_text_columns=("sentence1", "sentence2")),
    TaskSpec("wnli", ("sentence1", "sentence2"), "label", _BINARY, dir_name="WNLI",
             hub_config="wnli", hub_text_columns=("sentence1", "sentence2"), names=("not_entailment", "entailment")),
)}


def _normalize_task_name(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_task(task: str | TaskSpec) -> TaskSpec:
    """Look up a GLUE task, case-insensitively and ignoring '-'/'_' (SST-2, sst-2, sst2, STS_B …)."""
    if isinstance(task, TaskSpec):
        return task
    spec = GLUE_TASKS.get(_normalize_task_name(task))
    if spec is None:
        raise DataError(f"unknown task {task!r}; GLUE tasks: {', '.join(GLUE_TASKS)}")
    return spec


def _check_split(spec: TaskSpec, split: str) -> str:
    split = split.replace("validation", "dev")  # accept the Hub's split names too
    if split not in spec.splits:
        raise DataError(f"task {spec.name} has no split {split!r}; valid splits: {', '.join(spec.splits)}")
    return split


# --------------------------------------------------------------------------- file reading
def _file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes.pop()
    fmt = suffixes[-1].lstrip(".") if suffixes else ""
    if fmt not in _FORMATS:
        raise DataError("unsupported file type; expected .tsv, .csv or .jsonl "
                        "(optionally compressed as .gz or .xz)", path)
    return fmt


def _lines(path: Path) -> Iterator[str]:
    """Decoded lines (newlines kept, BOM dropped), decoding line by line so errors have a line number."""
    opener = _OPENERS.get(path.suffix.lower(), open)
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                text = raw.decode("utf-8")
                yield text.lstrip("\ufeff") if line_no == 1 else text
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path, line_no) from None
    except (OSError, EOFError, lzma.LZMAError) as e:  # unreadable, truncated or corrupt archive
        raise DataError(f"cannot read file: {e}", path, line_no + 1) from None


def _delimited_records(path: Path, fmt: str, required: Sequence[str],
                       header: Sequence[str] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    # A long document is one field: lift csv's 128 KiB default (to what a C long holds everywhere).
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
    # TSVs are read with quoting off, like GLUE's own readers: SST-2/QQP texts contain bare quotes.
    if fmt == "tsv":
        reader = csv.reader(_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(_lines(path))
    columns = list(header) if header is not None else None
    if columns is not None:
        _check_columns(columns, required, path, None)
    start = 1  # first line of the record being read (a quoted CSV field may span lines)
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row:
                continue
            if columns is None:
                columns = [c.strip() for c in row]
                _check_columns(columns, required, path, line)
                continue
            if len(row) != len(columns):
                sep = "tab" if fmt == "tsv" else "comma"
                raise DataError(f"expected {len(columns)} {sep}-separated fields {columns}, "
                                f"found {len(row)}", path, line)
            yield line, dict(zip(columns, row))
    except csv.Error as e:
        raise DataError(f"malformed {fmt.upper()} row: {e}", path, start) from None


def _check_columns(columns: Sequence[str], required: Sequence[str], path: Path, line: int | None) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"column(s) {missing} not found; the columns are {list(columns)}", path, line)


def _jsonl_records(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in enumerate(_lines(path), 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, line) from None
        except RecursionError:
            raise DataError("JSON nested too deeply", path, line) from None
        if not isinstance(record, dict):
            raise DataError(f"expected one JSON object per line, got {type(record).__name__}", path, line)
        _check_columns(list(record), required, path, line)
        yield line, record


def _records(path: Path, required: Sequence[str],
             header: Sequence[str] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    fmt = _file_format(path)
    if fmt == "jsonl":
        return _jsonl_records(path, required)
    return _delimited_records(path, fmt, required, header)


@dataclass
class _RawSplit:
    """A split before label encoding: lets `load_custom` infer the label set in the same pass."""

    texts: list[list[str]]
    labels: list[Any]
    lines: list[int]
    path: Path
    extra: dict[str, list[Any]] = field(default_factory=dict)  # other columns asked for, as read


def _read_raw(path: Path, text_columns: Sequence[str], label_column: str,
              header: Sequence[str] | None, extra: Sequence[str] = ()) -> _RawSplit:
    if not path.is_file():
        raise _missing_file_error(path, [path.name])
    raw = _RawSplit([[] for _ in text_columns], [], [], path, {c: [] for c in extra})
    for line, record in _records(path, (*text_columns, label_column, *extra), header):
        for column, values in raw.extra.items():
            values.append(record[column])
        for column, texts in zip(text_columns, raw.texts):
            text = record[column]
            if not isinstance(text, str):
                raise DataError(f"text column {column!r} must be a string, got {json.dumps(text)}", path, line)
            texts.append(text)
        raw.labels.append(record[label_column])
        raw.lines.append(line)
    if not raw.lines:
        raise DataError("no examples (empty split)", path)
    return raw


def _encode_labels(spec: TaskSpec, raw: _RawSplit) -> np.ndarray:
    if spec.labels is None:
        out = np.empty(len(raw.labels), np.float32)
        for i, (value, line) in enumerate(zip(raw.labels, raw.lines)):
            try:
                score = float(value)
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score) or isinstance(value, bool):
                raise DataError(f"regression label {value!r} in column {spec.label_column!r} "
                                "is not a finite number", raw.path, line)
            if abs(score) > FLOAT32_MAX:
                raise DataError(f"regression label {value!r} in column {spec.label_column!r} is beyond "
                                f"float32's range (|x| <= {FLOAT32_MAX:.4g}): training would give inf", raw.path, line)
            out[i] = score
        return out
    ids = {label: i for i, label in enumerate(spec.labels)}
    out = np.empty(len(raw.labels), np.int64)
    for i, (value, line) in enumerate(zip(raw.labels, raw.lines)):
        label_id = ids.get(_label_text(value))
        if label_id is None:
            shown = list(spec.labels[:12]) + (["..."] if len(spec.labels) > 12 else [])
            raise DataError(f"unknown label {value!r} in column {spec.label_column!r}; "
                            f"valid labels: {shown}", raw.path, line)
        out[i] = label_id
    return out


def _label_text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else json.dumps(value)  # JSON 1 -> "1", true -> "true"


def _to_examples(spec: TaskSpec, raw: _RawSplit) -> Examples:
    labels = _encode_labels(spec, raw)
    return Examples(raw.texts[0], raw.texts[1] if spec.is_pair else None, labels, str(raw.path))


def load_split(spec: TaskSpec, path: str | Path) -> Examples:
    """Load one file of a task; the format (.tsv/.csv/.jsonl, optionally .gz/.xz) follows its name."""
    return _to_examples(spec, _read_raw(Path(path), spec.text_columns, spec.label_column, spec.header))


# --------------------------------------------------------------------------- GLUE loaders
def _missing_file_error(path: Path, wanted: Iterable[str]) -> DataError:
    folder = path.parent
    if not folder.is_dir():
        return DataError(f"directory {folder} does not exist", path)
    present = sorted(p.name for p in folder.iterdir())
    return DataError(f"file not found (looked for {', '.join(wanted)} in {folder}); "
                     f"the directory contains: {present or 'nothing'}", path)


def find_split_file(task: str | TaskSpec, data_dir: str | Path, split: str) -> Path:
    """Path of a split's file in a glue_data task folder (or in the glue_data root above it).

    Accepts ``{split}.tsv`` and its ``.tsv.gz`` / ``.tsv.xz`` compressed versions.
    """
    spec, data_dir = get_task(task), Path(data_dir)
    split = _check_split(spec, split)
    base = f"{split}.{spec.file_format}"
    names = [base, *(base + ext for ext in _OPENERS)]
    folders = [data_dir] + ([data_dir / spec.dir_name] if spec.dir_name else [])
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise _missing_file_error(data_dir / base, names)


def load_glue(task: str | TaskSpec, data_dir: str | Path, split: str) -> Examples:
    """Load ``split`` ("train", "dev"; MNLI: "dev_matched"/"dev_mismatched") from a glue_data folder."""
    spec = get_task(task)
    return load_split(spec, find_split_file(spec, data_dir, split))


def load_glue_hub(task: str | TaskSpec, split: str) -> Examples:
    """Load a GLUE split from the Hugging Face Hub (needs the optional `datasets` package and network).

    Labels are mapped onto ``spec.labels`` so the class ids match `load_glue`'s.
    """
    spec = get_task(task)
    split = _check_split(spec, split)
    if spec.hub_config is None:
        raise DataError(f"task {spec.name} is not on the Hub")
    try:
        import datasets  # optional dependency: only this code path needs it
    except ImportError as e:
        raise DataError("loading GLUE from the Hub needs the `datasets` package (pip install datasets); "
                        "or download glue_data and use load_glue(task, data_dir, split)") from e
    hub_split = split.replace("dev", "validation")
    try:
        ds = datasets.load_dataset("nyu-mll/glue", spec.hub_config, split=hub_split)
    except Exception as e:  # network, auth, cache: report which dataset failed, keep the cause
        raise DataError(f"could not load nyu-mll/glue {spec.hub_config}/{hub_split} from the Hub: {e}") from e
    source = f"hub:nyu-mll/glue/{spec.hub_config}/{hub_split}"
    texts = [list(ds[column]) for column in spec.hub_text_columns]
    if spec.labels is None:
        labels = np.asarray(ds["label"], np.float32)
    else:
        labels = np.asarray(ds["label"], np.int64)
        names = list(getattr(ds.features["label"], "names", None) or [])
        # NLI tasks name their classes; the binary tasks' Hub ids already equal the files' 0/1.
        if set(names) == set(spec.labels):
            labels = np.asarray([spec.labels.index(n) for n in names], np.int64)[labels]
        elif len(names) != spec.num_labels:
            raise DataError(f"{source}: Hub labels {names} do not match {list(spec.labels)}")
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_labels):
            raise DataError(f"{source}: labels outside 0..{spec.num_labels - 1} (unlabelled test split?)")
    if not len(labels):
        raise DataError(f"{source}: no examples (empty split)")
    return Examples(texts[0], texts[1] if spec.is_pair else None, labels, source)


# --------------------------------------------------------------------------- custom files
def _sorted_labels(values: Iterable[str]) -> tuple[str, ...]:
    unique = set(values)
    try:  # numeric labels sort by value ("2" before "10")
        return tuple(sorted(unique, key=float))
    except ValueError:
        return tuple(sorted(unique))


def load_custom(path: str | Path, text_columns: Sequence[str], label_column: str,
                labels: Sequence[str] | None = None, regression: bool = False, *,
                metric: str | None = None, name: str = "custom") -> tuple[TaskSpec, Examples]:
    """Load a training file of a custom task and build its `TaskSpec`.

    The format follows the extension (.tsv without quoting, .csv, .jsonl; optionally .gz/.xz);
    delimited files need a header row. Without ``labels`` the label set is the sorted set of the
    file's labels. Load the dev file with ``load_split(spec, dev_path)``: a label unseen in
    training is then an error.
    """
    path = Path(path)
    if regression and labels is not None:
        raise ValueError("a regression task has no label set; pass labels=None")
    raw = _read_raw(path, tuple(text_columns), label_column, None)
    if not regression and labels is None:
        labels = _sorted_labels(_label_text(v) for v in raw.labels)
        _check_class_labels(labels, label_column, path)
    metric = metric or ("pearson_spearman" if regression else "accuracy")
    spec = TaskSpec(name, tuple(text_columns), label_column, None if regression else tuple(labels),
                    metric, file_format=_file_format(path))
    return spec, _to_examples(spec, raw)


def _check_class_labels(labels: Sequence[str], label_column: str, path: Path) -> None:
    """Refuse a label set no classifier should be trained on: one class (nothing to learn), or
    numbers that look like a score (fractions, or many distinct values)."""
    if len(labels) < 2:
        raise DataError(f"every training example has label {labels[0]!r} in column {label_column!r}: "
                        "a classifier needs at least two classes", path)
    try:
        values = [float(label) for label in labels]
    except ValueError:
        return
    if (any(not v.is_integer() for v in values if math.isfinite(v)) or len(labels) > MAX_NUMERIC_CLASSES
            or len(set(values)) < len(values)):  # "1" and "1.00": one number, two classes
        raise DataError(f"column {label_column!r} holds {len(labels)} distinct numbers ({', '.join(labels[:5])}"
                        f"{', ...' if len(labels) > 5 else ''}), taken as class names: for a real-valued "
                        "target pass --regression (library: regression=True)", path)
