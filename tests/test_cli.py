"""The command line end to end on a tiny model: finetune → distill (custom TSV task) → summary,
and clear errors for bad input."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from bitbert.cli import main
from conftest import save_tiny_base, sentiment_rows


@pytest.fixture
def tiny_teacher(tmp_path):
    """A tiny BERT with a WordPiece tokenizer in tmp_path/base, and train.tsv / dev.tsv (pos/neg) beside it."""
    d = save_tiny_base(tmp_path / "base")
    rows = sentiment_rows(lambda positive: "pos" if positive else "neg")
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:13]) + "\n")
    return d


def test_finetune_then_distill_custom_task(tmp_path, tiny_teacher, capsys, monkeypatch):
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    data = ["--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"),
            "--text-columns", "sentence", "--label-column", "label"]
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), *data,
                 "--epochs", "1", "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert main(["distill", "--teacher", str(tmp_path / "t" / "model"), "--out", str(tmp_path / "s"), *data,
                 "--schedule", "1-1-2,1-1-1", "--epochs", "1", "--batch-size", "8", "--eval-every", "2"]) == 0
    out = capsys.readouterr().out
    assert "teacher  dev accuracy" in out and "student 1-1-1" in out and "total" in out
    report = json.loads((tmp_path / "s" / "schedule.json").read_text())
    assert [s["bits"] for s in report["stages"]] == ["1-1-2", "1-1-1"]
    assert report["losses"]["hidden_loss"] == "mse" and report["losses"]["dmd"] == 0  # bit's recipe, recorded
    # a resume with another seed would mix two runs: refused, naming the setting
    assert main(["distill", "--teacher", str(tmp_path / "t" / "model"), "--out", str(tmp_path / "s"), *data,
                 "--schedule", "1-1-2,1-1-1", "--epochs", "1", "--batch-size", "8", "--seed", "7", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "seed=" in err and "Traceback" not in err
    assert main(["summary", str(tmp_path / "s" / "stage1-1-1-1" / "model"), "--seq-len", "32"]) == 0
    assert main(["summary", str(tmp_path / "s" / "stage1-1-1-1" / "model")]) == 2  # 128 > 64 positions
    # the quantizers' training options reach every stage's resume settings, not the saved model
    assert main(["distill", "--teacher", str(tmp_path / "t" / "model"), "--out", str(tmp_path / "w"), *data,
                 "--schedule", "1-1-2,1-1-1", "--epochs", "1", "--batch-size", "8", "--alpha-init", "wide",
                 "--inherit-quantizers"]) == 0
    for stage in ("stage0-1-1-2", "stage1-1-1-1"):
        cfg = json.loads((tmp_path / "w" / stage / "model" / "config.json").read_text())["bitbert"]
        assert "alpha_init" not in cfg and "inherit_quantizers" not in cfg, stage
        report = json.loads((tmp_path / "w" / stage / "report.json").read_text())
        assert report["config"]["quant_init"] == {"alpha_init": "wide", "inherit_quantizers": True}, stage


def test_bad_data_is_a_clear_error(tmp_path, tiny_teacher, capsys):
    (tmp_path / "bad.tsv").write_text("sentence\tlabel\nfine movie\tpos\nbroken row without tab\n")
    code = main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "x"),
                 "--train-file", str(tmp_path / "bad.tsv"), "--dev-file", str(tmp_path / "bad.tsv"),
                 "--text-columns", "sentence"])
    err = capsys.readouterr().err
    assert code == 2 and "bad.tsv:3" in err and "Traceback" not in err


def test_missing_or_empty_model_folder_is_a_clear_error(tmp_path, tiny_teacher, capsys, monkeypatch):
    """transformers tries a missing folder as a Hub id ("Repo id must be in the form ...") and fails on
    an empty one deep in the tokenizer: both must name the folder and the problem."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    data = ["--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"),
            "--text-columns", "sentence"]
    for cmd, flag in (("distill", "--teacher"), ("finetune", "--model")):
        for folder, words in ((tmp_path / "nope" / "model", "no such folder"), (tmp_path / "empty", "holds none of")):
            assert main([cmd, flag, str(folder), "--out", str(tmp_path / "x"), *data]) == 2
            err = capsys.readouterr().err
            assert str(folder) in err and words in err and "Traceback" not in err, (cmd, folder, err)
    # a folder with a tokenizer but no model: the model loader names it too
    only_tok = tmp_path / "tok"
    only_tok.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (only_tok / name).write_text((tiny_teacher / name).read_text())
    assert main(["distill", "--teacher", str(only_tok), "--out", str(tmp_path / "x"), *data]) == 2
    err = capsys.readouterr().err
    assert "model " + str(only_tok) in err and "config.json" in err and "Traceback" not in err


def test_finetune_stopped_by_max_steps_says_so(tmp_path, tiny_teacher, capsys, monkeypatch):
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    args = ["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), "--train-file",
            str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"), "--text-columns", "sentence",
            "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1 of 5" in out and "--resume" in out and not (tmp_path / "t" / "model").exists()
    assert (tmp_path / "t" / "checkpoint.pt").is_file()  # what --resume continues from
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming at step 1" in out and f"model: {tmp_path / 't' / 'model'}" in out
    assert (tmp_path / "t" / "model" / "config.json").is_file() and not (tmp_path / "t" / "checkpoint.pt").exists()


def test_unknown_preset_and_bits(capsys):
    assert main(["summary", "minilm-l6", "--preset", "xnor"]) == 2
    assert "valid presets" in capsys.readouterr().err
    assert main(["summary", "minilm-l6", "--preset", "bit", "--bits", "1-1-3"]) == 2


def test_summary_builtin_shape(capsys):
    assert main(["summary", "minilm-l6", "--preset", "bit", "--bits", "1-1-1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params_by_bits"]["1"] > 20_000_000 and d["size_mb"] < 5


def test_bad_loss_override_is_a_clear_error(tmp_path, tiny_teacher, capsys):
    for bad, words in (("dmd", "not key=value"), ("depth=1", "not key=value"), ("dmd=x", "needs a number"),
                       ("hidden_loss=l1", "hidden_loss must be one of"), ("dmd=-1", "must be a number >= 0")):
        code = main(["distill", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "x"), "--loss", bad,
                     "--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"),
                     "--text-columns", "sentence"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, (bad, err)


def test_evaluate_packed_file_and_model_dir_agree(tmp_path, tiny_teacher, capsys, monkeypatch):
    """`bitbert evaluate` on a distilled student: its directory (PyTorch fp32) and its packed file
    (bitwise engine) give the stage's final dev metrics; a packed file needs no train file (it stores its labels)."""
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    data = ["--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"),
            "--text-columns", "sentence", "--label-column", "label"]
    assert main(["distill", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"), *data,
                 "--schedule", "1-1-1", "--epochs", "1", "--batch-size", "8", "--max-length", "32"]) == 0
    final = json.loads((tmp_path / "s" / "schedule.json").read_text())["stages"][0]["final"]
    student = tmp_path / "s" / "stage0-1-1-1" / "model"
    assert main(["export", str(student), str(tmp_path / "m.bitbert")]) == 0
    capsys.readouterr()
    results = {}
    for name, model in (("dir", student), ("packed", tmp_path / "m.bitbert")):
        assert main(["evaluate", str(model), *data, "--max-length", "32", "--out", str(tmp_path / f"{name}.json")]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed == json.loads((tmp_path / f"{name}.json").read_text())
        results[name] = printed
    assert results["dir"]["examples"] == {"dev": 12} and "PyTorch fp32" in results["dir"]["runs_on"]
    assert "packed engine" in results["packed"]["runs_on"]
    assert results["dir"]["metrics"]["accuracy"] == pytest.approx(final["accuracy"])
    assert results["packed"]["metrics"]["accuracy"] == pytest.approx(final["accuracy"])
    assert main(["predict", str(tmp_path / "m.bitbert"), "a good movie"]) == 0  # the task's class names
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")

    glue = tmp_path / "SST-2"  # dev only: evaluation never reads (or needs) train.tsv
    glue.mkdir()
    (glue / "dev.tsv").write_text((tmp_path / "dev.tsv").read_text())
    assert main(["evaluate", str(tmp_path / "m.bitbert"), "--task", "sst2", "--data-dir", str(glue)]) == 2
    assert "unknown label 'pos'" in capsys.readouterr().err  # SST-2's labels are 0/1, named with file:line
    rows = (tmp_path / "dev.tsv").read_text().replace("\tpos", "\t1").replace("\tneg", "\t0")
    (glue / "dev.tsv").write_text(rows)
    assert main(["evaluate", str(tmp_path / "m.bitbert"), "--task", "sst2", "--data-dir", str(glue)]) == 2
    assert "['neg', 'pos']; the task's classes are ['negative', 'positive']" in capsys.readouterr().err  # by name
    assert main(["evaluate", str(tmp_path / "m.bitbert"), "--dev-file", str(tmp_path / "dev.tsv"),
                 "--text-columns", "sentence"]) == 0  # the file's own labels: no train file needed
    assert json.loads(capsys.readouterr().out)["examples"] == {"dev": 12}
    assert main(["evaluate", str(tmp_path / "m.bitbert"), "--task", "mnli", "--data-dir", str(glue)]) == 2
    assert "file not found" in capsys.readouterr().err
    three = tmp_path / "three.tsv"
    three.write_text("sentence\tlabel\ngood\ta\nbad\tb\nfine\tc\n")
    assert main(["evaluate", str(tmp_path / "m.bitbert"), "--train-file", str(three), "--dev-file", str(three),
                 "--text-columns", "sentence"]) == 2
    err = capsys.readouterr().err
    assert "['neg', 'pos']; the task's classes are ['a', 'b', 'c']" in err and "Traceback" not in err


def _distill_args(tmp_path, teacher, monkeypatch) -> tuple[list[str], list[str]]:
    """``--teacher`` and the tiny custom TSV task for a one-epoch distillation (an untrained head is
    teacher enough for these tests)."""
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    data = ["--train-file", str(tmp_path / "train.tsv"), "--dev-file", str(tmp_path / "dev.tsv"),
            "--text-columns", "sentence", "--label-column", "label", "--epochs", "1", "--batch-size", "8"]
    return ["--teacher", str(teacher)], data


def test_distill_with_augmentation(tmp_path, tiny_teacher, capsys, monkeypatch):
    teacher, data = _distill_args(tmp_path, tiny_teacher, monkeypatch)
    # bibert's recipe has a ground-truth term: the copies' unknown labels must not reach it as garbage
    assert main(["distill", *teacher, *data, "--method", "bibert", "--out", str(tmp_path / "a"), "--augment", "2"]) == 0
    report = json.loads((tmp_path / "a" / "schedule.json").read_text())
    assert report["augment"] == {"copies": 2, "replace_prob": 0.4, "neighbours": 15, "seed": 42}
    stage = report["stages"][0]
    assert 36 / 8 * 2 < stage["steps"] <= 36 * 3 / 8 + 1  # 36 rows and up to 72 copies, batch 8
    # the augmentation is part of what a run computes: a resume with other copies is refused
    capsys.readouterr()
    assert main(["distill", *teacher, *data, "--method", "bibert", "--out", str(tmp_path / "a"), "--augment", "1",
                 "--resume"]) == 2
    assert "augment=" in capsys.readouterr().err
    assert main(["distill", *teacher, *data, "--out", str(tmp_path / "b"), "--augment", "-1"]) == 2
    err = capsys.readouterr().err
    assert "augment copies must be an integer >= 0" in err and "Traceback" not in err


def test_distill_quant_overrides(tmp_path, tiny_teacher, capsys, monkeypatch):
    import bitbert
    from bitbert.quant.layers import QuantLinear

    teacher, data = _distill_args(tmp_path, tiny_teacher, monkeypatch)
    assert main(["distill", *teacher, *data, "--out", str(tmp_path / "a"), "--quant", "binarize_pooler=false"]) == 0
    student = bitbert.load(tmp_path / "a" / "stage0-1-1-1" / "model")
    assert not isinstance(student.bert.pooler.dense, QuantLinear)  # left in full precision, as asked
    assert isinstance(student.bert.encoder.layer[0].attention.self.query, QuantLinear)
    assert json.loads((tmp_path / "a" / "stage0-1-1-1" / "report.json").read_text())["config"][
        "quant_overrides"] == {"binarize_pooler": False}
    capsys.readouterr()
    # an ablation is part of what a run computes: resuming it without the override is refused
    assert main(["distill", *teacher, *data, "--out", str(tmp_path / "a"), "--resume"]) == 2
    assert "quant_overrides=" in capsys.readouterr().err
    # bad overrides fail before any work, with the reason
    for bad, why in (("pooler=false", "is not key=value"), ("ffn_act=gelu", "ffn_act='relu'"),
                     ("act_bits=2", "bits come from --schedule")):
        assert main(["distill", *teacher, *data, "--out", str(tmp_path / "b"), "--quant", bad]) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, err
    assert not (tmp_path / "b").exists()


def test_distill_on_two_processes(tmp_path, tiny_teacher):
    """Data parallel on the CPU (gloo) through torchrun, as ``accelerate launch`` runs it on GPUs: each
    process trains on half the batches, rank 0 alone saves and reports, and no process reads a model
    before it is saved."""
    import bitbert

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), BITBERT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bitbert.cli", "distill", "--teacher", str(tiny_teacher), "--train-file", str(tmp_path / "train.tsv"),
           "--dev-file", str(tmp_path / "dev.tsv"), "--text-columns", "sentence", "--label-column", "label",
           "--epochs", "2", "--batch-size", "8", "--schedule", "1-1-2,1-1-1", "--out", str(tmp_path / "s")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("teacher  dev accuracy") == 1 and proc.stdout.count("stage 2/2") == 1  # from rank 0
    report = json.loads((tmp_path / "s" / "schedule.json").read_text())
    # 36 rows at batch 8 make 5 batches an epoch: 2 for each of the two processes, for 2 epochs
    assert [(s["bits"], s["steps"]) for s in report["stages"]] == [("1-1-2", 4), ("1-1-1", 4)]
    metrics = (tmp_path / "s" / "stage1-1-1-1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics] == [2, 4]  # an evaluation an epoch, written by rank 0 alone
    bitbert.load(tmp_path / "s" / "stage1-1-1-1" / "model")


# --------------------------------------------------------------------------- traps a new user fell into


@pytest.fixture
def distilled(tmp_path, tiny_teacher, capsys, monkeypatch):
    """A 1-1-2 → 1-1-1 run of the tiny custom task: ``.dir`` (tmp_path/run, with student.bitbert)
    and ``.out`` (what it printed)."""
    teacher, data = _distill_args(tmp_path, tiny_teacher, monkeypatch)
    assert main(["distill", *teacher, *data, "--out", str(tmp_path / "run"), "--schedule", "1-1-2,1-1-1"]) == 0
    return SimpleNamespace(dir=tmp_path / "run", out=capsys.readouterr().out)


def test_distill_talks_exports_and_cleans_up(distilled, tmp_path, tiny_teacher, capsys, monkeypatch):
    """A line per phase and epoch on stdout (which a log file keeps, unlike a tqdm bar), rounded
    metrics, the packed student already exported with its size, the command to predict with it, and
    no checkpoint of a finished stage left behind unless asked."""
    out = distilled.out
    assert "stage 1/2: bit student at 1-1-2" in out and "stage 2/2: bit student at 1-1-1" in out
    line = next(l for l in out.splitlines() if l.startswith("stage1-1-1-1 epoch 1/1 step 5/5"))
    assert re.search(r"loss \d+\.\d{4} \| dev accuracy \d+\.\d{2} \| \d+ ex/s \| ETA \d+s$", line), line
    assert "{" not in out and not re.search(r"\d\.\d{5}", out)  # no raw JSON, no unrounded floats
    packed = distilled.dir / "student.bitbert"
    assert packed.is_file() and f"packed student: {packed} ({packed.stat().st_size / 2**20:.2f} MB)" in out
    assert f"bitbert predict {packed} " in out
    assert not list(distilled.dir.rglob("checkpoint.pt")) and "removed the checkpoints" in out
    teacher, data = _distill_args(tmp_path, tiny_teacher, monkeypatch)
    assert main(["distill", *teacher, *data, "--out", str(tmp_path / "kept"), "--keep-checkpoints"]) == 0
    assert (tmp_path / "kept" / "stage0-1-1-1" / "checkpoint.pt").is_file()


def test_default_job_honours_max_steps(tmp_path, monkeypatch, capsys):
    """`bitbert distill --out X --max-steps 1` (the embedded job) stops its teacher, checkpointed,
    and says how to continue, instead of looking for a teacher model that was never saved."""
    import bitbert.cli.app as cli

    base = save_tiny_base(tmp_path / "base")
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    rows = sentiment_rows(lambda positive: int(positive))
    for name in ("train.tsv", "dev.tsv"):
        (sst2 / name).write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(cli, "demo_paths", lambda: (str(base), str(sst2)))
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    assert main(["distill", "--out", str(tmp_path / "x"), "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "teacher: stopped at step 1 of 2" in out and "--resume" in out
    assert (tmp_path / "x" / "teacher" / "checkpoint.pt").is_file()
    assert main(["distill", "--out", str(tmp_path / "x"), "--resume"]) == 0  # then the whole job
    assert (tmp_path / "x" / "student.bitbert").is_file()
    out = capsys.readouterr().out
    assert re.search(r"^time: \d+ min \d+ s \(teacher \d+ s, distillation \d+ s, export \d+ s\)$", out, re.M), out
    assert "for comparison, bit " in out and "docs/training.md says how to run it" in out


def test_default_job_trains_with_its_recipe(tmp_path, monkeypatch):
    """The embedded job's teacher and student run with `DEFAULT_JOB`'s settings (what the docs and
    the timings quote), on a tiny model: one teacher step, one student step."""
    import bitbert.cli.app as cli
    from bitbert.training.default_job import DEFAULT_JOB

    base = save_tiny_base(tmp_path / "base")
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    rows = sentiment_rows(lambda positive: int(positive))[:DEFAULT_JOB.batch_size + 1]  # header + one batch
    for name in ("train.tsv", "dev.tsv"):
        (sst2 / name).write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(cli, "demo_paths", lambda: (str(base), str(sst2)))
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    assert main(["distill", "--out", str(tmp_path / "x")]) == 0
    teacher = json.loads((tmp_path / "x" / "teacher" / "report.json").read_text())["config"]
    assert (teacher["epochs"], teacher["lr"], teacher["batch_size"]) == (
        DEFAULT_JOB.teacher_epochs, DEFAULT_JOB.teacher_lr, DEFAULT_JOB.teacher_batch_size)
    schedule = json.loads((tmp_path / "x" / "schedule.json").read_text())
    assert ",".join(schedule["schedule"]) == DEFAULT_JOB.schedule and schedule["method"] == "bit"
    stage = json.loads((tmp_path / "x" / f"stage0-{DEFAULT_JOB.schedule}" / "report.json").read_text())["config"]
    assert (stage["epochs"], stage["lr"], stage["batch_size"]) == (DEFAULT_JOB.epochs, DEFAULT_JOB.lr,
                                                                   DEFAULT_JOB.batch_size)


def test_predict_takes_options_anywhere_names_classes_and_echoes(distilled, capsys):
    assert main(["predict", str(distilled.dir / "student.bitbert"), "--threads", "1", "a good movie", "--batch-size",
                 "2", "the plot was awful"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a good movie", "the plot was awful"]
    assert all(r["label"] in ("neg", "pos") and set(r["scores"]) == {"neg", "pos"} for r in rows)


def test_predict_takes_a_folder_or_says_what_it_expected(distilled, tmp_path, capsys):
    assert main(["predict", str(distilled.dir / "student.bitbert"), "good"]) == 0
    expected = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    for folder in (distilled.dir, distilled.dir / "stage1-1-1-1" / "model"):  # a run's folder, a model directory
        assert main(["predict", str(folder), "good"]) == 0
        assert [json.loads(l) for l in capsys.readouterr().out.splitlines()] == expected, folder
    assert main(["predict", str(distilled.dir / "stage1-1-1-1"), "good"]) == 2
    err = capsys.readouterr().err
    assert "without a packed .bitbert file or a bitbert.save model" in err and "Traceback" not in err


def test_glue_class_names_reach_the_packed_file(tmp_path, tiny_teacher, capsys, monkeypatch):
    """SST-2's files say 0/1; a model trained on it names its classes negative/positive."""
    from bitbert.tasks import get_task
    from bitbert.training.classifier import load_classifier

    model = load_classifier(str(tiny_teacher), get_task("sst2"))
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_evaluate_sst2_without_data_dir_uses_the_bundled_copy(distilled, tmp_path, capsys):
    """The bundled SST-2 scores a student whose classes are SST-2's; the tiny task's neg/pos student
    is refused (its classes cannot be matched to negative/positive by name), not scored by count."""
    assert main(["evaluate", str(distilled.dir / "student.bitbert"), "--task", "sst2", "--threads", "1"]) == 2
    assert "cannot be matched by name" in capsys.readouterr().err
    model = tmp_path / "sst2-student"
    shutil.copytree(distilled.dir / "stage1-1-1-1" / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "negative", "1": "positive"}, {"negative": 0, "positive": 1}
    (model / "config.json").write_text(json.dumps(config))
    assert main(["export", str(model), str(tmp_path / "sst2.bitbert")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "sst2.bitbert"), "--task", "sst2", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["examples"] == {"dev": 872} and "bundled with bitbert" in captured.err


def test_bench_without_out_prints_the_table(capsys):
    assert main(["bench", "--shape", "tiny", "--batch-sizes", "1", "--threads", "1", "--repeats", "1",
                 "--no-torch", "--seq-len", "16"]) == 0
    assert "| threads | batch | packed engine |" in capsys.readouterr().out


def test_help_and_dir_list_the_api_without_importing_torch():
    code = ("import sys, pydoc, bitbert; assert 'torch' not in sys.modules; "
            "names = ['binarize', 'calibrate', 'summary', 'save', 'load', 'export', 'load_packed']; "
            "assert set(names) <= set(dir(bitbert)), dir(bitbert); "
            "text = pydoc.render_doc(bitbert, renderer=pydoc.plaintext); "
            "missing = [n for n in names if '    ' + n + '(' not in text]; assert not missing, missing")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(root)))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_new_head_is_not_reported_as_missing_but_a_lost_weight_is(tmp_path, capsys, caplog):
    """transformers' LOAD REPORT calls a fresh classifier MISSING (expected); a checkpoint that lacks
    an encoder weight must still be reported."""
    from safetensors.torch import load_file, save_file
    from transformers import BertModel

    from bitbert.tasks import get_task
    from bitbert.training.classifier import load_classifier
    from conftest import tiny_bert_config

    encoder = tmp_path / "encoder"
    BertModel(tiny_bert_config()).save_pretrained(encoder)  # no classification head
    with caplog.at_level("INFO", logger="bitbert"):
        load_classifier(str(encoder), get_task("sst2"))
    captured = capsys.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and "MISSING" not in captured.out + captured.err
    assert "new classification head" in caplog.text and "initialised at random" not in caplog.text
    weights = load_file(encoder / "model.safetensors")
    lost = next(k for k in weights if "layer.1.output.dense.weight" in k)
    del weights[lost]
    save_file(weights, encoder / "model.safetensors", metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level("INFO", logger="bitbert"):
        load_classifier(str(encoder), get_task("sst2"))
    assert "initialised at random" in caplog.text and "layer.1.output.dense.weight" in caplog.text


def test_predict_without_a_model_uses_the_shipped_one(distilled, monkeypatch, capsys):
    """`bitbert predict "text"` classifies with the shipped model; a first word that names a file
    (or ends in .bitbert) is a model, so a mistyped model path is an error, not a text."""
    import bitbert.deploy.shipped as shipped

    monkeypatch.setattr(shipped, "SHIPPED_MODEL", distilled.dir / "student.bitbert")
    monkeypatch.setattr(shipped, "SHIPPED_SHA256", "")
    assert main(["predict", "a good movie", "the plot was awful"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a good movie", "the plot was awful"]
    assert all(r["label"] in ("neg", "pos") for r in rows)
    assert main(["predict", "runs/mistyped.bitbert", "good"]) == 2
    err = capsys.readouterr().err
    assert "mistyped.bitbert" in err and "Traceback" not in err
    monkeypatch.setattr(shipped, "SHIPPED_SHA256", "0" * 64)  # a swapped file is refused
    assert main(["predict", "good"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setattr(shipped, "SHIPPED_MODEL", distilled.dir / "absent.bitbert")
    assert main(["predict", "good"]) == 2
    assert "shipped SST-2 model is missing" in capsys.readouterr().err


def test_command_modules_do_not_import_the_cli():
    """cli/app.py adds the other command modules' subcommands; none of them imports it (or the package) back."""
    import ast
    from pathlib import Path

    import bitbert

    root = Path(bitbert.__file__).parent / "cli"
    for name in ("common", "deploy", "pretrain", "augment"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {(node.level, node.module) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {(1, "app"), (1, None), (0, "bitbert.cli"), (0, "bitbert.cli.app"), (2, "cli")}, name


def test_distill_a_pair_task_widens_the_first_layers(tmp_path, tiny_teacher, capsys, monkeypatch):
    """Two text columns: the student's first layers run 4-bit activations (QuantConfig.early_layers),
    the report says so, and the packed engine runs the result."""
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    rows = [r.split("\t") for r in sentiment_rows(lambda positive: "pos" if positive else "neg")[1:]]
    pairs = ["a\tb\tlabel"] + [f"{s}\t{s if i % 2 else rows[(i + 3) % len(rows)][0]}\t{i % 2}"
                               for i, (s, _) in enumerate(rows)]
    (tmp_path / "pairs.tsv").write_text("\n".join(pairs) + "\n")
    data = ["--train-file", str(tmp_path / "pairs.tsv"), "--dev-file", str(tmp_path / "pairs.tsv"),
            "--text-columns", "a", "b", "--label-column", "label"]
    assert main(["distill", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"), *data,
                 "--epochs", "1", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "precision: 1-1-1 (first 2 layers A4)" in out and "early_layers=0" in out
    # a small pair task without augmented data is told how to make some, with its own data flags
    assert "36 training pairs and no augmented data" in out
    assert f"bitbert augment --train-file {tmp_path / 'pairs.tsv'} --text-columns a b --label-column label" in out
    assert f"--embeddings {tiny_teacher}" in out
    cfg = json.loads((tmp_path / "s" / "stage0-1-1-1" / "model" / "config.json").read_text())["bitbert"]
    assert (cfg["early_layers"], cfg["early_act_bits"]) == (2, 4)
    (tmp_path / "ask.jsonl").write_text(json.dumps({"text": "a fine movie", "text_b": "a fine movie"}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "s" / "student.bitbert"), "--input", str(tmp_path / "ask.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] in ("0", "1")
