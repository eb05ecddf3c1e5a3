"""The packed engine, ONNX Runtime int8 dynamic and PyTorch FP32 on 1 thread, timed in turns.

`bitbert bench` times each runtime in a block of its own, so on a shared machine a change of load
between the blocks moves the ratios. Here every round calls each runtime once, one after the other,
and the ratios are of the medians over rounds: a load that comes and goes hits all of them alike.
Random weights (speed does not depend on them), BiT 1-1-1, sequence 128.

    python benchmarks/interleaved_runtimes.py --out benchmarks/results/bench_cpu_interleaved.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitbert.deploy.bench import SHAPES, export_random_bit, random_classifier  # noqa: E402
from bitbert.deploy.engine import load_packed  # noqa: E402
from bitbert.deploy.ort_baseline import export_onnx, session  # noqa: E402
from bitbert.deploy.peak import cpu_name  # noqa: E402


def measure(shape: str, batch: int, rounds: int, seq_len: int, with_fp32: bool) -> dict:
    import numba
    import torch

    # numba's OpenMP layer and PyTorch share the OpenMP runtime: both at 1 thread, or the engine's
    # restoring numba's setting after each call would hand PyTorch two spinning threads on a busy machine
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    fp32 = random_classifier(shape)
    with tempfile.TemporaryDirectory() as tmp:
        engine = load_packed(export_random_bit(fp32, Path(tmp) / "m.bitbert", seq_len), threads=1)
        ort_int8 = session(export_onnx(fp32, tmp, seq_len)["int8"], 1)
    ids = np.random.default_rng(0).integers(1, engine.vocab_size, (batch, seq_len))
    feed = {"input_ids": ids.astype(np.int64)}
    tids = torch.from_numpy(ids)
    calls = {"engine": lambda: engine.logits(ids), "ort_int8": lambda: ort_int8.run(None, feed)}
    if with_fp32:
        calls["fp32"] = lambda: fp32(input_ids=tids)
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for fn in calls.values():  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"shape": shape, "batch": batch, "seq_len": seq_len, "threads": 1, "rounds": rounds,
            "median_s": med, "times_s": times,
            "engine_vs": {k: med[k] / med["engine"] for k in med if k != "engine"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["bert-base", "minilm-l6"], choices=list(SHAPES))
    ap.add_argument("--rounds", type=int, default=15, help="rounds at batch 1 (batch 32: a quarter, at least 3)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    start, load_before = time.time(), os.getloadavg()
    rows = []
    for shape in args.shapes:
        for batch in (1, 32):  # PyTorch FP32 at batch 32 takes seconds a call: batch 1 only
            rows.append(measure(shape, batch, args.rounds if batch == 1 else max(3, args.rounds // 4), args.seq_len,
                                with_fp32=batch == 1))
            r = rows[-1]
            print(f"{shape} batch {batch}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in r["median_s"].items())
                  + "; engine " + ", ".join(f"{v:.2f}x {k}" for k, v in r["engine_vs"].items()), flush=True)
    script = Path(sys.argv[0]).resolve()
    record = {"command": "python " + " ".join([str(script.relative_to(ROOT)), *sys.argv[1:]]),
              "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(), "shared": True},
              "threads": 1, "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "wall_s": time.time() - start, "results": rows}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
