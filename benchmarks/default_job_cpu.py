"""Time the default job (`bitbert distill` with no teacher) on this machine's CPU and append its
record to benchmarks/results/default_job_cpu.json (the README's wall time and the table in
docs/results/default_job.md come from there, via benchmarks/tables.py):

    OMP_NUM_THREADS=1 python benchmarks/default_job_cpu.py --out /tmp/dj/run [-- distill options]

Options after ``--`` go to `bitbert distill` (e.g. ``-- --max-train-examples 2000 --schedule
1-1-2,1-1-1`` to time another recipe). The record holds the run's wall time per phase as the job
prints it, the process's CPU time (on one thread, about the wall time on an idle core), the load
average around the run (other processes on a shared machine slow the wall time down), the teacher's
and the student's dev accuracy (best and final) and the exact command.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bitbert.deploy.peak import cpu_name  # noqa: E402
from bitbert.training.default_job import DEFAULT_JOB  # noqa: E402

RECORDS = ROOT / "benchmarks" / "results" / "default_job_cpu.json"
TIME_LINE = re.compile(r"^time: (\d+) min (\d+) s \((.*)\)$", re.M)


def phases(stdout: str) -> dict[str, float]:
    """The job's own ``time:`` line as {phase: seconds}, with ``total``."""
    m = TIME_LINE.search(stdout)
    if m is None:
        raise SystemExit("the job printed no time line: did it finish?\n" + stdout[-2000:])
    spans = {name: float(s) for name, s in (part.rsplit(" ", 2)[:2] for part in m.group(3).split(", "))}
    return {**spans, "total": int(m.group(1)) * 60 + float(m.group(2))}


def stage_record(report_path: Path) -> dict:
    r = json.loads(report_path.read_text())
    key = r["main_metric"]
    cfg = r["config"]
    return {"best": r["best"][key], "best_step": r["best"]["step"], "final": r["final"][key], "steps": r["steps"],
            "epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"], "max_length": cfg["max_length"],
            "seed": cfg["seed"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder (replaced)")
    p.add_argument("--note", default="", help="what this row tries")
    p.add_argument("extra", nargs="*", help="options for bitbert distill, after --")
    args = p.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    cmd = [sys.executable, "-m", "bitbert.cli", "distill", "--out", args.out, "--overwrite", *args.extra]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    out = Path(args.out)
    schedule = json.loads((out / "schedule.json").read_text())
    stages = {s["bits"]: stage_record(out / f"stage{i}-{s['bits']}" / "report.json")
              for i, s in enumerate(schedule["stages"]) if not s.get("skipped")}
    teacher = stage_record(out / "teacher" / "report.json")
    last = stages[schedule["schedule"][-1]]
    load = max(load_before[0], load_after[0])
    record = {
        "note": args.note, "method": schedule["method"], "schedule": ",".join(schedule["schedule"]),
        "train_examples": _flag(args.extra, "--max-train-examples") or DEFAULT_JOB.train_examples, "teacher": teacher, "stages": stages,
        "best": last["best"], "final": last["final"], "seed": last["seed"],
        "wall_s": {**phases(proc.stdout), "process": round(wall, 1)},
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "threads": threads,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "shared_machine": load > threads + 0.5,  # more runnable processes than this run's threads
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "command": f"OMP_NUM_THREADS={threads} " + " ".join(shlex.quote(c) for c in ["bitbert", *cmd[3:]]),
        "date": time.strftime("%Y-%m-%d"),
    }
    records = json.loads(RECORDS.read_text()) if RECORDS.is_file() else []
    RECORDS.write_text(json.dumps(records + [record], indent=1) + "\n")
    print(json.dumps(record, indent=1))


def _flag(extra: list[str], flag: str) -> int | None:
    """A --flag's integer value among the distill options, or None (not given)."""
    return int(extra[extra.index(flag) + 1]) if flag in extra else None


if __name__ == "__main__":
    main()
