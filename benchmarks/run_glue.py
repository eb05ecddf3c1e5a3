"""GLUE results for issue 3: FP teacher, baseline / BiBERT / BiT students on one task.

    python benchmarks/run_glue.py --task mrpc --model DIR --data-dir GLUE/MRPC --out runs/glue \
        --epochs 10 --batch-size 32 [--resume]

Fine-tunes the teacher with `finetune`, then runs each (method, schedule) with `run_schedule` and
writes one JSON record per (task, method, schedule) to ``OUT/{task}.json``. Resumable: finished
runs are read back, an interrupted one continues from its checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import bitbert
from bitbert.core.atomic import atomic_write
from bitbert.core.config import ALPHA_INITS, AugmentConfig, ConfigError, parse_quant_overrides
from bitbert.pipeline import load_task_data, make_evaluator, paper_defaults
from bitbert.quant.schedule import QuantInit, task_overrides
from bitbert.training.augmented import file_record
from bitbert.training.distill import method_losses, run_schedule, stage_configs
from bitbert.training.finetune import finetune
from bitbert.training.task_data import run_identity
from bitbert.training.train import TrainConfig, check_same_run, finished_report, run_settings

RUNS = [("bit", "1-1-2,1-1-1"), ("baseline", "1-1-1"), ("bibert", "1-1-1"), ("bit", "1-1-1"), ("bit", "1-1-4")]


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"CPU {platform.processor() or platform.machine()}"


def parse_run(text: str) -> tuple[str, str]:
    method, sep, schedule = text.strip().partition(":")
    if not sep or not schedule:
        raise SystemExit(f"--runs: {text!r} is not method:schedule (e.g. bit:1-1-2,1-1-1)")
    return method, schedule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=float, required=True, help="distillation epochs per stage")
    ap.add_argument("--teacher-epochs", type=float, default=3)
    ap.add_argument("--teacher-lr", type=float, default=5e-5, help="the teacher's fine-tuning lr (BERT's recipe)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="distillation lr (default: the paper's for the task)")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-steps", type=int, default=0, help="per run; for smoke tests")
    ap.add_argument("--max-train-examples", type=int, default=0)
    ap.add_argument("--runs", default="all", help="';'-separated method:schedule, e.g. 'bit:1-1-2,1-1-1;baseline:1-1-1', or all")
    ap.add_argument("--loss", default=None, help="loss-weight overrides for every run (bitbert distill --loss)")
    ap.add_argument("--alpha-init", default=None, choices=ALPHA_INITS, help="QuantInit.alpha_init for every run")
    ap.add_argument("--inherit-quantizers", action="store_true", help="QuantInit.inherit_quantizers for every run")
    ap.add_argument("--quant", default=None, help="QuantConfig overrides for every run (bitbert distill --quant)")
    ap.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16"],
                    help="the students' training precision (TrainConfig.mixed_precision; auto: bf16 on GPU)")
    ap.add_argument("--augment", type=int, default=0, help="augmented copies per example for every run (bitbert distill --augment)")
    ap.add_argument("--augmented-file", default=None,
                    help="train on this file of `bitbert augment` (originals + copies) for every run")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    wanted = RUNS if args.runs == "all" else [parse_run(r) for r in args.runs.split(";") if r.strip()]
    try:  # a bad --loss or --quant fails before any training
        method_losses("bit").with_overrides(args.loss)
        quant = parse_quant_overrides(args.quant)
        quant_init = QuantInit(args.alpha_init or "optimal", args.inherit_quantizers)
        for method, schedule in wanted:
            stage_configs(method, schedule, quant)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.out) / args.task
    tok = __import__("transformers").AutoTokenizer.from_pretrained(args.model)
    d = paper_defaults(args.task)
    data = load_task_data(args.task, tok, d["max_length"], data_dir=args.data_dir,
                          max_train_examples=args.max_train_examples)
    # the teacher learns from the originals; the students from the augmented file (copies labelled by the teacher)
    student_data = data if not args.augmented_file else load_task_data(
        args.task, tok, d["max_length"], data_dir=args.data_dir, augmented_file=args.augmented_file)
    key = data.spec.main_key
    records_path = Path(args.out) / f"{args.task}.json"
    records = json.loads(records_path.read_text()) if records_path.is_file() and args.resume else []
    done = {(r["method"], r["schedule"]) for r in records}

    # 1. full-precision teacher
    tcfg = TrainConfig(epochs=args.teacher_epochs, lr=args.teacher_lr, batch_size=32, max_length=d["max_length"],
                       seed=args.seed, eval_every=args.eval_every)
    t0 = time.perf_counter()
    finished_report(out / "teacher", run_settings(tcfg, run_identity(data)))  # one made otherwise raises
    if not (out / "teacher" / "model" / "config.json").is_file():
        from bitbert.pipeline import load_classifier

        report = finetune(load_classifier(args.model, data.spec), data, tcfg, out / "teacher", tokenizer=tok,
                          resume=args.resume)
        if ("fp", "32-32-32") not in done:
            records.append({"task": data.spec.name, "method": "fp", "schedule": "32-32-32", "bits": "32-32-32",
                            "metric": key, "best": report.best[key], "final": report.final[key],
                            "teacher_metric": report.final[key], "epochs": args.teacher_epochs, "seed": args.seed,
                            "lr": tcfg.lr, "batch_size": 32, "max_length": d["max_length"],
                            "examples_per_s": report.examples_per_s, "command": command, "hardware": hardware(), "cuda_graphs": tcfg.cuda_graphs,
                            "wall_s": time.perf_counter() - t0, "dev_history": report.history})
    teacher = bitbert.load(out / "teacher" / "model")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    evaluate_fp32 = make_evaluator(data, 256)  # no autocast: the precision an exported model runs in
    teacher_metric = evaluate_fp32(teacher.to(device))[key]

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr or d["lr"], batch_size=args.batch_size,
                      max_length=d["max_length"], seed=args.seed, eval_every=args.eval_every,
                      max_steps=args.max_steps, mixed_precision=args.mixed_precision)
    now = {"seed": args.seed, "epochs": args.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size}
    for r in records:  # done runs are skipped below: they must have been made with these settings
        if r["method"] != "fp":
            check_same_run({k: r.get(k) for k in now}, now, records_path)
    augment = AugmentConfig(args.augment, seed=args.seed)
    if augment.copies and args.augmented_file:
        raise SystemExit("error: --augment makes copies in memory, --augmented-file brings them from a file: give one")
    augmented_file = file_record(args.augmented_file) if args.augmented_file else None
    for method, schedule in wanted:
        if (method, schedule) in done:
            continue
        run_dir = out / f"{method}-{schedule.replace(',', '_')}"
        losses = method_losses(method).with_overrides(args.loss)
        run = {"task": data.spec.name, "method": method, "schedule": schedule, "metric": key, "seed": args.seed,
               "batch_size": cfg.batch_size, "lr": cfg.lr, "epochs": args.epochs, "teacher_metric": teacher_metric,
               "teacher_epochs": args.teacher_epochs, "teacher_lr": tcfg.lr, "alpha_init": args.alpha_init or "optimal",
               "inherit_quantizers": args.inherit_quantizers, "mixed_precision": args.mixed_precision,
               "quant_overrides": json.loads(json.dumps(quant)) or None,
               "augment": dataclasses.asdict(augment) if augment.copies else None,
               "augmented_file": augmented_file,  # the file, its rows and augmentation/candidate settings
               "command": command, "hardware": hardware()}  # in every record of the run, and in run.json
        run_dir.mkdir(parents=True, exist_ok=True)  # what merge_results.py --cut needs of a run cut short
        atomic_write(run_dir / "run.json", lambda p: p.write_text(json.dumps(run, indent=2)))
        result = run_schedule(teacher, student_data, method, schedule, cfg, run_dir, tokenizer=tok, losses=losses,
                              quant_overrides=quant, resume=args.resume, augment=augment,
                              augmented_file=augmented_file, quant_init=quant_init)
        if not result.stages[-1].report.finished:
            print(f"{method} {schedule}: stopped at max-steps; rerun with --resume", flush=True)
            continue
        # what each stage ran at, the task's defaults included (a pair task's wider first layers)
        precisions = [c.label for c in stage_configs(method, schedule, task_overrides(data.spec.is_pair, quant))]
        for i, stage in enumerate(result.stages):
            sched = ",".join(s.bits for s in result.stages[: i + 1])
            rec_key = (method, sched)
            if rec_key in done or stage.report is None:
                continue
            records.append(run | {"schedule": sched, "bits": stage.bits, "precision": precisions[i],
                                  "best": stage.report.best[key], "final": stage.report.final[key],
                                  "quant_lr": cfg.quant_lr, "losses": dataclasses.asdict(losses),
                                  "max_length": cfg.max_length, "examples_per_s": stage.report.examples_per_s,
                                  "cuda_graphs": cfg.cuda_graphs,
                                  "wall_s": stage.report.wall_s,  # training time, summed over resumed segments
                                  # the hand-over model again in fp32 (the engine's precision): the trainer's evaluations
                                  # run in the training precision (bf16 autocast on GPU)
                                  "final_fp32": evaluate_fp32(bitbert.load(stage.model_dir).to(device))[key],
                                  "dev_history": stage.report.history})  # every evaluation: what best/final come from
            done.add(rec_key)
        atomic_write(records_path, lambda p: p.write_text(json.dumps(records, indent=2)))
        print(json.dumps(records[-1]), flush=True)
    atomic_write(records_path, lambda p: p.write_text(json.dumps(records, indent=2)))


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:  # e.g. --resume into a run made with other settings
        raise SystemExit(f"error: {e}") from None
