"""The committed results: the issue's record format, and README / docs/results tables and plots that
match the JSON files."""
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"task", "method", "schedule", "bits", "metric", "best", "final", "teacher_metric", "epochs", "seed",
            "examples_per_s", "command", "hardware", "wall_s"}


def _benchmark(name: str):
    """A benchmarks/ script as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tables():
    return _benchmark("tables")


def _merge_results():
    return _benchmark("merge_results")


def test_collect_records_tags_and_skips_missing_files(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([{"method": "fp", "schedule": "32-32-32", "best": 85.04, "final": 84.96}]))
    b.write_text(json.dumps([{"method": "bit", "schedule": "1-1-1", "best": 82.0, "final": 79.2}]))
    out = tmp_path / "records.json"
    assert _benchmark("collect_records").main([str(out), str(a), str(tmp_path / "not-yet.json"), str(b), "--print"]) == 0
    assert json.loads(out.read_text()) == [
        {"method": "fp", "schedule": "32-32-32", "best": 85.04, "final": 84.96, "records_file": str(a)},
        {"method": "bit", "schedule": "1-1-1", "best": 82.0, "final": 79.2, "records_file": str(b)}]
    assert "85.0, 85.0" in capsys.readouterr().out and not (tmp_path / "records.json.tmp").exists()


def test_glue_records_have_the_issue_format():
    for name in ("glue_minilm.json", "bibert_ablation.json"):
        recs = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
        assert recs, name
        for r in recs:
            assert REQUIRED <= set(r), (name, sorted(REQUIRED - set(r)))
            assert all(-100 <= r[k] <= 100 for k in ("best", "final", "teacher_metric")), r
            assert r["command"].startswith("python benchmarks/run_glue.py"), r["command"]


def test_squad_pair_records_say_how_they_were_made():
    """Every run on the SQuAD pairs carries the issue's fields and its device call's full command; the
    data record is the builder's output, so the table's word-overlap line is measured, not typed."""
    recs = json.loads((ROOT / "benchmarks" / "results" / "squad_pairs.json").read_text())
    assert {r["task"] for r in recs} == {"qnli", "sst2"}  # the pair task and its same-steps single-sentence reference
    for r in recs:
        assert REQUIRED <= set(r), sorted(REQUIRED - set(r))
        assert re.search(r"(python|FP_LAYERS=\S+ WEIGHT_BITS=\d python) benchmarks/(run_glue|fp_weight_layers)\.py", r["command"])
        assert "bash benchmarks/gpu_mrpc.sh" in r["note"] and r["dev_history"][-1]["step"] > 0
    data = json.loads((ROOT / "benchmarks" / "results" / "squad_pairs_data.json").read_text())
    assert data["command"].startswith("python benchmarks/squad_pairs.py ") and data["train"] > data["dev"] > 0
    assert 50 < data["overlap_baseline"]["dev_accuracy"] < 100


def test_result_pages_are_generated_from_the_results():
    """Every table of the README and docs/results/ sits between its markers as tables.py writes it
    now, and each table has exactly one page."""
    tables = _tables()
    placed = [name for names in tables.PAGES.values() for name in names]
    assert sorted(placed) == sorted(tables.SECTIONS), "a table without a page, or on two"
    for page, names in tables.PAGES.items():
        text = (ROOT / page).read_text()
        for name in names:
            assert text.count(f"<!-- {name}:start -->") == 1, f"{page} lacks the {name} markers"
        assert tables.fill(text, names) == text, f"{page} is stale: run python benchmarks/tables.py"


def test_headline_table_takes_its_numbers_from_the_records():
    """The README's headline rows are the summary's records and the bench files' one-thread rows."""
    tables = _tables()
    table = tables.headline_table()
    runs = tables.summary_records()
    sst2 = runs[("sst2", "bit", "1-1-1")]
    row = next(l for l in table.splitlines() if l.startswith("| 1-1-1 |"))
    assert f"{sst2['best']:.1f} / {sst2['final']:.1f}" in row
    bench = json.loads((ROOT / "benchmarks" / "results" / "bench_cpu_ort_bert-base.json").read_text())
    one = next(r for r in bench["results"] if r["threads"] == 1 and r["batch"] == 1)
    assert row.endswith(f"| {one['engine']['median_s'] * 1e3:.1f} | {one['speedup_vs_fp32']:.2f}x | "
                        f"{one['speedup_vs_ort_int8']:.2f}x |")
    ort = next(line for line in table.splitlines() if line.startswith("| int8 dynamic (ONNX Runtime) |"))
    assert f"| {one['ort_int8']['median_s'] * 1e3:.1f} |" in ort and bench["hardware"]["cpu"] in table


def test_plots_are_drawn_from_the_current_results():
    """docs/plots/plots.json holds what the committed PNGs show; it must match the results now (the
    PNGs are redrawn with it by python benchmarks/tables.py)."""
    plots = _benchmark("plots")
    committed = json.loads((ROOT / "docs" / "plots" / "plots.json").read_text())
    assert committed == json.loads(json.dumps(plots.data())), "plots are stale: run python benchmarks/tables.py"
    for name in ("accuracy_vs_bits.png", "speed_vs_size.png"):
        assert (ROOT / "docs" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_settings_are_told_apart_by_batch_lr_and_teacher():
    setting = _tables()._setting
    base = {"task": "mrpc", "method": "bit", "batch_size": 32, "lr": 5e-4,
            "command": "python benchmarks/run_glue.py --task mrpc --epochs 20 --batch-size 32"}
    assert setting(base) == "main"
    assert setting(dict(base, batch_size=8)) == "paper batch"  # BiT's MRPC batch
    assert setting(dict(base, batch_size=16)) is None  # neither ours nor BiT's
    assert setting(dict(base, lr=2e-4)) is None  # an lr probe
    assert setting(dict(base, command=base["command"] + " --alpha-init wide")) is None  # a quantizer probe
    assert setting(dict(base, command=base["command"] + " --inherit-quantizers")) is None
    assert setting(dict(base, command=base["command"] + " --augment 4")) is None  # an augmentation probe
    assert _tables()._quant_probe(dict(base, command=base["command"] + " --augment 4")) == " (augmented x4)"
    assert setting(dict(base, command=base["command"] + " --quant binarize_pooler=false")) is None  # an ablation
    assert _tables()._quant_probe(dict(base, command=base["command"] + " --quant binarize_pooler=false")) == \
        " (quant binarize_pooler=false)"
    assert setting(dict(base, command=base["command"] + " --teacher-epochs 10 --teacher-lr 1e-4")) == "10-epoch teacher"
    assert setting(dict(base, task="sst2", lr=1e-4)) is None  # SST-2's main teacher is 1 epoch
    # a teacher's own record (batch 32, lr 5e-5) belongs to its students' setting, read from the command
    fp = {"task": "cola", "method": "fp", "batch_size": 32, "lr": 5e-5,
          "command": "python benchmarks/run_glue.py --task cola --batch-size 16"}
    assert setting(fp) == "paper batch"


def test_partial_precision_schedules_are_ablations():
    t = _tables()
    assert [t._partial(s) for s in ("1-1-32", "32-1-1", "1-1-32,1-1-1", "1-1-1", "32-32-32,1-1-2,1-1-1", "1-1-4")] == [
        True, True, True, False, False, False]
    base = {"task": "sst2", "method": "bit", "batch_size": 32, "lr": 1e-4, "schedule": "1-1-1",
            "command": "python benchmarks/run_glue.py --task sst2 --teacher-epochs 1"}
    assert t._setting(base) == "main" and t._setting(dict(base, schedule="1-32-1")) is None
    # another base model is not the compared setting; like argparse, a flag's last value wins
    other = dict(base, command=base["command"] + " --model .devdata/minilm-l6-h384-fp16 --model .devdata/minilm-l3-h384-fp16")
    assert t._model(other) == "minilm-l3-h384-fp16" and t._setting(other) is None
    assert t._model(base) == t.MAIN_MODEL
    # the ablation table holds the calls that ran one, with their fully binary reference
    table = t.gap_sources_table()
    assert "| fully binary (reference) | 1-1-1 |" in table and "| word embeddings in full precision | 32-1-1 |" in table
    assert all(row.count("|") == table.splitlines()[0].count("|") for row in table.splitlines())


def test_merge_results_tags_and_skips_what_is_there(tmp_path, capsys):
    mod = _merge_results()
    rec = {"task": "mrpc", "method": "bit", "schedule": "1-1-1", "seed": 43, "best": 82.6,
           "command": "python benchmarks/run_glue.py --lr 2e-4", "records_file": "runs/glue/p2/mrpc.json"}
    returned = tmp_path / "records.json"
    # the same run at another lr (another runs folder of the same call) is another record
    returned.write_text(json.dumps([rec, dict(rec, method="baseline"), dict(rec, command="python benchmarks/run_glue.py")]))
    into = tmp_path / "results.json"
    assert mod.main([str(returned), "--call", "20", "--note", "n", "--into", str(into)]) == 0
    assert mod.main([str(returned), "--call", "20", "--note", "n", "--into", str(into)]) == 0  # re-merge: no copies
    # a later call on the warm machine returns these finished records again: still no copies
    assert mod.main([str(returned), "--call", "21", "--note", "n", "--into", str(into)]) == 0
    merged = json.loads(into.read_text())
    assert [(r["method"], r["device_call"], r["note"]) for r in merged] == [("bit", 20, "n"), ("baseline", 20, "n"),
                                                                            ("bit", 20, "n")]
    assert "records_file" not in merged[0]
    assert capsys.readouterr().out.count("0 records added, 3 already there") == 2
    rerun = tmp_path / "rerun.json"  # the same command run again (a fresh machine): a new measurement
    rerun.write_text(json.dumps([dict(rec, wall_s=12.5)]))
    assert mod.main([str(rerun), "--call", "22", "--note", "n", "--into", str(into)]) == 0
    assert [r["device_call"] for r in json.loads(into.read_text())] == [20, 20, 20, 22]
    capsys.readouterr()
    assert mod.main([str(tmp_path / "missing.json"), "--call", "1", "--note", "n", "--into", str(into)]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_merge_results_cut_runs_from_progress(tmp_path, tiny_config, capsys):
    from transformers import BertForSequenceClassification

    from bitbert.training.distill import run_schedule
    from test_distill import CFG, tiny_task

    data, teacher = tiny_task(), BertForSequenceClassification(tiny_config).eval()
    root = tmp_path / "runs" / "sst2"
    for name, schedule, cfg in (("cut", "1-1-2,1-1-1", CFG.replace(max_steps=6)), ("done", "1-1-1", CFG)):
        run_schedule(teacher, data, "bit", schedule, cfg, root / name)
        (root / name / "run.json").write_text(json.dumps(  # as run_glue.py writes it
            {"task": "sst2", "method": "bit", "schedule": schedule, "metric": "accuracy", "seed": 1, "batch_size": 8,
             "lr": 1e-3, "epochs": 2, "teacher_metric": 50.0, "command": f"python benchmarks/run_glue.py {name}",
             "hardware": "cpu"}))
    into, mod = tmp_path / "cut.json", _merge_results()
    args = ["--cut", str(tmp_path / "runs"), "--call", "7", "--note", "n", "--cut-into", str(into)]
    assert mod.main(args) == 0 and mod.main(args) == 0  # the second adds nothing
    (entry,) = json.loads(into.read_text())  # the finished run has its records elsewhere
    assert (entry["run_schedule"], entry["stage"], entry["bits"], entry["steps_done"]) == ("1-1-2,1-1-1", 0, "1-1-2", 6)
    assert not entry["finished"] and entry["steps_planned"] > 6 and entry["device_call"] == 7
    assert entry["best_so_far"] == max(h["accuracy"] for h in entry["dev_history"])
    assert "0 records added, 1 already there" in capsys.readouterr().out
    assert mod.main(["--cut", str(tmp_path / "nowhere"), "--call", "7", "--note", "n", "--cut-into", str(into)]) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err


def test_dev_histories_agree_with_best_and_final():
    recs = [r for r in json.loads((ROOT / "benchmarks" / "results" / "glue_minilm.json").read_text()) if "dev_history" in r]
    assert recs
    for r in recs:
        values = [e[r["metric"]] for e in r["dev_history"]]
        assert max(values) == r["best"] and values[-1] == r["final"], (r["device_call"], r["method"], r["schedule"])
        assert [e["step"] for e in r["dev_history"]] == sorted({e["step"] for e in r["dev_history"]})


# run_glue.py, or a probe that runs it (its environment first): the record's own command, repeatable as it stands
PROBE_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*python benchmarks/(?:run_glue|fp_weight_layers|token_noise)\.py ")


def test_cut_runs_agree_with_their_histories():
    recs = json.loads((ROOT / "benchmarks" / "results" / "glue_cut_runs.json").read_text())
    assert recs
    for r in recs:
        values = [e[r["metric"]] for e in r["dev_history"]]
        assert max(values) == r["best_so_far"] and values[-1] == r["last_eval"], r["command"]
        assert 0 < r["steps_done"] <= r["steps_planned"] and r["finished"] == (r["steps_done"] == r["steps_planned"])
        assert PROBE_COMMAND.match(r["command"]) and f"--batch-size {r['batch_size']}" in r["command"], r["command"]


def test_engine_table_compares_a_schedule_with_its_last_stage():
    """The augmented multi-distillation probe (aug4m) ran 1-1-2,1-1-1: its row's trainer figures are the 1-1-1 stage's, whose model
    the evaluations ran, not the 1-1-2 stage's."""
    glue = json.loads((ROOT / "benchmarks" / "results" / "glue_minilm.json").read_text())
    last = next(r for r in glue if r.get("device_call") == 34 and r["schedule"] == "1-1-2,1-1-1")
    first = next(r for r in glue if r.get("device_call") == 34 and r["schedule"] == "1-1-2")
    assert round(last["final"], 1) != round(first["final"], 1)
    row = next(line for line in _tables().engine_accuracy_table().splitlines() if line.startswith("| 34 | aug4m |"))
    assert row.split(" | ")[3:5] == [f"{last['final']:.1f}", f"{last['final_fp32']:.1f}"]


def test_default_jobs_reference_is_generated_from_the_records():
    """The default job prints what its recipe reaches on all of SST-2 from a shipped copy of the record."""
    tables = _tables()
    assert tables.REFERENCE.read_text() == tables.reference_run(), "stale: run python benchmarks/tables.py"
    from bitbert.cli import _reference_line

    ref = json.loads(tables.REFERENCE.read_text())
    line = _reference_line()
    assert f"{ref['best']:.1f} best" in line and ref["command"] in line and ref["schedule"] in line


def test_docs_and_timings_are_of_the_default_jobs_recipe():
    """README and docs/training.md state `DEFAULT_JOB`'s recipe; the timing the README and the job
    quote was measured with that recipe; the GPU run the job compares itself with has its schedule."""
    from bitbert.training.default_job import DEFAULT_JOB

    tables = _tables()
    sentences = f"{DEFAULT_JOB.train_examples:,} sentences"
    assert sentences in (ROOT / "README.md").read_text()
    training = (ROOT / "docs" / "training.md").read_text()
    assert sentences in training and f"`{DEFAULT_JOB.schedule}`" in training
    lr = lambda x: f"{x:.0e}".replace("e-0", "e-")  # noqa: E731  (5e-4, as the page writes it)
    assert f"batch {DEFAULT_JOB.batch_size}, lr {lr(DEFAULT_JOB.lr)}" in training
    assert f"batch {DEFAULT_JOB.teacher_batch_size}, lr {lr(DEFAULT_JOB.teacher_lr)}" in training
    assert json.loads(tables.REFERENCE.read_text())["schedule"] == DEFAULT_JOB.schedule
    timing = tables.default_job_timing()
    assert timing is not None, "the default job has no timing: run benchmarks/default_job_cpu.py"
    student = timing["stages"][DEFAULT_JOB.schedule.split(",")[-1]]
    assert (timing["train_examples"], timing["schedule"]) == (DEFAULT_JOB.train_examples, DEFAULT_JOB.schedule)
    assert (student["epochs"], student["lr"], student["batch_size"]) == (DEFAULT_JOB.epochs, DEFAULT_JOB.lr,
                                                                         DEFAULT_JOB.batch_size)
    assert (timing["teacher"]["epochs"], timing["teacher"]["lr"], timing["teacher"]["batch_size"]) == (
        DEFAULT_JOB.teacher_epochs, DEFAULT_JOB.teacher_lr, DEFAULT_JOB.teacher_batch_size)
    assert f"{timing['cpu_s'] / 60:.1f} CPU-minutes" in (ROOT / "README.md").read_text()
    from bitbert.cli import _measured_time

    assert f"{timing['cpu_s'] / 60:.1f} CPU-minutes" in _measured_time()  # what the job says as it starts
