"""Issue 5 results: BiPFT binary pretraining of MiniLM-L6, then GLUE fine-tuning without distillation.

Three subcommands; `benchmarks/gpu_bipft.sh` runs them in parallel processes under timeouts.

    # pretrain BiPFT-A (residual rank 0) or BiPFT-B (rank 1): R/{variant}/pretrain/
    python benchmarks/run_bipft.py pretrain --variant bipft-b --model M --corpus C --runs R \
        --max-tokens 20000000 --max-seconds 170 --batch-size 128
    # fine-tune a variant on a task without a teacher: R/{variant}/{task}/ (no-pretrain: the same
    # 1-1-1 student binarized straight from M)
    python benchmarks/run_bipft.py finetune --variant bipft-b --task mrpc --data-dir GLUE/MRPC --model M --runs R --epochs 5
    # a model for two-text tasks: --early-layers 2 on pretrain (use its own R; gpu_bipft.sh: PT_EXTRA=...)
    # scaling: the same pretraining on 1 and on N processes, fixed steps: R/scaling-{N}gpu/
    accelerate launch --num_processes 2 benchmarks/run_bipft.py pretrain --variant scaling --max-steps 400 ...
    # every run so far as records (a fine-tuning run cut short by a timeout gives its evaluations so far)
    python benchmarks/run_bipft.py collect --runs R --to bipft_minilm.json

Fine-tuning uses BiPFT's single setting (lr 2e-5 constant, batch 32, seq 128) with the epochs given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

VARIANTS = {"no-pretrain": 0, "bipft-a": 0, "bipft-b": 1}  # variant: residual rank
BIPFT_FINETUNE = dict(lr=2e-5, batch_size=32, max_length=128, schedule="constant", warmup_ratio=0.0)


def command() -> str:
    """This process's command line; under ``accelerate launch`` with the launcher in front."""
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"accelerate launch --num_processes {world} " + cmd[len("python "):] if world > 1 else cmd


def hardware() -> str:
    from run_glue import hardware as glue_hardware  # same wording as the issue-3 results

    return glue_hardware()


def write_json(path: Path, data) -> None:
    from bitbert.core.atomic import atomic_write

    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2)))


# --------------------------------------------------------------------------- pretrain
def cmd_pretrain(args) -> None:
    from bitbert.training.pretraining import PretrainConfig, pretrain

    rank = VARIANTS.get(args.variant, 1) if args.residual_rank is None else args.residual_rank
    changes = {k: v for k, v in dict(residual_rank=rank, batch_size=args.batch_size, seq_len=args.seq_len,
                                     max_tokens=args.max_tokens, max_steps=args.max_steps,
                                     max_seconds=args.max_seconds, eval_every=args.eval_every,
                                     holdout_every=args.holdout_every, heldout_sequences=args.heldout_sequences,
                                     log_every=args.log_every, compile=args.compile,
                                     num_workers=args.num_workers, early_layers=args.early_layers,
                                     early_act_bits=args.early_act_bits).items() if v is not None}
    cfg = dataclasses.replace(PretrainConfig(), **changes)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    out = Path(args.runs) / (f"scaling-{world}gpu" if args.variant == "scaling" else args.variant) / "pretrain"
    t0 = time.perf_counter()
    report = pretrain(args.model, args.corpus, out, cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(out / "run.json", {"variant": args.variant, "residual_rank": rank, "gpus": world,
                                      "command": command(), "hardware": hardware(),
                                      "wall_s": time.perf_counter() - t0})
        print(json.dumps({k: report[k] for k in ("stopped_by", "steps", "tokens_seen", "tokens_per_s", "final")}))


# --------------------------------------------------------------------------- finetune
def cmd_finetune(args) -> None:
    import bitbert
    from bitbert.pipeline import load_classifier, load_task_data
    from bitbert.training.finetune import finetune
    from bitbert.training.pretraining import PretrainConfig
    from bitbert.training.train import TrainConfig
    from transformers import AutoTokenizer

    runs = Path(args.runs)
    pretrained = runs / args.variant / "pretrain"
    source = args.model if args.variant == "no-pretrain" else str(pretrained / "model")
    tok = AutoTokenizer.from_pretrained(source)
    data = load_task_data(args.task, tok, BIPFT_FINETUNE["max_length"], data_dir=args.data_dir,
                          max_train_examples=args.max_train_examples)
    model = load_classifier(source, data.spec)
    if args.variant == "no-pretrain":  # the BiPFT student, binarized from the FP model, not pretrained
        bitbert.binarize(model, PretrainConfig(residual_rank=VARIANTS["no-pretrain"]).quant_config())
        pretrain_tokens = 0
    else:
        pretrain_tokens = json.loads((pretrained / "report.json").read_text())["tokens_seen"]
    cfg = TrainConfig(epochs=args.epochs, eval_every=args.eval_every, seed=args.seed, max_steps=args.max_steps,
                      **BIPFT_FINETUNE)
    out = runs / args.variant / data.spec.name
    run = {"variant": args.variant, "task": data.spec.name, "metric": data.spec.main_key,
           "pretrain_tokens": pretrain_tokens, "residual_rank": model.bitbert_config.residual_rank,
           "epochs": args.epochs, **BIPFT_FINETUNE, "command": command(), "hardware": hardware()}
    write_json(out / "run.json", run)  # lets `collect` report a run that a timeout cuts short
    t0 = time.perf_counter()
    report = finetune(model, data, cfg, out, tokenizer=tok)
    key = data.spec.main_key
    record = {**run, "best": report.best and report.best[key], "final": report.final and report.final[key],
              "finished": report.finished,
              "steps": report.steps, "wall_s": time.perf_counter() - t0}
    write_json(out / "record.json", record)
    print(json.dumps(record))


# --------------------------------------------------------------------------- collect
def finetune_record(run_dir: Path) -> dict | None:
    """The run's record; for an unfinished run, its evaluations so far from metrics.jsonl."""
    if (run_dir / "record.json").is_file():
        return json.loads((run_dir / "record.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    evals = []
    if (run_dir / "metrics.jsonl").is_file():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if f"eval/{run['metric']}" in row:
                evals.append((row["step"], row[f"eval/{run['metric']}"]))
    if not evals:
        return {**run, "best": None, "final": None, "finished": False, "steps": 0, "wall_s": None}
    return {**run, "best": max(v for _, v in evals), "final": evals[-1][1], "finished": False,
            "steps": evals[-1][0], "wall_s": None}


def scaling_record(pre_dir: Path) -> dict:
    report = json.loads((pre_dir / "report.json").read_text())
    run = json.loads((pre_dir / "run.json").read_text())
    return {"variant": "scaling", "gpus": report["world_size"], "tokens_per_s": report["tokens_per_s"],
            "tokens_per_s_with_startup": report["tokens_per_s_with_startup"], "steps": report["steps"],
            "tokens_seen": report["tokens_seen"], "batch_size_per_gpu": report["config"]["batch_size"],
            "seq_len": report["config"]["seq_len"], "loss_curve": report["train_loss"],
            "heldout_curve": [{k: h[k] for k in ("step", "tokens", "mlm_loss", "mlm_accuracy") if k in h}
                              for h in report["heldout"]],
            "command": run["command"], "hardware": run["hardware"], "wall_s": run["wall_s"]}


def pretrain_summary(pre_dir: Path) -> dict:
    """What the fine-tuning records of a pretrained variant add about its pretraining."""
    report = json.loads((pre_dir / "report.json").read_text())
    run = json.loads((pre_dir / "run.json").read_text()) if (pre_dir / "run.json").is_file() else {}
    final = report.get("final") or {}
    return {"pretrain_stopped_by": report.get("stopped_by"), "pretrain_tokens_per_s": report.get("tokens_per_s"),
            "pretrain_heldout_mlm_accuracy": final.get("mlm_accuracy"),
            "pretrain_heldout_mlm_loss": final.get("mlm_loss"), "pretrain_command": run.get("command"),
            "pretrain_wall_s": run.get("wall_s")}


def cmd_collect(args) -> None:
    runs = Path(args.runs)
    records = []
    for variant in VARIANTS:
        pre = runs / variant / "pretrain"
        extra = pretrain_summary(pre) if (pre / "report.json").is_file() else {}
        for run_json in sorted(runs.glob(f"{variant}/*/run.json")):
            if run_json.parent.name != "pretrain":
                rec = finetune_record(run_json.parent)
                records.append({**rec, **extra} if variant != "no-pretrain" else rec)
    for pre in sorted(runs.glob("scaling-*gpu/pretrain")):
        if (pre / "report.json").is_file() and (pre / "run.json").is_file():
            records.append(scaling_record(pre))
    write_json(Path(args.to), records)
    for r in records:
        if r["variant"] == "scaling":
            print(f"scaling {r['gpus']} GPU(s): {r['tokens_per_s']:.0f} tokens/s over {r['steps']} steps")
        else:
            print(f"{r['variant']:12s} {r['task']:5s} {r['metric']} best {r['best']} final {r['final']} "
                  f"(finished {r['finished']}, pretrain tokens {r['pretrain_tokens']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pretrain")
    p.add_argument("--variant", required=True, choices=["bipft-a", "bipft-b", "scaling"])
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True, nargs="+")
    p.add_argument("--runs", required=True)
    p.add_argument("--residual-rank", type=int, default=None, help="default: 0 for bipft-a, 1 for bipft-b/scaling")
    for flag, typ in (("--batch-size", int), ("--seq-len", int), ("--max-tokens", int), ("--max-steps", int),
                      ("--max-seconds", float), ("--eval-every", int), ("--holdout-every", int),
                      ("--heldout-sequences", int), ("--log-every", int), ("--num-workers", int), ("--compile", str),
                      ("--early-layers", int), ("--early-act-bits", int)):  # early: the pair tasks' wider first layers
        p.add_argument(flag, type=typ, default=None, help="PretrainConfig field (default: its default)")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(fn=cmd_pretrain)
    f = sub.add_parser("finetune")
    f.add_argument("--variant", required=True, choices=list(VARIANTS))
    f.add_argument("--task", required=True)
    f.add_argument("--data-dir", required=True)
    f.add_argument("--model", required=True, help="the full-precision MiniLM (no-pretrain's starting point)")
    f.add_argument("--runs", required=True)
    f.add_argument("--epochs", type=float, required=True)
    f.add_argument("--eval-every", type=int, default=0)
    f.add_argument("--seed", type=int, default=42)
    f.add_argument("--max-steps", type=int, default=0, help="smoke tests")
    f.add_argument("--max-train-examples", type=int, default=0, help="smoke tests")
    f.set_defaults(fn=cmd_finetune)
    c = sub.add_parser("collect")
    c.add_argument("--runs", required=True)
    c.add_argument("--to", required=True)
    c.set_defaults(fn=cmd_collect)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    args.fn(args)


if __name__ == "__main__":
    main()
