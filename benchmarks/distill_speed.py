"""Training throughput of a W1A1 BiT distillation step (teacher forward + student forward/backward +
optimizer step), examples/s, on SST-2-length batches (bucketed, max length 64).

    python benchmarks/distill_speed.py --model DIR --data-dir GLUE/SST-2 --out speed.json
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time

import torch

import bitbert
from bitbert.pipeline import load_classifier, load_task_data
from bitbert.training.distill import DistillLoss, method_losses
from bitbert.training.train import TrainConfig, TrainStep, make_accelerator, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-sizes", default="32,64,128,256")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--method", default="bit")
    ap.add_argument("--compile", default="off", help="comma list of on/off to measure")
    ap.add_argument("--graphs", default="on,off", help="CUDA-graph replay of fwd+bwd: comma list of on/off")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = __import__("transformers").AutoTokenizer.from_pretrained(args.model)
    data = load_task_data("sst2", tok, 64, data_dir=args.data_dir)
    teacher = load_classifier(args.model, data.spec).to(dev).eval()
    results = []
    modes = [(c == "on", g == "on") for c in args.compile.split(",") for g in args.graphs.split(",")
             if not (c == "on" and g == "on")]
    for (compiled, graphed), bs in [(m, int(b)) for m in modes for b in args.batch_sizes.split(",")]:
        student = bitbert.binarize(copy.deepcopy(teacher), bitbert.QuantConfig.from_preset(args.method, "1-1-1")).train()
        for p in student.parameters():
            p.requires_grad_(True)
        bitbert.calibrate(student, [{k: v.to(dev) for k, v in b.items()} for b in data.calibration_batches(bs, 2)])
        loss_fn = DistillLoss(teacher, data.spec, method_losses(args.method), compile=compiled)
        cfg = TrainConfig(compile="on" if compiled else "off", cuda_graphs="on" if graphed else "off")
        acc = make_accelerator(cfg)
        step_fn = TrainStep(student, loss_fn, make_optimizer(student, cfg), acc, cfg)
        it = iter(data.train_batches(bs, 0, dev.type == "cuda"))
        seen, t0 = 0, None
        warm = 15 if not graphed else 60  # compilation / first captures of each batch shape excluded
        for step in range(args.steps + warm):
            if step == warm:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0, seen = time.perf_counter(), 0
            batch = next(it)
            step_fn(batch)
            seen += batch["input_ids"].shape[0]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        g = step_fn.graphed
        results.append({"compiled": compiled, "cuda_graphs": g is not None,
                        "graphs_captured": len(g.graphs) if g else 0, "batch_size": bs, "examples_per_s": seen / dt, "steps": args.steps, "wall_s": dt})
        print(results[-1], flush=True)
        write(args, results)


def write(args, results) -> None:
    record = {"what": f"W1A1 {args.method} distillation step (teacher fwd + student fwd/bwd + AdamW), SST-2, "
                      "max length 64, bucketed batches, bf16 autocast on GPU, grad clipping",
              "hardware": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "results": results}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
