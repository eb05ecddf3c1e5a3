"""A run's folder: usable before any work starts, and a resume only ever continues the same run.

`bitbert.training.train.train` records each run in its folder (``checkpoint.pt``, ``progress.json``,
``report.json``) together with its *settings*: what decides the result (the training settings,
the teacher's and the data's digests, the task, the losses...). The entry points (fine-tuning,
distillation stages, pretraining) `claim` their folder first: a fresh run refuses a folder that
already holds a run (two runs would mix); a resume refuses one whose recorded settings differ, naming
them. Orphaned temporary files of an interrupted write are removed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import ConfigError

log = logging.getLogger("bitbert")

CHECKPOINT, PROGRESS, REPORT, METRICS = "checkpoint.pt", "progress.json", "report.json", "metrics.jsonl"
RUN_RECORDS = (CHECKPOINT, PROGRESS, REPORT)  # any of them: a run was here
# what `clear_runs` removes beside a record: the run's log and its saved model
RUN_OUTPUTS = (*RUN_RECORDS, METRICS, "tensorboard", "model")
# Settings that may differ between a run and its resume: none changes what the run computes.
MAY_CHANGE_ON_RESUME = frozenset({"max_steps", "max_seconds", "eval_every", "eval_batch_size", "log_every",
                                  "num_workers", "compile", "cuda_graphs"})
MIN_FREE_BYTES = 64 * 2**20  # less free disk than this fails at the first checkpoint: say so at the start
_TMP = re.compile(r"^\..+\.[0-9a-z_]+\.tmp$")  # `bitbert.core.atomic.atomic_write`'s temporary names


class RunDirError(ConfigError):
    """An output folder that cannot hold the run: not a folder, not writable, full, or holding
    another run."""


def check_same_run(recorded: Mapping[str, Any], current: Mapping[str, Any], where: str | Path) -> None:
    """Raise `ConfigError` if the run recorded in ``where`` was made with other settings than
    ``current``: continuing or reusing it would silently mix two runs. A key present on one side
    only is a difference too (a setting that did not exist, or was off, then)."""
    if not recorded:  # a record from before settings were kept
        return
    diff = [f"{k}={recorded.get(k)!r} there, {current.get(k)!r} now"
            for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    if diff:
        raise ConfigError(f"{where} was written by a run with other settings ({'; '.join(diff)}): "
                          "resume with the same settings, or use a new output directory")


def resume_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON values, without those that may change on a resume."""
    plain = json.loads(json.dumps(dict(settings), default=str))
    return {k: v for k, v in plain.items() if k not in MAY_CHANGE_ON_RESUME}


def read_json(path: str | Path) -> Any:
    """A JSON file bitbert wrote; a corrupt one is a one-line error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise RunDirError(f"{path}: corrupt run record ({type(e).__name__}: {str(e)[:120]}); "
                          "delete it (or the run folder) to start that run afresh") from None
    except OSError as e:
        raise RunDirError(f"{path}: cannot be read ({e.strerror or e})") from None


def recorded_runs(folder: str | Path) -> list[Path]:
    """The run records anywhere below ``folder`` (none if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for name in RUN_RECORDS for p in folder.rglob(name) if p.is_file())


def clean_orphans(folder: str | Path) -> None:
    """Remove temporary files that an interrupted `atomic_write` left below ``folder`` (each as
    large as what it was writing; nothing else ever reads them)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.rglob(".*.tmp"):
        if p.is_file() and _TMP.match(p.name):
            log.info("removing %s, left by an interrupted write", p)
            p.unlink(missing_ok=True)


def check_writable(folder: str | Path, min_free: int = MIN_FREE_BYTES) -> Path:
    """Create ``folder`` if needed and make sure files can be written there and the disk has
    ``min_free`` bytes left, so that the run fails now rather than at its first checkpoint."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{folder} exists and is not a folder: give a folder for the run's outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as e:
        raise RunDirError(f"{folder}: cannot write there ({e.strerror or e})") from None
    free = shutil.disk_usage(folder).free
    if free < min_free:
        raise RunDirError(f"{folder}: only {free / 2**20:.0f} MiB free on its disk, need at least "
                          f"{min_free / 2**20:.0f} MiB for checkpoints and models")
    return folder


def claim(run_dir: str | Path, settings: Mapping[str, Any], resume: bool) -> Path:
    """Before any work: ``run_dir`` is writable; a fresh run (``resume`` false) finds no run there;
    a resume finds the same run or none (its recorded settings equal ``settings``, see
    `resume_settings`). Orphaned temporary files are removed."""
    run_dir = check_writable(run_dir)
    clean_orphans(run_dir)
    if not resume:
        held = recorded_runs(run_dir)
        if held:
            raise RunDirError(f"{run_dir} already holds a run ({', '.join(str(p) for p in held[:3])}"
                              f"{' ...' if len(held) > 3 else ''}): resume it, or clear it first "
                              "(command line: --resume or --overwrite), or use a new folder")
        return run_dir
    progress = run_dir / PROGRESS
    if progress.is_file():
        record = read_json(progress)
        recorded = record.get("config") if isinstance(record, dict) else None
        if not isinstance(recorded, dict):
            raise RunDirError(f"{progress}: not a bitbert run record (no settings)")
        check_same_run(recorded, resume_settings(settings), progress)
    return run_dir


def clear_runs(folder: str | Path) -> None:
    """Remove every run below ``folder``: its records, metrics and saved model beside each record
    (what ``--overwrite`` replaces). Other files are left alone; a later resume cannot find a run."""
    for record in recorded_runs(folder):
        for name in RUN_OUTPUTS:
            p = record.parent / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    clean_orphans(folder)


def prepare_out(out: str | Path, resume: bool, overwrite: bool) -> Path:
    """The command line's check of ``--out`` before any work: writable with disk space; a fresh run
    refuses a folder holding a run unless ``overwrite`` (which clears it)."""
    if overwrite and resume:
        raise RunDirError("--overwrite and --resume contradict each other: give one")
    out = check_writable(out)
    if overwrite:
        clear_runs(out)
    held = [] if resume else recorded_runs(out)
    if held:
        raise RunDirError(f"--out {out} already holds a run ({held[0]}{' ...' if len(held) > 1 else ''}): "
                          "continue it with --resume, replace it with --overwrite, or choose another folder")
    clean_orphans(out)
    return out


# --------------------------------------------------------------------------- identity digests
def _short(h: "hashlib._Hash") -> str:
    return "sha256:" + h.hexdigest()[:16]


def digest_files(paths: Iterable[str | Path]) -> str:
    """Digest of files' contents (a folder: its files, not its subfolders; a name that is no path, e.g.
    a Hub id, by the name): what a run was computed from."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) \
            if path.is_dir() else [path] if path.is_file() else []
        if not files:
            h.update(f"name:{path}\0".encode())
        for f in files:
            h.update(f"{f.name}\0".encode())
            try:
                with f.open("rb") as stream:
                    for block in iter(lambda: stream.read(1 << 20), b""):
                        h.update(block)
            except OSError as e:
                raise RunDirError(f"{f}: cannot be read ({e.strerror or e})") from None
    return _short(h)


def digest_module(module: nn.Module) -> str:
    """Digest of ``module``'s state (names, dtypes, shapes, values): a teacher's identity."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return _short(h)
