"""Gather the record files of a device call's run_glue.py processes into one records.json for $OUT
(each record tagged with the file it came from; missing files, e.g. a run not finished yet, are
skipped). Written atomically: the GPU scripts refresh it while runs are still going.

    python benchmarks/collect_records.py OUT/records.json RUNS/*.json [--print]
"""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    show = "--print" in argv
    out, *files = [a for a in argv if a != "--print"]
    recs = [dict(r, records_file=f) for f in files if os.path.isfile(f) for r in json.load(open(f))]
    with open(out + ".tmp", "w") as fh:
        json.dump(recs, fh, indent=1)
    os.replace(out + ".tmp", out)
    if show:
        print([(r["records_file"], r["method"], r["schedule"], round(r["best"], 1), round(r["final"], 1)) for r in recs])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
