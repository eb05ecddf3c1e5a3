"""Install a packed SST-2 student as the shipped model and record what it measures.

    python benchmarks/record_shipped.py SHIP.bitbert --records RECORDS.json --note "..."   # a gpu_glue.sh run
    python benchmarks/record_shipped.py RUN/student.bitbert --run RUN --command "bitbert distill ..." --note "..."

Copies the file to ``bitbert/data/`` (`bitbert.deploy.shipped.SHIPPED_MODEL`), pins its SHA-256 in
``bitbert/deploy/shipped.py``, evaluates it on the bundled SST-2 dev set on the packed engine (``bitbert
evaluate``, the accuracy a user gets) and writes ``benchmarks/results/shipped_model.json``: that
evaluation, the file's size and digest, and the training record of the run it came from (the
``bit`` ``1-1-2,1-1-1`` SST-2 record of RECORDS.json, as gpu_glue.sh returns it; or a ``bitbert distill``
run folder's schedule.json with the command that made it and this machine's CPU).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitbert.deploy.packing import file_sha256  # noqa: E402
from bitbert.deploy.shipped import SHIPPED_MODEL  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "shipped_model.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("packed", type=Path)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--records", type=Path, help="records.json of the gpu_glue.sh run that trained it")
    src.add_argument("--run", type=Path, help="the bitbert distill --out folder that trained it (with --command)")
    ap.add_argument("--command", default=None, help="with --run: the command that made it")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    if args.records:
        training = [r for r in json.loads(args.records.read_text())
                    if r["task"] == "sst2" and r["method"] == "bit" and r["schedule"] == "1-1-2,1-1-1"]
        if not training:
            raise SystemExit(f"{args.records}: no bit 1-1-2,1-1-1 SST-2 record")
    else:
        if not args.command:
            raise SystemExit("--run needs --command (what made the run)")
        from bitbert.deploy.peak import cpu_name

        training = [{**json.loads((args.run / "schedule.json").read_text()), "command": args.command,
                     "hardware": cpu_name()}]
    digest = file_sha256(args.packed)
    shutil.copyfile(args.packed, SHIPPED_MODEL)
    src = ROOT / "bitbert" / "deploy" / "shipped.py"
    src.write_text(re.sub(r'SHIPPED_SHA256 = "[0-9a-f]*"', f'SHIPPED_SHA256 = "{digest}"', src.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "bitbert.cli", "evaluate", "--threads", "1", "--out", f"{tmp}/eval.json"],
                       check=True, cwd=ROOT)
        evaluation = json.loads(Path(tmp, "eval.json").read_text())
    evaluation["command"] = "bitbert evaluate --threads 1"  # no model: the shipped one on the bundled dev set
    evaluation["model"] = str(SHIPPED_MODEL.relative_to(ROOT))  # not this checkout's absolute path
    record = {"what": "the shipped 1-bit SST-2 model (bitbert/data): bit 1-1-2 -> 1-1-1 student of MiniLM-L6, "
                      "dev accuracy on the packed engine", "file": str(SHIPPED_MODEL.relative_to(ROOT)),
              "bytes": SHIPPED_MODEL.stat().st_size, "sha256": digest, "evaluation": evaluation,
              "training": training[-1], "note": args.note}
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"accuracy": evaluation["metrics"], "bytes": record["bytes"], "sha256": digest}))


if __name__ == "__main__":
    main()
