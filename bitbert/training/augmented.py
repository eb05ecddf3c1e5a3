"""Augmented training files: written once by `write_augmented` (``bitbert augment``), read back by
`load_augmented` (``bitbert distill --augmented-file``).

The file (.tsv or .jsonl) has a header, the task's text columns, its label column and `COPY_COLUMN`:
first every original example (``aug_copy`` 0, in input order), then each example's copies
(``aug_copy`` k for its k-th copy). A copy is TinyBERT's: each replaceable word (`bitbert.training.candidates`)
swapped, with probability ``replace_prob``, for one of its candidates drawn at random; ``copies``
draws per example and text, of which those equal to the original or to an earlier copy are dropped.
A pair task's copy perturbs one text and keeps the other (`bitbert.training.augment.copy_draws`). A copy row repeats its original's label for reading
only: `load_augmented` marks it unknown, and the distillation's teacher labels it.

Deterministic for a seed (each example draws from its own generator, whatever the batching) and
resumable: copies are written per chunk of examples into ``OUT.parts/`` (each part atomically), a
re-run continues after the last finished part, and the file itself appears atomically at the end.
``OUT.augment.json`` records the settings; ``OUT.log`` gets one progress line per chunk.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.atomic import atomic_write
from ..core.config import AugmentConfig, ConfigError
from ..tasks.specs import DataError, Examples, TaskSpec, _encode_labels, _file_format, _read_raw
from .augment import COPY_COLUMN, COPY_RULE, copy_draws, mark_copies
from .candidates import CandidateGenerator, Word

__all__ = ["TASK_COPIES", "default_copies", "write_augmented", "load_augmented", "file_record"]

log = logging.getLogger("bitbert")

# TinyBERT's copies per example; tasks it did not name take its script's default, 30.
TASK_COPIES = {"cola": 30, "mrpc": 30, "rte": 30, "stsb": 30, "sst2": 20, "qnli": 20, "mnli": 10, "qqp": 10}
_OUT_FORMATS = ("tsv", "jsonl")


def default_copies(task: str) -> int:
    """TinyBERT's N for a GLUE task name (30 for any other task)."""
    return TASK_COPIES.get(task, 30)


# --------------------------------------------------------------------------- perturbing
def perturb(text: str, words: Sequence[Word], rng: np.random.Generator, prob: float) -> str:
    """``text`` with each of ``words`` replaced, with probability ``prob``, by one of its candidates."""
    if not words:
        return text
    replace = rng.random(len(words)) < prob
    pick = rng.random(len(words))
    parts, last = [], 0
    for w, r, x in zip(words, replace, pick):
        if r:
            parts += [text[last:w.start], w.candidates[int(x * len(w.candidates))]]
            last = w.end
    return "".join(parts) + text[last:]


def example_copies(texts: tuple[str, ...], words: tuple[Sequence[Word], ...], cfg: AugmentConfig,
                   index: int) -> list[tuple[str, ...]]:
    """The distinct copies of the example ``index`` (its texts and their words), in draw order."""
    rng = np.random.default_rng([cfg.seed, index])
    seen, out = {texts}, []
    for text in copy_draws(len(texts), cfg.copies):
        copy = tuple(perturb(t, w, rng, cfg.replace_prob) if j == text else t for j, (t, w) in enumerate(zip(texts, words)))
        if copy not in seen:
            seen.add(copy)
            out.append(copy)
    return out


# --------------------------------------------------------------------------- rows
def _label_text(spec: TaskSpec, label: Any) -> str:
    return f"{float(label):g}" if spec.is_regression else spec.labels[int(label)]


def _row(spec: TaskSpec, fmt: str, texts: Sequence[str], label: str, copy: int) -> str:
    if fmt == "jsonl":
        return json.dumps(dict(zip(_columns(spec), [*texts, label, copy])), ensure_ascii=False) + "\n"
    return "\t".join(" ".join(v.split()) for v in [*texts, label, str(copy)]) + "\n"  # no quoting in a TSV: no tabs, no newlines


def _columns(spec: TaskSpec) -> list[str]:
    return [*spec.text_columns, spec.label_column, COPY_COLUMN]


def _texts(examples: Examples, i: int) -> tuple[str, ...]:
    return (examples.texts_a[i],) if examples.texts_b is None else (examples.texts_a[i], examples.texts_b[i])


def _fingerprint(examples: Examples) -> str:
    h = hashlib.sha256()
    for i in range(len(examples)):
        h.update(json.dumps([*_texts(examples, i), float(examples.labels[i])]).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- writing
def write_augmented(examples: Examples, spec: TaskSpec, generator: CandidateGenerator, out: str | Path,
                    cfg: AugmentConfig, chunk_size: int = 1000) -> dict[str, Any]:
    """Write ``examples`` and their copies to ``out`` (.tsv or .jsonl; see module doc); returns the
    record also written to ``OUT.augment.json``. A finished file with the same settings is left
    as it is; one with other settings is an error, as is resuming parts written with others."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in _OUT_FORMATS:
        raise ConfigError(f"augmented file {out}: the name must end in .tsv or .jsonl")
    if cfg.copies < 1:
        raise ConfigError("augment needs copies >= 1")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if (examples.texts_b is not None) != spec.is_pair:
        raise ConfigError(f"task {spec.name} has {len(spec.text_columns)} text columns but the examples do not")
    parts_dir, record_path, log_path = (out.with_name(out.name + s) for s in (".parts", ".augment.json", ".log"))
    settings = {"augment": dataclasses.asdict(cfg), "copy_rule": COPY_RULE, "candidates": generator.describe(), "format": fmt,
                "columns": _columns(spec), "source": examples.source, "examples": len(examples),
                "fingerprint": _fingerprint(examples), "chunk_size": chunk_size}
    if not parts_dir.is_dir() and out.exists():
        done = json.loads(record_path.read_text()) if record_path.is_file() else None
        if done is None:
            raise ConfigError(f"{out} exists and was not written by bitbert augment: remove it or choose another --out")
        _check_same(done["settings"], settings, record_path)
        log.info("%s is already complete (%d rows)", out, done["rows"])
        return done
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest = parts_dir / "settings.json"
    if manifest.is_file():
        _check_same(json.loads(manifest.read_text()), settings, manifest)
    else:
        atomic_write(manifest, lambda p: p.write_text(json.dumps(settings, indent=2)))

    chunks = range(0, len(examples), chunk_size)
    t0, done_now = time.perf_counter(), 0
    for c, start in enumerate(chunks):
        part = parts_dir / f"part-{c:06d}.{fmt}"
        if part.is_file():
            continue
        idx = range(start, min(start + chunk_size, len(examples)))
        rows = list(_copy_rows(examples, spec, generator, cfg, fmt, idx))
        atomic_write(part, lambda p: p.write_text("".join(rows), encoding="utf-8"))
        done_now += len(idx)
        rate = done_now / max(time.perf_counter() - t0, 1e-9)
        line = (f"augment: {idx.stop}/{len(examples)} examples ({100 * idx.stop / len(examples):.1f}%), "
                f"{rate:.1f} examples/s, {len(rows)} copies in this chunk")
        log.info(line)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    seconds = time.perf_counter() - t0
    rows = _assemble(out, examples, spec, fmt, [parts_dir / f"part-{c:06d}.{fmt}" for c in range(len(chunks))])
    record = {"file": str(out), "rows": rows, "originals": len(examples), "copies": rows - len(examples),
              "settings": settings, "seconds_this_run": round(seconds, 3),
              "examples_per_s_this_run": round(done_now / max(seconds, 1e-9), 2)}
    atomic_write(record_path, lambda p: p.write_text(json.dumps(record, indent=2)))
    shutil.rmtree(parts_dir)
    return record


def _copy_rows(examples: Examples, spec: TaskSpec, generator: CandidateGenerator, cfg: AugmentConfig,
               fmt: str, idx: range) -> Iterator[str]:
    texts = [_texts(examples, i) for i in idx]
    flat = [t for ts in texts for t in ts]
    words = generator.words(flat)
    per = len(spec.text_columns)
    for j, i in enumerate(idx):
        label = _label_text(spec, examples.labels[i])
        own = tuple(words[j * per:(j + 1) * per])
        for k, copy in enumerate(example_copies(texts[j], own, cfg, i), 1):
            yield _row(spec, fmt, copy, label, k)


def _assemble(out: Path, examples: Examples, spec: TaskSpec, fmt: str, parts: list[Path]) -> int:
    count = 0

    def write(path: Path) -> None:
        nonlocal count
        with open(path, "w", encoding="utf-8") as f:
            if fmt == "tsv":
                f.write("\t".join(_columns(spec)) + "\n")
            for i in range(len(examples)):
                f.write(_row(spec, fmt, _texts(examples, i), _label_text(spec, examples.labels[i]), 0))
                count += 1
            for part in parts:
                with open(part, encoding="utf-8") as p:
                    for line in p:
                        f.write(line)
                        count += 1

    atomic_write(out, write)
    return count


def _check_same(saved: dict, current: dict, where: Path) -> None:
    diff = [f"{k}: {saved.get(k)!r} there, {current.get(k)!r} now" for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)]
    if diff:
        raise ConfigError(f"{where} was written with other settings ({'; '.join(diff)}): use the same settings, "
                          "or another --out (or delete the old output)")


# --------------------------------------------------------------------------- reading
def file_record(path: str | Path) -> dict[str, Any]:
    """What a run trained on ``path`` records about it: the file, and from ``OUT.augment.json`` (when
    `write_augmented` wrote it) its rows and the augmentation and candidate settings."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".augment.json")
    if not sidecar.is_file():
        return {"file": str(path)}
    record = json.loads(sidecar.read_text())
    return {"file": str(path), "rows": record["rows"], "originals": record["originals"],
            "augment": record["settings"]["augment"], "candidates": record["settings"]["candidates"],
            "copy_rule": record["settings"].get("copy_rule", "both texts")}  # files before the rule: both


def load_augmented(spec: TaskSpec, path: str | Path) -> Examples:
    """The examples of an augmented file for ``spec`` (its text and label columns and `COPY_COLUMN`,
    with a header), copies' labels marked unknown (`bitbert.training.augment.mark_copies`)."""
    path = Path(path)
    file_spec = dataclasses.replace(spec, header=None, file_format=_file_format(path))
    raw = _read_raw(path, file_spec.text_columns, file_spec.label_column, None, extra=(COPY_COLUMN,))
    copies = np.empty(len(raw.lines), np.int64)
    for i, (value, line) in enumerate(zip(raw.extra[COPY_COLUMN], raw.lines)):
        try:
            copies[i] = int(str(value).strip())
        except ValueError:
            copies[i] = -1
        if copies[i] < 0:
            raise DataError(f"column {COPY_COLUMN!r} must be an integer >= 0, got {value!r}", path, line)
        if i and copies[i] == 0 and copies[i - 1] > 0:
            raise DataError(f"an original row (aug_copy 0) after copies: originals come first", path, line)
    labels = mark_copies(_encode_labels(file_spec, raw), copies > 0)
    n = int((copies == 0).sum())
    return Examples(raw.texts[0], raw.texts[1] if spec.is_pair else None, labels,
                    f"{path}[{n} originals + {len(copies) - n} augmented copies]")
