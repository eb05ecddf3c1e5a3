"""Regenerate every results table (README's headline, docs/results/*.md) and the plots in
docs/plots/ from benchmarks/results/*.json (run after adding results):

    python benchmarks/tables.py

Each table sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in its page (`PAGES`);
the prose around it is written by hand. The plots need matplotlib (``pip install -e ".[plots]"``).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # plots.py
from bitbert.core.config import parse_bits  # noqa: E402
from bitbert.quant.schedule import Schedule  # noqa: E402
from bitbert.tasks.specs import GLUE_TASKS  # noqa: E402
from bitbert.training.default_job import DEFAULT_JOB  # noqa: E402
from bitbert.training.recipes import paper_defaults  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METHOD_ORDER = {"fp": 0, "baseline": 1, "bibert": 2, "bit": 3}
# bibert records without "losses" were trained with the earlier loss (squared DMD, hidden-state MSE,
# no ground truth); later records carry their loss weights there.
EARLIER_BIBERT = " ‡"


def _quant_probe(r: dict) -> str:
    """The flag of a run with non-default quantizer options, loss weights, augmentation or fp32 training, read from its command
    (which a teacher-only record shares with its students), or ""."""
    if (loss := _arg(r["command"], "--loss", "")):
        return f" (loss {loss})"
    if (quant := _arg(r["command"], "--quant", "")):
        return f" (quant {quant})"
    if (copies := _arg(r["command"], "--augment", 0)):
        return f" (augmented x{copies})"
    if _arg(r["command"], "--mixed-precision", "auto") == "no":
        return " (fp32 training)"
    if _arg(r["command"], "--alpha-init", "optimal") != "optimal":
        return " (wide α)"
    return " (inherited α, β)" if "--inherit-quantizers" in r["command"].split() else ""


def _mark(r: dict) -> str:
    """A record's flag in the tables (and a reason to leave it out of the comparisons)."""
    if r["method"] == "bibert" and "losses" not in r:
        return EARLIER_BIBERT
    return _quant_probe(r)


MAIN_BATCH = 32  # gpu_glue.sh's batch; the summary and the seeds table compare runs of one setting
MAIN_MODEL = "minilm-l6-h384-fp16"  # the teacher's base model in every compared setting
MAIN_TEACHER_LR = 5e-5  # run_glue.py's default


def _main_teacher_epochs(task: str) -> float:
    return 1.0 if task == "sst2" else 3.0  # gpu_glue.sh's defaults


def _arg(command: str, flag: str, default: float | str) -> float | str:
    """A flag's value in a record's run_glue.py command, typed like ``default`` (the record's own
    fields describe the student; the teacher's settings and the students' batch are in the command)."""
    words = command.split()  # the last occurrence wins, as in argparse (gpu_probe.sh appends overrides)
    return type(default)(words[len(words) - words[::-1].index(flag)]) if flag in words else default


def _setting(r: dict) -> str | None:
    """Which compared setting a record belongs to: "main" (batch 32, the task's paper lr, gpu_glue.sh's
    teacher), "paper batch" (BiT's per-task batch, same teacher), "10-epoch teacher" (batch 32 and
    the paper lr, a teacher fine-tuned 10 epochs), or None (a probe, listed only in the full table).
    A teacher record belongs to the setting of the students its command ran."""
    task, cmd = r["task"], r["command"]
    batch = int(_arg(cmd, "--batch-size", 32)) if r["method"] == "fp" else r["batch_size"]
    lr = _arg(cmd, "--lr", paper_defaults(task)["lr"]) if r["method"] == "fp" else r["lr"]
    t_epochs, t_lr = _arg(cmd, "--teacher-epochs", 3.0), _arg(cmd, "--teacher-lr", MAIN_TEACHER_LR)
    if (lr != paper_defaults(task)["lr"] or _quant_probe(r) or _partial(r.get("schedule", ""))
            or _model(r) != MAIN_MODEL):
        return None
    if t_epochs == _main_teacher_epochs(task) and t_lr == MAIN_TEACHER_LR:
        if batch == MAIN_BATCH:
            return "main"
        return "paper batch" if batch == paper_defaults(task)["batch_size"] else None
    return "10-epoch teacher" if t_epochs == 10 and batch == MAIN_BATCH else None


def _model(r: dict) -> str:
    """The base model a record's teacher was fine-tuned from (the folder name of ``--model``)."""
    return Path(str(_arg(r["command"], "--model", MAIN_MODEL))).name


def _partial(schedule: str) -> bool:
    """A schedule with a stage that keeps some of E-W-A in full precision (``1-1-32``, ``32-1-1``):
    an ablation of where the 1-bit gap comes from, not a method's result."""
    stages = Schedule.parse(schedule) if schedule else ()  # a record without one: not partial
    return any(32 in parse_bits(s) and s != "32-32-32" for s in stages)


# what an ablation keeps from the fully binary `bit` 1-1-1, by its one-stage schedule or --quant
GAP_SOURCES = {"1-1-2": "2-bit activations", "32-1-1": "word embeddings in full precision", "1-32-1": "linear weights in full precision",
               "1-1-32": "all activations in full precision (binary weights and embeddings only)",
               "binarize_pooler=false": "pooler in full precision",
               "attention_probs=softmax": "attention probabilities in full precision",
               "binarize_qkv=false": "Q, K, V in full precision",
               "binarize_qkv=false,attention_probs=softmax": "Q, K, V and attention probabilities in full precision",
               "ffn2_input=signed": "FFN2 input binarized to ±1 instead of {0, 1}",
               "early_layers=2,early_act_bits=4": "first two layers at 4-bit activations (the pair tasks' default)",
               "early_layers=2,early_act_bits=32": "first two layers' activations in full precision"}


def gap_sources_table() -> str:
    """The calls that ran ablations (partial-precision schedules or --quant overrides): each run's
    best / final per seed, beside the fully binary reference of the same calls, and the mean gap
    of best-on-dev to each record's own teacher."""
    recs = [r for r in _load("glue_minilm.json") or [] if r["method"] == "bit"]
    calls = {r.get("device_call") for r in recs if _partial(r["schedule"]) or _arg(r["command"], "--quant", "")}
    recs = [r for r in recs if r.get("device_call") in calls]
    if not recs:
        return "_no ablation results yet_"
    newest: dict[tuple, dict] = {}  # (task, model, epochs, schedule, quant) -> seed -> record; a later call wins
    for r in sorted(recs, key=lambda r: r.get("device_call", 0)):
        quant = _arg(r["command"], "--quant", "")
        newest.setdefault((r["task"], _model(r), r["epochs"], r["schedule"], quant), {})[r["seed"]] = r
    seeds = sorted({r["seed"] for r in recs})
    rows = ["| task | run | schedule | --quant | epochs/stage | " + " | ".join(f"seed {s} (call)" for s in seeds)
            + " | mean best − teacher |", "|---|---|---|---|---|" + "---|" * len(seeds) + "---|"]
    for key in sorted(newest, key=lambda k: (k[0], k[1] != MAIN_MODEL, k[1], -k[2], "," in k[3],
                                             k[3] != "1-1-1" or bool(k[4]), k[3], k[4])):
        task, model, epochs, sched, quant = key
        got = newest[key]
        what = "fully binary (reference)" if sched == "1-1-1" and not quant else GAP_SOURCES.get(quant or sched, "")
        if "," in sched:
            what = "multi-distillation through " + " → ".join(Schedule.parse(sched))
        cells = [f"{got[s]['best']:.1f} / {got[s]['final']:.1f} ({got[s]['device_call']})" if s in got else "–"
                 for s in seeds]
        gap = sum(r["best"] - r["teacher_metric"] for r in got.values()) / len(got)
        task += "" if model == MAIN_MODEL else f", {model}"
        rows.append(f"| {task} ({got[min(got)]['metric']}) | {what} | {sched} | {quant} | {epochs:g} | " + " | ".join(cells) + f" | {gap:+.1f} |")
    return "\n".join(rows)


def _main_setting(r: dict) -> bool:
    """A teacher or student of the main setting (not an lr/batch/teacher probe)."""
    return _setting(r) == "main"


def _own_teachers(students: list[dict], teachers: list[dict], group) -> dict:
    """For each group (``group(record)``) of ``students``, the newest of ``teachers`` fine-tuned in a
    call where students of that group ran: their own teacher, not another call's."""
    calls = {(group(r), r.get("device_call")) for r in students}
    return {group(r): r for r in sorted(teachers, key=lambda r: r.get("device_call", 0))
            if (group(r), r.get("device_call")) in calls}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def glue_table() -> str:
    recs = _load("glue_minilm.json")
    if not recs:
        return "_no GLUE results yet_"
    # final fp32: the hand-over model re-evaluated without autocast (the engine's precision), where recorded
    rows = ["| call | task | method | schedule | best | final | final fp32 | teacher | epochs/stage | batch | lr | seed | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["task"], r.get("device_call", 0), METHOD_ORDER.get(r["method"], 9), r["schedule"])):
        rows.append(f"| {r.get('device_call', '')} | {r['task']} ({r['metric']}) | {r['method']}{_mark(r)} | {r['schedule']} | "
                    f"{r['best']:.1f} | {r['final']:.1f} | {_fmt(r.get('final_fp32'))} | {r['teacher_metric']:.1f} | {r['epochs']:g} | "
                    f"{r.get('batch_size', '')} | {r.get('lr', '')} | {r['seed']} | {r['wall_s']:.0f} |")
    return "\n".join(rows)


def summary_records() -> dict[tuple[str, str, str], dict]:
    """(task, method, schedule) -> its longest run in the main setting (most epochs a stage; the
    newest of those): what the summary table, the headline table and the accuracy plot show."""
    recs = [r for r in _load("glue_minilm.json") or [] if _main_setting(r)]
    # more epochs, then later calls replace the rest (a stable sort: within a call, the later record wins)
    return {(r["task"], r["method"], r["schedule"]): r
            for r in sorted(recs, key=lambda r: (r["epochs"], r.get("device_call", 0)))}


def glue_summary() -> str:
    """Each (task, method, schedule)'s longest run (most epochs a stage; the newest of those), tasks
    side by side: best-on-dev / final-step. A short exploratory call does not hide a full one."""
    newest = summary_records()
    recs = list(newest.values())
    if not recs:
        return "_no GLUE results yet_"
    tasks = sorted({r["task"] for r in recs})
    runs = sorted({(r["method"], r["schedule"]) for r in recs},
                  key=lambda m: (METHOD_ORDER.get(m[0], 9), m[1]))
    metric = {r["task"]: r["metric"] for r in recs}
    rows = ["| method | schedule | " + " | ".join(f"{t} ({metric[t]})" for t in tasks) + " |",
            "|---|---|" + "---|" * len(tasks)]
    for method, sched in runs:
        cells = []
        for t in tasks:
            r = newest.get((t, method, sched))
            seed = f", seed {r['seed']}" if r and r.get("seed", 42) != 42 else ""
            cells.append(f"{r['best']:.1f} / {r['final']:.1f} (call {r.get('device_call', '?')}, {r['epochs']:g} ep{seed}){_mark(r)}"
                         if r else "–")
        rows.append(f"| {method} | {sched} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def glue_seeds() -> str:
    """Tasks run with several seeds at one epoch count: best / final per seed, and their means.

    Per seed the newest record of each run counts; each seed has its own teacher, and bibert
    records trained with the earlier loss are left out.
    """
    recs = [r for r in (_load("glue_minilm.json") or []) if not _mark(r) and _main_setting(r)]
    out = []
    for task in sorted({r["task"] for r in recs}):
        students = [r for r in recs if r["task"] == task and r["method"] != "fp"]
        by_epochs: dict[float, set] = {}
        for r in students:
            by_epochs.setdefault(r["epochs"], set()).add(r["seed"])
        epochs, seeds = max(by_epochs.items(), key=lambda kv: (len(kv[1]), kv[0]))
        if len(seeds) < 2:
            continue
        seeds = sorted(seeds)
        students = [r for r in students if r["epochs"] == epochs]
        newest = {(r["method"], r["schedule"], r["seed"]): r for r in sorted(students, key=lambda r: r.get("device_call", 0))}
        teachers = [r for r in recs if r["task"] == task and r["method"] == "fp"]
        for seed, r in _own_teachers(students, teachers, lambda r: r["seed"]).items():
            newest[("fp", r["schedule"], seed)] = r
        runs = sorted({k[:2] for k in newest}, key=lambda m: (METHOD_ORDER.get(m[0], 9), m[1]))
        metric = students[0]["metric"]
        out += [f"{task} ({metric}), {epochs:g} epochs a stage (teacher: its own fine-tune per seed):", "",
                "| method | schedule | " + " | ".join(f"seed {s} (call)" for s in seeds) + " | mean best | mean final |",
                "|---|---|" + "---|" * (len(seeds) + 2)]
        for method, sched in runs:
            got = [newest.get((method, sched, s)) for s in seeds]
            cells = [f"{r['best']:.1f} / {r['final']:.1f} ({r.get('device_call', '?')})" if r else "–" for r in got]
            have = [r for r in got if r]
            means = ([f"{sum(r['best'] for r in have) / len(have):.1f}", f"{sum(r['final'] for r in have) / len(have):.1f}"]
                     if len(have) == len(seeds) else ["–", "–"])
            out.append(f"| {method} | {sched} | " + " | ".join(cells + means) + " |")
        out.append("")
    return "\n".join(out).rstrip() or "_no task has several seeds yet_"


SETTINGS = ("main", "paper batch", "10-epoch teacher")


def _precision(r: dict) -> str:
    """What a record's student ran at: its `QuantConfig.label` (recorded since the pair tasks' default
    of wider first layers; a record from before ran at its bits)."""
    return r.get("precision") or r.get("bits") or r["schedule"].split(",")[-1]


def _current_aug(r: dict) -> bool:
    """An augmented run under today's recipe: a pair's copy perturbs one text (TinyBERT's rule) and a
    pair task's student has its wider first layers (`bitbert.quant.schedule.PAIR_TASK_QUANT`)."""
    if (r.get("augmented_file") or {}).get("copy_rule") == "both texts":
        return False
    spec = GLUE_TASKS.get(r["task"])
    return not (spec and spec.is_pair) or r["method"] == "fp" or "layers A" in _precision(r)


def augmented_table() -> str:
    """Students trained on `bitbert augment` files (TinyBERT's recipe) beside the same run without
    augmentation (the summary's record of that task, method and schedule): best-on-dev / final-step."""
    recs = _load("glue_minilm_aug.json") or []
    if not recs:
        return "_no augmented runs yet_"
    plain = summary_records()
    rows = ["| task | method | schedule | precision | seed | augmented: best / final | without | teacher | copies N | a pair's copy perturbs | rows | epochs/stage | batch | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["task"], METHOD_ORDER.get(r["method"], 9), r["schedule"], _current_aug(r), r["seed"])):
        if r["method"] == "fp":
            continue
        f = r.get("augmented_file") or {}
        base = plain.get((r["task"], r["method"], r["schedule"]))
        without = f"{base['best']:.1f} / {base['final']:.1f}" if base else "–"
        rows.append(f"| {r['task']} ({r['metric']}) | {r['method']} | {r['schedule']} | {_precision(r)} | {r['seed']} | "
                    f"{r['best']:.1f} / {r['final']:.1f} | {without} | "
                    f"{r['teacher_metric']:.1f} | {(f.get('augment') or {}).get('copies', '?')} | "
                    f"{f.get('copy_rule', '?') if r['task'] in GLUE_TASKS and GLUE_TASKS[r['task']].is_pair else '–'} | {f.get('rows', '?')} | "
                    f"{r['epochs']:g} | {r['batch_size']} | {r['wall_s']:.0f} |")
    return "\n".join(rows)


def shipped_text() -> str:
    """The README's line on the shipped SST-2 model: its accuracy on the packed engine (`bitbert
    evaluate`, shipped_model.json), size, and how it was trained."""
    r = _load("shipped_model.json")
    if not r:
        return "_no shipped model yet_"
    ev, tr = r["evaluation"], r["training"]
    acc = ev["metrics"]["accuracy"] if "accuracy" in ev["metrics"] else next(iter(ev["metrics"].values()))
    stages = tr.get("stages") or []
    sched = tr.get("schedule") if isinstance(tr.get("schedule"), str) else ",".join(str(s) for s in tr.get("schedule") or [])
    trained = "a GPU" if "GPU" in tr.get("hardware", "") or "NVIDIA" in tr.get("hardware", "") else "the CPU"
    return (f"The shipped model (`bitbert predict \"text\"` with no model; `{r['file']}`, {r['bytes'] / 2**20:.1f} MB) "
            f"scores **{acc:.1f}%** on the SST-2 dev set on the packed engine (`bitbert evaluate`). It is a `bit` "
            f"{sched} student of MiniLM-L6 trained on {trained}; its recipe and record: "
            "[shipped_model.json](benchmarks/results/shipped_model.json).")


def glue_settings() -> str:
    """MRPC and CoLA, seed 42, 20 epochs a stage, side by side in the three compared settings:
    the newest record of each (task, setting, run); the teacher row is that setting's teacher."""
    recs = [r for r in _load("glue_minilm.json") or [] if r["task"] in ("mrpc", "cola") and r["seed"] == 42
            and not _mark(r) and _setting(r) and (r["method"] == "fp" or r["epochs"] == 20)]
    newest: dict = {}  # the teacher row falls back to the setting's newest teacher (a run resumed in a later call)
    for r in sorted(recs, key=lambda r: r.get("device_call", 0)):
        newest[(r["task"], _setting(r), r["method"], r["schedule"])] = r
    students = [r for k, r in newest.items() if k[2] != "fp"]
    teachers = [r for r in recs if r["method"] == "fp"]
    for (task, setting), r in _own_teachers(students, teachers, lambda r: (r["task"], _setting(r))).items():
        newest[(task, setting, "fp", r["schedule"])] = r
    rows = []
    for task in ("mrpc", "cola"):
        got = {k: v for k, v in newest.items() if k[0] == task}
        if not got:
            continue
        batch = paper_defaults(task)["batch_size"]
        names = {"main": "batch 32", "paper batch": f"BiT's batch {batch}", "10-epoch teacher": "batch 32, 10-epoch teacher"}
        runs = sorted({k[2:] for k in got}, key=lambda m: (METHOD_ORDER.get(m[0], 9), m[1]))
        metric = next(iter(got.values()))["metric"]
        rows += [f"{task} ({metric}), seed 42, 20 epochs a stage; best / final (call):", "",
                 "| method | schedule | " + " | ".join(names[s] for s in SETTINGS) + " |", "|---|---|---|---|---|"]
        for method, sched in runs:
            cells = [got.get((task, s, method, sched)) for s in SETTINGS]
            rows.append(f"| {method} | {sched} | " + " | ".join(
                f"{r['best']:.1f} / {r['final']:.1f} ({r.get('device_call', '?')})" if r else "–" for r in cells) + " |")
        rows.append("")
    return "\n".join(rows).rstrip() or "_no MRPC/CoLA setting comparison yet_"


def glue_cut_table() -> str:
    """Stages that a call's time limit cut (or whose run was cut later), with no record in
    glue_minilm.json: how far they got and their best dev value so far."""
    recs = _load("glue_cut_runs.json")
    if not recs:
        return "_no cut runs_"
    rows = ["| call | task | run | stage | batch | lr | seed | steps done / planned | best so far | last eval | teacher |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        rows.append(f"| {r['device_call']} | {r['task']} ({r['metric']}) | {r['method']} {r['run_schedule']} | {r['bits']} | "
                    f"{r['batch_size']} | {r['lr']:g} | {r['seed']} | {r['steps_done']} / {r['steps_planned']}"
                    f"{' (finished)' if r['finished'] else ''} | {r['best_so_far']:.1f} | {r['last_eval']:.1f} | "
                    f"{r['teacher_metric']:.1f} |")
    return "\n".join(rows)


def bibert_ablation_table() -> str:
    recs = _load("bibert_ablation.json")
    if not recs:
        return "_no BiBERT ablation yet_"
    rows = ["| call | task | variant | best | final | teacher | epochs | wall s |", "|---|---|---|---|---|---|---|---|"]
    rows += [f"| {r['device_call']} | {r['task']} ({r['metric']}) | {r['variant']} | {r['best']:.1f} | {r['final']:.1f} | "
             f"{r['teacher_metric']:.1f} | {r['epochs']:g} | {r['wall_s']:.0f} |" for r in recs]
    return "\n".join(rows)


def _control_metric(r: dict) -> str:
    """The pair control's main dev metric: accuracy, or Pearson/Spearman for the regression pairs."""
    return "pearson_spearman" if r["variant"] == "overlap" else "accuracy"


def pair_control_table() -> str:
    """The sentence-pair control (benchmarks/pair_control.py): one row per probe and schedule, each
    seed's best-on-dev / final-step dev accuracy, and every stage of a schedule."""
    recs = _load("pair_control.json")
    if not recs:
        return "_no pair-control results yet_"
    groups: dict[tuple, list[dict]] = {}
    for r in recs:  # the overrides the run used (a pair task's default included), else its --quant
        quant = r["quant"]
        if "quant_overrides" in r:
            quant = ",".join(f"{k}={v}" for k, v in r["quant_overrides"].items())
        groups.setdefault((r["hardware"], r["train_pairs"], r["variant"], r["name"], r["schedule"], quant, r["loss"],
                           r["lr"], r["epochs"]), []).append(r)
    rows = ["| hardware | train pairs | pairs | probe | schedule | quant overrides | --loss | lr | epochs | teacher | "
            "seeds: stages best / final | mean best (last stage) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (hw, n, variant, name, sched, quant, loss, lr, epochs), rs in sorted(groups.items(), key=lambda kv: kv[0][:3] + (kv[0][4], kv[0][3])):
        rs = sorted(rs, key=lambda r: r["seed"])
        qlr = {r["command"].split("--quant-lr ")[1].split()[0] for r in rs if "--quant-lr " in r["command"]}
        m = _control_metric(rs[0])
        seeds = "; ".join(f"{r['seed']}: " + ", ".join(f"{st['bits']} {st['best'][m]:.1f} / {st['final'][m]:.1f}"
                                                   for st in r["stages"] if "best" in st) for r in rs)
        mean = sum(r["best"][m] for r in rs) / len(rs)
        rows.append(f"| {hw} | {n} | {variant} | {name} | {sched} | {quant or '–'} | {loss or '–'} | {lr:g}{' (α, β ' + qlr.pop() + ')' if qlr else ''} "
                    f"| {epochs:g} | {rs[0]['teacher_best'][m]:.1f} | {seeds} | {mean:.1f} |")
    rows += ["", "Dev accuracy; for the `overlap` pairs (a regression) the mean of Pearson and Spearman ×100. "
             f"Batch {recs[0]['batch_size']}, dev pairs {', '.join(sorted({str(r['dev_pairs']) for r in recs}))}, "
             "MiniLM-L6 teacher fine-tuned on the pairs. A missing seed is a run that did not finish (the records "
             "hold what ran)."]
    return "\n".join(rows)


def mrpc_probe_table() -> str:
    """MRPC probes on the CPU (mrpc_cpu_probe.json): what each run changes against the plain `bit`
    student, best / final F1 (a run stopped early: its last evaluation), final accuracy, and where
    measured the final model's accuracy on 800 of its own training pairs (`train_eval`)."""
    recs = _load("mrpc_cpu_probe.json") or []
    if not recs:
        return "_no MRPC probes yet_"
    rows = ["| run | precision | --quant | lr | training data | epochs | steps | F1 best / final | accuracy final | accuracy on 800 training pairs | teacher F1 |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        f = r.get("augmented_file")
        data = (f"augmented file, {f['rows']:,} rows" + (f" ({f['subset']})" if f.get("subset") else "")
                if f else "MRPC train (3,668 pairs)")
        quant = ",".join(f"{k}={v}" for k, v in (r.get("quant_overrides") or {}).items()) or "–"
        steps = f"{r['stopped_at_step']} of {r['total_steps']}" if r.get("stopped_at_step") else "all"
        acc = (r.get("dev_history") or [{}])[-1].get("accuracy")
        rows.append(f"| {r['method']} {r['schedule']} | {_precision(r)} | {quant} | {r['lr']:g} | {data} | {r['epochs']:g} | {steps} | "
                    f"{r['best']:.1f} / {r['final']:.1f} | {_fmt(acc) or '–'} | "
                    f"{_fmt((r.get('train_eval') or {}).get('accuracy')) or '–'} | {r['teacher_metric']:.1f} |")
    return "\n".join(rows)


def _at_best(r: dict) -> tuple[float, float] | None:
    """F1 and accuracy at the best-F1 evaluation of a record's dev history."""
    h = r.get("dev_history") or []
    return (lambda b: (b["f1"], b["accuracy"]))(max(h, key=lambda e: e["f1"])) if h else None


def mrpc_gpu_probe_table() -> str:
    """MRPC probes on the GPU without augmented data (mrpc_gpu_probe.json): each stage of each run,
    F1 (accuracy) at the best evaluation and at the final step, against its call's teacher."""
    recs = _load("mrpc_gpu_probe.json") or []
    if not recs:
        return "_no GPU MRPC probes yet_"
    rows = ["| call | seed | schedule | precision | also | epochs/stage | batch | lr | F1 (acc) best | F1 (acc) final | teacher F1 |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: (r.get("device_call", 0), r["seed"], METHOD_ORDER.get(r["method"], 9), r["command"], len(r["schedule"]))  # a run's stages together
    for r in sorted(recs, key=key):
        best, h = _at_best(r), r.get("dev_history") or [{}]
        best_text = f"{best[0]:.1f} ({best[1]:.1f})" if best else f"{r['best']:.1f}"
        fin = f"{r['final']:.1f} ({h[-1]['accuracy']:.1f})" if "accuracy" in h[-1] else f"{r['final']:.1f}"
        also = _quant_probe(r).strip(" ()") or "–"
        rows.append(f"| {r.get('device_call', '')} | {r['seed']} | {r['method']} {r['schedule'].replace(',', ' → ')} | {_precision(r)} | "
                    f"{also} | {r['epochs']:g} | {r['batch_size']} | {r['lr']:g} | "
                    f"{best_text} | {fin} | "
                    f"{r['teacher_metric']:.1f} |")
    rows += ["", "Always answering \"paraphrase\" gives F1 81.2 (accuracy 68.4). Records: `benchmarks/results/mrpc_gpu_probe.json`."]
    return "\n".join(rows)


def squad_pairs_table() -> str:
    """Students on the QNLI-style pairs built from SQuAD (squad_pairs.json, from benchmarks/squad_pairs.py)
    beside a single-sentence task at the same number of steps: the means over seeds of each setting's
    best and final accuracy and its gap to its own teacher, then every run."""
    recs = [r for r in _load("squad_pairs.json") or [] if r["method"] != "fp"]
    data = _load("squad_pairs_data.json")
    if not recs:
        return "_no runs on the SQuAD pairs yet_"
    steps = lambda r: (r.get("dev_history") or [{}])[-1].get("step", 0)  # the last evaluation is at the final step
    key = lambda r: (r["task"] != "qnli", r["schedule"].count(","), "first" not in _precision(r), _precision(r), steps(r))
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(recs, key=key):
        groups.setdefault((r["task"], r["method"], r["schedule"], _precision(r), steps(r)), []).append(r)
    mean = lambda xs: sum(xs) / len(xs)
    rows = ["| task | student | precision | steps/stage | seeds | best / final | best − teacher |", "|---|---|---|---|---|---|---|"]
    for (task, method, schedule, precision, n), rs in groups.items():
        rows.append(f"| {task} | {method} {schedule.replace(',', ' → ')} | {precision} | {n} | {len(rs)} | "
                    f"{mean([r['best'] for r in rs]):.1f} / {mean([r['final'] for r in rs]):.1f} | "
                    f"{mean([r['best'] - r['teacher_metric'] for r in rs]):+.1f} |")
    if data:
        base = data["overlap_baseline"]
        rows += ["", f"qnli here: {data['train']:,} train / {data['dev']:,} dev pairs, half of them answers; chance is 50.0, "
                     f"and word overlap alone (a threshold fit on train) gets {base['dev_accuracy']:.1f} on dev. "
                     f"Built by `{data['command']}`."]
    rows += ["", "Every run (accuracy; each seed has its own teacher):", "",
             "| task | hardware | call | seed | student | precision | steps/stage | best / final | teacher |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["task"] != "qnli", r.get("device_call", 0), r["seed"], *key(r)[2:4], r["schedule"])):
        hardware = r.get("hardware", "").replace("NVIDIA ", "").split(" ")[0]
        rows.append(f"| {r['task']} | {hardware} | {r.get('device_call', '–')} | {r['seed']} | "
                    f"{r['method']} {r['schedule'].replace(',', ' → ')} | {_precision(r)} | {steps(r)} | "
                    f"{r['best']:.1f} / {r['final']:.1f} | {r['teacher_metric']:.1f} |")
    rows += ["", "Records: `benchmarks/results/squad_pairs.json`."]
    return "\n".join(rows)


def pair_heads_table() -> str:
    """How each pair-control student compares the two texts: per layer, the largest share of attention a
    head gives from a token of the second text to the same token of the first (records that measured it)."""
    recs = [r for r in _load("pair_control.json") or [] if r.get("duplicate_heads")]
    if not recs:
        return "_no duplicate-token head measurements yet_"
    fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    rows = ["| hardware | pairs | probe | schedule | --quant | --loss | epochs | seed | dev (best) | teacher | "
            "student before training | student after |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["variant"] != "identity", r["schedule"], r["epochs"], r["name"], r["seed"])):
        h = r["duplicate_heads"]
        rows.append(f"| {r['hardware'].split(' (')[0]} | {r['variant']} | {r['name']} | {r['schedule']} | {r['quant'] or '–'} | {r['loss'] or '–'} "
                    f"| {r['epochs']:g} | {r['seed']} | {r['best'][_control_metric(r)]:.1f} | {fmt(h['teacher'])} "
                    f"| {fmt(h['student_at_start'])} | {fmt(h['student'])} |")
    rows += ["", "Dev accuracy, or Pearson/Spearman for the `overlap` regression pairs. Layers 1-6, left to right; "
             "uniform attention over a pair's tokens gives about 0.04."]
    return "\n".join(rows)


def speed_table() -> str:
    recs = _load("distill_speed.json")
    if not recs:
        return "_no speed results yet_"
    rows = []
    for rec in recs:
        rows += [f"{rec['what']}; {rec['hardware']}.", "", "| batch | compiled | CUDA graphs | examples/s |",
                 "|---|---|---|---|"]
        rows += [f"| {r['batch_size']} | {r['compiled']} | {r.get('cuda_graphs', False)} | {r['examples_per_s']:.0f} |"
                 for r in rec["results"]]
        rows.append("")
    return "\n".join(rows).rstrip()


BENCH_FILES = ("bench_cpu.json", "bench_cpu_w1a2.json")  # 1-1-1, then the bit-serial 1-1-2 engine


def bench_table() -> str:
    tables = []
    for name in BENCH_FILES:
        rec = _load(name)
        if rec:
            tables.append(rec["table"] if "table" in rec else "```\n" + json.dumps(rec, indent=1)[:3000] + "\n```")
    return "\n\n".join(tables) or "_no CPU benchmark yet_"


RUNTIME_FILES = ("bench_cpu_ort_bert-base.json", "bench_cpu_ort_minilm-l6.json",  # `bitbert bench --shape ...`
                 "bench_cpu_ort_minilm-l6_w1a2.json",  # the same at 1-1-2 (BiT's W1A2 stage)
                 "bench_cpu_ort_minilm-l6_pairs.json")  # 1-1-1 with the pair tasks' 4-bit first two layers
RUNTIMES = (("engine", "bitbert packed"), ("fp32", "PyTorch FP32"), ("int8", "PyTorch int8 dyn"),
            ("ort_fp32", "ORT FP32"), ("ort_int8", "ORT int8 dyn"))


def runtimes_table() -> str:
    """The packed engine beside PyTorch and ONNX Runtime, FP32 and dynamic int8, one process per shape."""
    recs = [(name, rec) for name in RUNTIME_FILES if (rec := _load(name))]
    if not recs:
        return "_no runtime comparison yet_"
    rows = ["| shape | bits | threads | batch | " + " | ".join(label + " ms" for _, label in RUNTIMES)
            + " | vs ORT int8 | vs PyTorch FP32 |", "|---|---|---|---|" + "---|" * (len(RUNTIMES) + 2)]
    notes = []
    for name, rec in recs:
        shape = name.removeprefix("bench_cpu_ort_").removesuffix(".json")
        for r in rec["results"]:
            ms = [f"{r[k]['median_s'] * 1e3:.1f}" if k in r else "–" for k, _ in RUNTIMES]
            ratio = [f"{r[k]['median_s'] / r['engine']['median_s']:.2f}x" if k in r else "–" for k in ("ort_int8", "fp32")]
            rows.append(f"| {shape.split('_')[0]} | {rec['model']['quant'].rsplit(' ', 1)[0]} | {r['threads']} | {r['batch']} | "
                        + " | ".join(ms + ratio) + " |")
        hw = rec["hardware"]
        notes.append(f"{shape}: `{rec['command']}` on {hw['cpu']} ({hw['cores']} cores), load average "
                     f"{rec['load_average_before'][0]:.2f} before / {rec['load_average_after'][0]:.2f} after, "
                     f"{rec['wall_s']:.0f} s, {rec['model']['quant']}, seq {rec['model']['seq_len']}; median of "
                     f"{rec['repeats']} calls, ms per batch.")
    phases = []
    for name, rec in recs:
        if "phases" in rec:
            from bitbert.deploy.engine.profile import phase_table

            shape = name.removeprefix("bench_cpu_ort_").removesuffix(".json")
            phases += ["", f"Where the engine's time goes, {shape} (1 thread, batch 1, profiled calls):", "",
                       phase_table(rec["phases"])]
    return "\n".join(rows + [""] + notes + phases)


def interleaved_table() -> str:
    """The engine, ONNX Runtime int8 and PyTorch FP32 timed in turns, round by round (1 thread)."""
    rec = _load("bench_cpu_interleaved.json")
    if not rec:
        return "_no interleaved runtime comparison yet_"
    rows = ["| shape | batch | rounds | bitbert packed ms | ORT int8 dyn ms | PyTorch FP32 ms | vs ORT int8 | vs PyTorch FP32 |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rec["results"]:
        ms = [f"{r['median_s'][k] * 1e3:.1f}" if k in r["median_s"] else "–" for k in ("engine", "ort_int8", "fp32")]
        vs = [f"{r['engine_vs'][k]:.2f}x" if k in r["engine_vs"] else "–" for k in ("ort_int8", "fp32")]
        rows.append(f"| {r['shape']} | {r['batch']} | {r['rounds']} | " + " | ".join(ms + vs) + " |")
    hw = rec["hardware"]
    rows += ["", f"`{rec['command']}` on {hw['cpu']} ({hw['cores']} cores, shared with other work: load average "
             f"{rec['load_average_before'][0]:.2f} before / {rec['load_average_after'][0]:.2f} after), 1 thread, "
             f"{rec['wall_s']:.0f} s; medians over rounds, each round calling every runtime once in turn."]
    return "\n".join(rows)


def bipft_table() -> str:
    recs = _load("bipft_minilm.json")
    if not recs:
        return "_no BiPFT results yet_"
    rows = ["| variant | task | best | final | pretrain tokens | rank | wall s |", "|---|---|---|---|---|---|---|"]
    scaling = []
    for r in recs:
        if r["variant"] == "scaling":
            scaling.append(r)
            continue
        rows.append(f"| {r['variant']} | {r['task']} ({r['metric']}) | {r['best']:.1f} | {r['final']:.1f} | "
                    f"{r.get('pretrain_tokens', 0):,} | {r.get('residual_rank', 0)} | {r.get('wall_s', 0):.0f} |")
    if scaling:
        rows += ["", "| GPUs | tokens/s | hardware |", "|---|---|---|"]
        rows += [f"| {r['gpus']} | {r['tokens_per_s']:.0f} | {r.get('hardware', '')} |" for r in scaling]
    return "\n".join(rows)


def engine_accuracy_table() -> str:
    """Each probed variant's last model: the trainer's final evaluation and its fp32 re-evaluation
    (from glue_minilm.json), then `bitbert evaluate` in PyTorch fp32 and on the packed engine."""
    evals = _load("engine_accuracy.json")
    if not evals:
        return "_no engine evaluations yet_"
    glue = _load("glue_minilm.json") or []
    kinds = {"cuda": "PyTorch fp32 GPU", "cpu": "PyTorch fp32 CPU", "engine": "packed engine"}
    cells: dict[tuple, dict] = {}
    for e in evals:
        kind = "engine" if e["runs_on"].startswith("packed") else e["runs_on"].rsplit(" ", 1)[-1].split(":")[0]
        metric = next(iter(e["metrics"]))
        cells.setdefault((e["device_call"], e["variant"], e["task"], metric), {})[kind] = e
    rows = ["| call | variant | task | trainer final | final fp32 | " + " | ".join(kinds.values()) + " | engine on |",
            "|---|---|---|---|---|" + "---|" * len(kinds) + "---|"]
    for (call, variant, task, metric), by_kind in sorted(cells.items()):
        runs = [r for r in glue if r.get("device_call") == call and r["method"] != "fp" and r["task"] == task
                and f"/{variant} " in r["command"] + " "]  # every stage of the variant's schedule
        run = max(runs, key=lambda r: len(Schedule.parse(r["schedule"])), default=None)  # its last: the model evaluated
        engine = by_kind.get("engine")
        rows.append(f"| {call} | {variant} | {task} ({metric}) | {_fmt(run and run['final'])} | "
                    f"{_fmt(run and run.get('final_fp32'))} | "
                    + " | ".join(_fmt(by_kind[k]["metrics"][metric]) if k in by_kind else "" for k in kinds)
                    + f" | {engine['hardware'] + ', ' + engine['runs_on'].split(', ')[1] if engine else ''} |")
    return "\n".join(rows)


HEADLINE_RUNS = (("FP32 teacher", "fp", "32-32-32"), ("1-1-4", "bit", "1-1-4"), ("1-1-2", "bit", "1-1-2"),
                 ("1-1-1", "bit", "1-1-1"), ("1-1-2 → 1-1-1", "bit", "1-1-2,1-1-1"))
AUGMENTED_HEADLINE = ("bit", "1-1-2,1-1-1")  # the headline row repeated on augmented files
BENCH_OF_BITS = dict(zip(("1-1-1", "1-1-2"), BENCH_FILES))  # the packed engine's measured precisions
TASK_NAMES = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA"}


def bert_base_sizes_mb() -> dict[str, float]:
    """FP32 and PyTorch dynamic-int8 (Linear weights in int8, the rest fp32) sizes of the BERT-base
    classifier `bitbert bench` measures, in 2^20-byte MB."""
    from torch import nn
    from transformers import BertConfig, BertForSequenceClassification

    from bitbert.deploy.bench import SHAPES

    model = BertForSequenceClassification(BertConfig(num_labels=2, **SHAPES["bert-base"]))
    total = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return {"fp32": total * 4 / 2**20, "int8": (total * 4 - linear * 3) / 2**20}


def bench_row(rec: dict, threads: int = 1, batch: int = 1) -> dict:
    """A bench record's measurement at ``threads`` and ``batch`` (one sentence on one thread by default)."""
    return next(r for r in rec["results"] if r["threads"] == threads and r["batch"] == batch)


def headline_table() -> str:
    """The README's table: best-on-dev / final-step of the main GLUE runs (MiniLM-L6 students), and
    the BERT-base shape's size and CPU time on one sentence, 1 thread: the packed engine beside
    PyTorch and ONNX Runtime, FP32 and dynamic int8, all from one `bitbert bench` process."""
    runs = summary_records()
    bench = _load(RUNTIME_FILES[0])
    if not runs or not bench:
        return "_no results yet_"
    sizes = bert_base_sizes_mb()
    row = bench_row(bench)
    ms = lambda key: f"{row[key]['median_s'] * 1e3:.1f}"  # noqa: E731
    vs = lambda key, ref: f"{row[ref]['median_s'] / row[key]['median_s']:.2f}x"  # noqa: E731
    speed = lambda key, size: [size, ms(key), vs(key, "fp32"), vs(key, "ort_int8")]  # noqa: E731
    tasks = [t for t in TASK_NAMES if any(k[0] == t for k in runs)]
    metric = {k[0]: r["metric"] for k, r in runs.items()}
    rows = ["| precision (E-W-A) | " + " | ".join(f"{TASK_NAMES[t]} {metric[t]}" for t in tasks)
            + " | BERT-base size MB | CPU ms / sentence | vs PyTorch FP32 | vs ORT int8 |",
            "|---|" + "---|" * (len(tasks) + 4)]

    def cells(method: str, sched: str) -> list[str]:
        return [f"{r['best']:.1f} / {r['final']:.1f}" if (r := runs.get((t, method, sched))) else "–" for t in tasks]

    packed = f"{bench['model']['packed_bytes'] / 2**20:.1f}"
    measured = bench["model"]["quant"].split()[0]  # the precision the packed engine ran at
    for name, method, sched in HEADLINE_RUNS:
        if method == "fp":
            rows.append(f"| {name} | " + " | ".join(cells(method, sched) + speed("fp32", f"{sizes['fp32']:.0f}")) + " |")
            # the 8-bit and ONNX Runtime answers, for the speed columns
            for label, key, size in (("int8 dynamic (PyTorch)", "int8", f"{sizes['int8']:.0f}"),
                                     ("FP32 (ONNX Runtime)", "ort_fp32", f"{sizes['fp32']:.0f}"),
                                     ("int8 dynamic (ONNX Runtime)", "ort_int8", "–")):
                rows.append(f"| {label} | " + " | ".join(["–"] * len(tasks) + speed(key, size)) + " |")
            continue
        runs_at = Schedule.parse(sched).stages[-1]  # a schedule runs as its last stage
        tail = speed("engine", packed) if runs_at == measured else ["–"] * 4
        rows.append(f"| {name} | " + " | ".join(cells(method, sched) + tail) + " |")
    aug = [r for r in _load("glue_minilm_aug.json") or [] if (r["method"], r["schedule"]) == AUGMENTED_HEADLINE]
    if aug:
        def aug_cell(task: str) -> str:
            rs = [r for r in aug if r["task"] == task]
            if not rs:
                return "–"
            rs = [r for r in rs if _current_aug(r)] or rs  # superseded runs only where nothing replaced them
            mark = "*" if not all(_current_aug(r) for r in rs) else ""
            mean = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
            return f"{mean('best'):.1f} / {mean('final'):.1f}{mark}"
        cells_aug = [aug_cell(t) for t in tasks]
        rows.append(f"| {HEADLINE_RUNS[-1][0]}, augmented | " + " | ".join(cells_aug + ["–"] * 4) + " |")
    hw = bench["hardware"]
    rows += ["", f"GLUE: dev set, best-on-dev / final step, `bit` students of a MiniLM-L6 teacher (one H100/H200); "
             "augmented: trained on `bitbert augment` files (TinyBERT's recipe, one or two passes over the file a stage; mean of seeds, "
             "[docs/results/glue.md](docs/results/glue.md))"
             + ("; * = made before today's recipe (pair copies perturbing both texts, or fully binary pair students)" if aug and any("*" in c for c in cells_aug) else "") + ". "
             f"Speed: BERT-base shape, sequence 128, one sentence on 1 thread of an {hw['cpu']} ({hw['cores']} "
             f"cores, shared), median of {bench['repeats']} calls, all runtimes in one `bitbert bench` process; "
             f"the packed engine at {measured} (other precisions, batch 32, MiniLM-L6: "
             "[docs/results/engine.md](docs/results/engine.md))."]
    turns = next((r for r in (_load("bench_cpu_interleaved.json") or {}).get("results", [])
                  if r["shape"] == "bert-base" and r["batch"] == 1), None)
    if turns:  # that process times the runtimes one after another: on a shared machine, load drifts between them
        rows[-1] += (f" Timed in turns instead (each round calls every runtime once; fairer on a busy machine), "
                     f"the engine is {turns['engine_vs']['ort_int8']:.2f}x ORT int8 and "
                     f"{turns['engine_vs']['fp32']:.1f}x PyTorch FP32.")
    return "\n".join(rows)


def _recipe(r: dict) -> str:
    """A default-job record's recipe in a few words: sentences, teacher, student."""
    t = r["teacher"]
    student = next(iter(r["stages"].values())) if len(r["stages"]) == 1 else r["stages"][r["schedule"].split(",")[-1]]
    return (f"{r['train_examples']:,} sentences; teacher {t['epochs']:g} ep, batch {t['batch_size']}, lr {t['lr']:g}; "
            f"{r['method']} {r['schedule']}, {student['epochs']:g} ep a stage, batch {student['batch_size']}, lr {student['lr']:g}")


def default_job_table() -> str:
    """The default job timed on a CPU (benchmarks/default_job_cpu.py): recipe, accuracy, wall time."""
    recs = _load("default_job_cpu.json")
    if not recs:
        return "_no default-job timings yet_"
    rows = ["| recipe | default | teacher | student best / final | wall min (teacher / distill / export s) | CPU min | "
            "threads | load avg | machine |", "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        w = r["wall_s"]
        load = max(r["load_average"]["before"][0], r["load_average"]["after"][0])
        note = f" ({r['note']})" if r["note"] else ""
        rows.append(f"| {_recipe(r)}{note} | {'yes' if _is_default(r) else ''} | "
                    f"{r['teacher']['final']:.1f} | {r['best']:.1f} / {r['final']:.1f} | {w['total'] / 60:.1f} "
                    f"({w['teacher']:.0f} / {w['distillation']:.0f} / {w['export']:.0f}) | {r['cpu_s'] / 60:.1f} | "
                    f"{r['threads']} | {load:.1f}{' (shared)' if r['shared_machine'] else ''} | {r['machine']} |")
    return "\n".join(rows)


def default_job_sweep_table() -> str:
    """The recipe sweep behind the default job: GPU, fp32, accuracy only."""
    recs = _load("default_job_sweep.json")
    if not recs:
        return "_no sweep yet_"
    rows = ["| sentences | schedule | batch | lr | epochs | seed | teacher | student best / final | steps |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["train_examples"], r["schedule"], r["batch_size"], r["lr"], r["seed"])):
        rows.append(f"| {r['train_examples']:,} | {r['schedule']} | {r['batch_size']} | {r['lr']:g} | {r['epochs']:g} | "
                    f"{r['seed']} | {r['teacher_metric']:.1f} | {r['best']:.1f} / {r['final']:.1f} | {r['steps']} |")
    hw = sorted({r["hardware"] for r in recs})
    rows += ["", f"{', '.join(hw)}, fp32 (`--mixed-precision no`, no CUDA graphs: the CPU's arithmetic); the teacher "
             f"fine-tuned 1 epoch (batch 32, lr 1e-4) on the same sentences; max length 64. Commands in the records."]
    return "\n".join(rows)


def _is_default(r: dict) -> bool:
    """A record of the default job's recipe: no distill options beyond the run folder, or only options
    that set `DEFAULT_JOB`'s own values (a recipe timed before it became the default)."""
    words = r["command"].split()
    rest = words[words.index("distill") + 1:]
    own = {"--out": None, "--overwrite": None, "--max-train-examples": str(DEFAULT_JOB.train_examples),
           "--eval-every": str(DEFAULT_JOB.eval_every)}
    i = 0
    while i < len(rest):
        flag = rest[i]
        if flag not in own:
            return False
        if flag == "--overwrite":
            i += 1
            continue
        if own[flag] is not None and rest[i + 1] != own[flag]:
            return False
        i += 2
    return r["train_examples"] == DEFAULT_JOB.train_examples


def default_job_timing() -> dict | None:
    """The newest timing of the default job as shipped, or None."""
    recs = [r for r in _load("default_job_cpu.json") or [] if _is_default(r)]
    return recs[-1] if recs else None


def default_job_time() -> str:
    """The README's sentence on the default job's measured time and accuracy."""
    r = default_job_timing()
    if r is None:
        return "_the default job has not been timed yet_"
    threads = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
    return (f"Measured ({r['date']}): {r['cpu_s'] / 60:.1f} CPU-minutes on {threads}, {r['wall_s']['total'] / 60:.1f} "
            f"minutes wall ({r['machine']}{', shared with other jobs' if r['shared_machine'] else ''}); the 1-bit student reached "
            f"{r['final']:.1f}% on SST-2 dev ({r['best']:.1f}% best), its teacher {r['teacher']['final']:.1f}% "
            f"([all timings](docs/results/default_job.md)).")


SECTIONS = {"glue-summary": glue_summary, "glue-seeds": glue_seeds, "glue-settings": glue_settings, "glue": glue_table, "glue-cut": glue_cut_table, "gap-sources": gap_sources_table, "bibert-ablation": bibert_ablation_table, "speed": speed_table, "bench": bench_table, "runtimes": runtimes_table, "interleaved": interleaved_table, "bipft": bipft_table,
            "engine-accuracy": engine_accuracy_table, "headline": headline_table,
            "pair-control": pair_control_table, "pair-heads": pair_heads_table, "mrpc-probes": mrpc_probe_table, "mrpc-gpu-probes": mrpc_gpu_probe_table, "squad-pairs": squad_pairs_table, "glue-augmented": augmented_table, "default-job": default_job_table,
            "default-job-sweep": default_job_sweep_table, "default-job-time": default_job_time, "shipped": shipped_text}

# where each table lives (paths relative to the repository root)
PAGES = {"README.md": ("default-job-time", "headline", "shipped"),
         "docs/results/default_job.md": ("default-job", "default-job-sweep"),
         "docs/results/glue.md": ("glue-summary", "glue-augmented", "glue-seeds", "glue-settings", "glue", "gap-sources", "glue-cut",
                                  "bibert-ablation"),
         "docs/results/speed.md": ("speed",), "docs/results/engine.md": ("runtimes", "interleaved", "bench", "engine-accuracy"),
         "docs/results/bipft.md": ("bipft",), "docs/results/pairs.md": ("pair-control", "pair-heads", "mrpc-probes", "mrpc-gpu-probes", "squad-pairs")}


def fill(text: str, names) -> str:
    """``text`` with the tables ``names`` regenerated between their markers."""
    for name in names:
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + SECTIONS[name]() + "\n" + m.group(2), text)
    return text


# What the default job compares itself with: the full SST-2 run of its own recipe, shipped with the
# package (the records are not installed).
REFERENCE = ROOT / "bitbert" / "data" / "reference_run.json"
REFERENCE_RUN = ("sst2", "bit", DEFAULT_JOB.schedule)  # the default job's method and schedule


def reference_run() -> str:
    """The JSON of `REFERENCE`: the longest `REFERENCE_RUN` in the records, and the default job's
    own measured CPU time (``default_job_cpu``)."""
    r = summary_records().get(REFERENCE_RUN)
    if r is None:
        return "{}\n"
    keep = ("task", "method", "schedule", "metric", "best", "final", "teacher_metric", "epochs", "batch_size", "lr",
            "seed", "hardware", "command")
    ref = {k: r[k] for k in keep if k in r}
    if (t := default_job_timing()) is not None:
        ref["default_job_cpu"] = {"wall_s": t["wall_s"]["total"], "cpu_s": t["cpu_s"], "threads": t["threads"],
                                  "machine": t["machine"], "shared_machine": t["shared_machine"], "best": t["best"],
                                  "final": t["final"]}
    return json.dumps(ref, indent=1) + "\n"


def main() -> None:
    REFERENCE.write_text(reference_run())
    for page, names in PAGES.items():
        path = ROOT / page
        path.write_text(fill(path.read_text(), names))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('tables written; the plots need matplotlib: pip install -e ".[plots]"')
        return
    import plots

    plots.main()


if __name__ == "__main__":
    main()
