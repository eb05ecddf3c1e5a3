"""Add the records a device call returned (gpu_glue.sh's records.json) to a results file.

    python benchmarks/merge_results.py RECORDS.json --call 20 --note "H200, fresh machine; ..." \
        [--into benchmarks/results/glue_minilm.json]

Each record gets the call number and note; a record already in the file (same task, method,
schedule, run_glue.py command and wall time) is not added twice, so re-merging a refreshed
records.json, or a later call's that repeats what an earlier call on the same machine finished, is safe. Then run
``python benchmarks/tables.py`` to regenerate the README tables.

gpu_probe.sh's evals.jsonl (each variant's last model through ``bitbert evaluate``: PyTorch fp32 on GPU
and CPU, the packed engine) goes to benchmarks/results/engine_accuracy.json:

    python benchmarks/merge_results.py --evals EVALS.jsonl --call 31 --note "..."

Runs a call's limit cut leave no record; their stages' reports so far come back in runs.tgz:

    python benchmarks/merge_results.py --cut UNPACKED_RUNS_TGZ --call 21 --note "..." \
        [--cut-into benchmarks/results/glue_cut_runs.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitbert.core.atomic import atomic_write  # noqa: E402
from bitbert.quant.schedule import Schedule  # noqa: E402
from bitbert.training.distill import stage_dir_name  # noqa: E402
from bitbert.training.train import RunReport  # noqa: E402

# A record is its run (the command: one call may run several settings) and its measurement (wall_s),
# not the call: a later call on a still-warm machine returns the earlier call's finished records again.
KEY = ("task", "method", "schedule", "command", "wall_s")
CUT_KEY = ("device_call", "command", "stage")
EVAL_KEY = ("device_call", "variant", "command", "runs_on")  # bitbert evaluate results (gpu_probe's evals.jsonl)


def cut_runs(root: Path) -> list[dict]:
    """One entry per stage of each run under ``root`` that did not finish (so run_glue.py wrote no
    record of it): the run's ``run.json`` (written by run_glue.py) and the stage's report so far
    (``report.json`` once a stage finished, else the checkpoint's ``progress.json``)."""
    out = []
    for run_file in sorted(root.rglob("run.json")):
        run = json.loads(run_file.read_text())
        planned = Schedule.parse(run["schedule"]).stages
        reports = []  # (index, bits, report) of the stages that got as far as a checkpoint
        for i, bits in enumerate(planned):
            d = run_file.parent / stage_dir_name(i, bits)
            f = d / "report.json" if (d / "report.json").is_file() else d / "progress.json"
            if f.is_file():
                reports.append((i, bits, RunReport(**json.loads(f.read_text()))))
        if reports and reports[-1][0] == len(planned) - 1 and reports[-1][2].finished:
            continue  # the run ended: its records are in records.json
        metric = run["metric"]
        for i, bits, rep in reports:
            if not rep.history:
                continue  # cut before its first evaluation: nothing measured
            out.append({k: v for k, v in run.items() if k != "schedule"} | {
                "run_schedule": run["schedule"], "stage": i, "bits": bits,
                "steps_done": rep.steps, "steps_planned": rep.total_steps, "finished": rep.finished,
                "best_so_far": max(h[metric] for h in rep.history), "last_eval": rep.history[-1][metric],
                "dev_history": rep.history})
    return out


def merge(existing: list[dict], returned: list[dict], call: int, note: str,
          key_fields: tuple = KEY) -> tuple[list[dict], int]:
    """``existing`` plus the ``returned`` records not in it yet (by ``key_fields``), tagged with
    ``call`` and ``note``."""
    seen = {tuple(r.get(k) for k in key_fields) for r in existing}
    added = []
    for r in returned:
        r = {k: v for k, v in r.items() if k != "records_file"} | {"device_call": call, "note": note}
        key = tuple(r.get(k) for k in key_fields)
        if key not in seen:
            seen.add(key)
            added.append(r)
    return existing + added, len(added)


def _merge_into(into: Path, returned: list[dict], key: tuple, call: int, note: str) -> None:
    existing = json.loads(into.read_text()) if into.is_file() else []
    merged, n = merge(existing, returned, call, note, key)
    atomic_write(into, lambda p: p.write_text(json.dumps(merged, indent=1) + "\n"))
    print(f"{into}: {n} records added, {len(returned) - n} already there")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="*", help="records.json (or run_glue.py OUT/task.json) files")
    ap.add_argument("--cut", action="append", default=[], metavar="DIR",
                    help="a runs folder (unpacked runs.tgz): add its unfinished runs' stages to --cut-into")
    ap.add_argument("--cut-into", default=str(ROOT / "benchmarks" / "results" / "glue_cut_runs.json"))
    ap.add_argument("--evals", action="append", default=[], metavar="JSONL",
                    help="evals.jsonl (bitbert evaluate results, one JSON per line): add them to --evals-into")
    ap.add_argument("--evals-into", default=str(ROOT / "benchmarks" / "results" / "engine_accuracy.json"))
    ap.add_argument("--call", type=int, required=True, help="the device call's number")
    ap.add_argument("--note", required=True, help="machine, what ran, the exact gpu_glue.sh command")
    ap.add_argument("--into", default=str(ROOT / "benchmarks" / "results" / "glue_minilm.json"))
    args = ap.parse_args(argv)
    if not args.records and not args.cut and not args.evals:
        ap.error("give records.json files, --cut DIR or --evals JSONL")
    try:
        for d in args.cut:
            if not Path(d).is_dir():
                raise OSError(f"--cut {d}: not a directory")
        if args.records:
            returned = [r for f in args.records for r in json.loads(Path(f).read_text())]
            _merge_into(Path(args.into), returned, KEY, args.call, args.note)
        if args.evals:
            evals = [json.loads(line) for f in args.evals for line in Path(f).read_text().splitlines() if line.strip()]
            _merge_into(Path(args.evals_into), evals, EVAL_KEY, args.call, args.note)
        if args.cut:
            _merge_into(Path(args.cut_into), [r for d in args.cut for r in cut_runs(Path(d))], CUT_KEY,
                        args.call, args.note)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:  # TypeError: a report of unknown fields
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
