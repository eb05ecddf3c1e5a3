"""Add the records a device call returned (gpu_glue.sh's records.json) to a results file.

    python benchmarks/merge_results.py RECORDS.json --call 20 --note "H200, fresh machine; ..." \
        [--into benchmarks/results/glue_minilm.json]

Each record gets the call number and note; a record already in the file (same call, task, method,
schedule and run_glue.py command) is not added twice, so re-merging a refreshed records.json is safe. Then run
``python benchmarks/tables.py`` to regenerate the README tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitbert.io import atomic_write  # noqa: E402

KEY = ("device_call", "task", "method", "schedule", "command")  # the command: one call may run several settings


def merge(existing: list[dict], returned: list[dict], call: int, note: str) -> tuple[list[dict], int]:
    """``existing`` plus the ``returned`` records not in it yet, tagged with ``call`` and ``note``."""
    seen = {tuple(r.get(k) for k in KEY) for r in existing}
    added = []
    for r in returned:
        r = {k: v for k, v in r.items() if k != "records_file"} | {"device_call": call, "note": note}
        key = tuple(r.get(k) for k in KEY)
        if key not in seen:
            seen.add(key)
            added.append(r)
    return existing + added, len(added)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", help="records.json (or run_glue.py OUT/task.json) files")
    ap.add_argument("--call", type=int, required=True, help="the device call's number")
    ap.add_argument("--note", required=True, help="machine, what ran, the exact gpu_glue.sh command")
    ap.add_argument("--into", default=str(ROOT / "benchmarks" / "results" / "glue_minilm.json"))
    args = ap.parse_args(argv)
    into = Path(args.into)
    try:
        existing = json.loads(into.read_text()) if into.is_file() else []
        returned = [r for f in args.records for r in json.loads(Path(f).read_text())]
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    merged, n = merge(existing, returned, args.call, args.note)
    atomic_write(into, lambda p: p.write_text(json.dumps(merged, indent=2) + "\n"))
    print(f"{into}: {n} records added, {len(returned) - n} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
