"""What the run_glue.py probes (fp_weight_layers.py, token_noise.py) share: run `run_glue.py` with this
process's arguments after the probe has patched the library, then mark its student records."""
from __future__ import annotations

import json
import os
import runpy
import shlex
import sys
from pathlib import Path
from typing import Callable


def mark_students(records_file: Path, key: str, mark: Callable[[dict], dict]) -> None:
    """Update each student record (not the teacher's) that lacks ``key`` with ``mark(record)``."""
    if not records_file.is_file():
        return
    records = json.loads(records_file.read_text())
    for r in records:
        if r["method"] != "fp" and key not in r:
            r.update(mark(r))
    records_file.write_text(json.dumps(records, indent=2))


def run_glue(env: str, script: str, key: str, mark: Callable[[dict, str], dict]) -> None:
    """`run_glue.py` with ``sys.argv[1:]``; then its records get ``mark(record, command)``, ``command``
    being this probe's own (``env`` + ``python benchmarks/SCRIPT`` + the arguments)."""
    args = sys.argv[1:]
    command = f"{env} python benchmarks/{script} " + " ".join(map(shlex.quote, args))
    script = Path(__file__).with_name("run_glue.py")
    sys.argv = [os.path.relpath(script)] + args  # run_glue.py records its command from these: keep it relative
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        out, task = args[args.index("--out") + 1], args[args.index("--task") + 1]
        mark_students(Path(out) / f"{task}.json", key, lambda r: mark(r, command))
