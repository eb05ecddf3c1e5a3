"""Safe to resume, safe to mistype: each defect a careless or hostile user found (issue 27) has a test
named after it. Tiny random models; the command line where the defect was in the command line."""
import json
import math
import os
import stat

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

import bitbert
from bitbert.cli import main
from bitbert.core.atomic import WriteError, atomic_write
from bitbert.core.validate import SettingError
from bitbert.tasks import DataError, load_custom
from bitbert.training import rundir
from bitbert.training.distill import run_schedule
from bitbert.training.task_data import load_task_data
from bitbert.training.train import TrainConfig, TrainingDiverged, train
from conftest import save_tiny_base, tiny_bert_config
from test_cli import tiny_teacher  # noqa: F401 (a fixture)
from test_distill import CFG, tiny_task


def data_args(tmp_path, train="train.tsv"):
    return ["--train-file", str(tmp_path / train), "--dev-file", str(tmp_path / "dev.tsv"), "--text-columns", "sentence"]


def error_line(capsys) -> str:
    """The one error line on stderr (log lines aside); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- resume identity
def test_resume_with_another_teacher_is_refused(tmp_path):
    """A finished stage was reused by a resume with another teacher ("stage already finished")."""
    data = tiny_task()
    torch.manual_seed(0)
    teacher_a = BertForSequenceClassification(tiny_bert_config()).eval()
    teacher_b = BertForSequenceClassification(tiny_bert_config()).eval()
    run_schedule(teacher_a, data, "bit", "1-1-1", CFG.replace(epochs=1), tmp_path / "r")
    with pytest.raises(bitbert.ConfigError, match=r"teacher='sha256:\w+' there, 'sha256:\w+' now"):
        run_schedule(teacher_b, data, "bit", "1-1-1", CFG.replace(epochs=1), tmp_path / "r", resume=True)
    # the same teacher and data: the finished stage is reused
    again = run_schedule(teacher_a, data, "bit", "1-1-1", CFG.replace(epochs=1), tmp_path / "r", resume=True)
    assert again.stages[0].report.finished


def test_resume_with_other_data_is_refused(tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config()).eval()
    run_schedule(teacher, tiny_task(seed=0), "bit", "1-1-1", CFG.replace(max_steps=2), tmp_path / "r")
    with pytest.raises(bitbert.ConfigError, match="train_data="):
        run_schedule(teacher, tiny_task(seed=1), "bit", "1-1-1", CFG, tmp_path / "r", resume=True)


def test_fresh_run_into_used_out_is_refused_unless_overwrite(tmp_path, tiny_teacher, capsys):
    run = ["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), *data_args(tmp_path),
           "--epochs", "1", "--batch-size", "8"]
    assert main(run) == 0
    capsys.readouterr()
    assert main(run) == 2
    line = error_line(capsys)
    assert "already holds a run" in line and "--overwrite" in line and "--resume" in line
    stale = tmp_path / "t" / "model" / "stale.txt"
    stale.write_text("from the first run")
    assert main([*run, "--overwrite"]) == 0
    assert not stale.exists() and (tmp_path / "t" / "model" / "model.safetensors").is_file()
    # the library refuses too: a fresh run never mixes with the one already there
    with pytest.raises(rundir.RunDirError, match="already holds a run"):
        rundir.claim(tmp_path / "t", {}, resume=False)


def test_resume_of_finetune_with_another_model_is_refused(tmp_path, tiny_teacher, capsys):
    run = ["finetune", "--out", str(tmp_path / "t"), *data_args(tmp_path), "--epochs", "1", "--batch-size", "8",
           "--max-steps", "2"]
    assert main([*run, "--model", str(tiny_teacher)]) == 0
    other = save_tiny_base(tmp_path / "other")
    torch.manual_seed(1)
    BertForSequenceClassification(tiny_bert_config(vocab_size=21)).save_pretrained(other)
    capsys.readouterr()
    assert main([*run, "--model", str(other), "--resume"]) == 2
    assert "model=" in error_line(capsys)
    assert main([*run, "--model", str(tiny_teacher), "--resume"]) == 0  # the same run continues


def test_orphaned_temp_files_are_removed_on_start(tmp_path):
    stage = tmp_path / "r" / "stage0-1-1-1"
    stage.mkdir(parents=True)
    orphan = stage / ".checkpoint.pt.1a2b3c4d.tmp"
    orphan.write_bytes(b"\0" * 1000)
    keep = stage / "notes.tmp"  # not a name atomic_write makes
    keep.write_text("mine")
    run_schedule(BertForSequenceClassification(tiny_bert_config()).eval(), tiny_task(), "bit", "1-1-1",
                 CFG.replace(max_steps=1), tmp_path / "r")
    assert not orphan.exists() and keep.exists()


def test_resume_has_no_duplicate_metrics_rows_nor_restarted_loss_average(tmp_path, monkeypatch):
    data = tiny_task()
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config()).eval()
    cfg = CFG.replace(log_every=1)
    run_schedule(teacher, data, "bit", "1-1-1", cfg, tmp_path / "a")

    import bitbert.training.distill as D

    def kill_at_6(step):  # the last checkpoint is at step 4: steps 5 and 6 are logged, then lost
        if step == 6:
            raise InterruptedError("killed")

    with monkeypatch.context() as m:
        m.setattr(D, "train", lambda *a, **k: train(*a, **k, on_step=kill_at_6))
        with pytest.raises(InterruptedError):
            run_schedule(teacher, data, "bit", "1-1-1", cfg, tmp_path / "b")
    run_schedule(teacher, data, "bit", "1-1-1", cfg, tmp_path / "b", resume=True)

    def rows(run):
        return [json.loads(ln) for ln in (tmp_path / run / "stage0-1-1-1" / "metrics.jsonl").read_text().splitlines()]

    straight, resumed = rows("a"), rows("b")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]  # no step twice
    assert [r.get("train/loss") for r in resumed] == [r.get("train/loss") for r in straight]


# --------------------------------------------------------------------------- numbers at the door
@pytest.mark.parametrize("field,value", [
    ("lr", math.nan), ("lr", -1.0), ("lr", 0.0), ("epochs", -1.0), ("epochs", 0.0), ("epochs", math.inf),
    ("max_steps", -1), ("seed", -1), ("seed", 2**40), ("max_length", 0), ("batch_size", 0),
    ("warmup_ratio", 1.0), ("schedule", ""), ("quant_lr", math.nan), ("max_grad_norm", math.inf)])
def test_invalid_numbers_are_refused_at_the_door(field, value):
    with pytest.raises(SettingError, match=f"^{field} ") as e:
        TrainConfig(**{field: value})
    assert e.value.flag == "--" + field.replace("_", "-")


@pytest.mark.parametrize("flag,value", [("--lr", "nan"), ("--lr", "-1"), ("--epochs", "-1"), ("--epochs", "0"),
                                        ("--epochs", "inf"), ("--max-steps", "-1"), ("--max-length", "0"),
                                        ("--seed", "-1"), ("--max-train-examples", "-1"), ("--batch-size", "0")])
def test_cli_invalid_numbers_are_one_line_errors_before_any_work(tmp_path, tiny_teacher, capsys, flag, value):
    out = tmp_path / "t"
    code = main(["finetune", "--model", str(tiny_teacher), "--out", str(out), *data_args(tmp_path), flag, value])
    assert code == 2
    assert f"argument {flag}:" in error_line(capsys)
    assert not rundir.recorded_runs(out)


def test_empty_distillation_schedule_is_refused(tmp_path, tiny_teacher, capsys):
    assert main(["distill", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"), *data_args(tmp_path),
                 "--schedule", ""]) == 2
    assert "schedule" in error_line(capsys)


def test_regression_label_beyond_float32_is_refused(tmp_path):
    path = tmp_path / "scores.tsv"
    path.write_text("sentence\tscore\na fine film\t0.5\nan awful one\t1e39\n")
    with pytest.raises(DataError, match=r"scores.tsv:3: .*float32"):
        load_custom(path, ["sentence"], "score", regression=True)


def test_max_length_beyond_positions_is_capped_with_a_note(tmp_path, tiny_teacher, capsys):
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), *data_args(tmp_path),
                 "--epochs", "1", "--batch-size", "8", "--max-length", "512"]) == 0
    out = capsys.readouterr()
    assert "--max-length 512 exceeds the 64 positions" in out.out + out.err
    # the library refuses data longer than the model's positions before training, not after an epoch
    data = tiny_task()
    with pytest.raises(SettingError, match="must be <= the model's 8 positions"):
        data.check_fits(tiny_bert_config(max_position_embeddings=8))


class _DivergingLoss:
    """A plain classification loss that turns NaN from step ``at`` on."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, model, batch):
        self.calls += 1
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
        return loss * math.nan if self.calls >= self.at else loss


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    data = tiny_task()
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config())
    cfg = CFG.replace(eval_every=2, log_every=100)
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite.*checkpoint.pt at step 4"):
        train(model, _DivergingLoss(at=6), data.train_batches(8, 1), None, cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (tmp_path / "run" / "report.json").exists()


def test_cli_nan_loss_exits_nonzero(tmp_path, tiny_teacher, capsys, monkeypatch):
    import bitbert.training.finetune as F

    monkeypatch.setattr(F, "supervised_loss", lambda spec: _DivergingLoss(at=1))
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), *data_args(tmp_path),
                 "--epochs", "1", "--batch-size", "8"]) == 2
    assert "NaN or infinite" in error_line(capsys)
    assert not (tmp_path / "t" / "model").exists()


# --------------------------------------------------------------------------- one error style
def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda p: p.write_text("{}"))
        bitbert.save(BertForSequenceClassification(tiny_bert_config()), tmp_path / "m")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize("problem", ["file", "under_a_file", "full"])
def test_output_dir_problems_are_found_before_any_work(tmp_path, tiny_teacher, capsys, monkeypatch, problem):
    import bitbert.training.task_data

    (tmp_path / "afile").write_text("x")
    out = {"file": tmp_path / "afile", "under_a_file": tmp_path / "afile" / "run", "full": tmp_path / "o"}[problem]
    if problem == "full":
        monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: type("U", (), {"free": 10 * 2**20})())
    monkeypatch.setattr(bitbert.training.task_data, "load_task_data", lambda *a, **k: pytest.fail("work began"))
    for cmd in (["finetune", "--model"], ["distill", "--teacher"]):
        assert main([*cmd, str(tiny_teacher), "--out", str(out), *data_args(tmp_path)]) == 2
        line = error_line(capsys)
        assert str(out) in line and ("not a folder" in line or "cannot write" in line or "MiB free" in line), line


def test_disk_full_while_writing_names_the_file(tmp_path, monkeypatch):
    import errno

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=r"cannot write .*x.json: No space left on device"):
        atomic_write(tmp_path / "x.json", full)
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_truncated_checkpoint_on_resume_is_one_line(tmp_path, tiny_teacher, capsys):
    run = ["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), *data_args(tmp_path),
           "--epochs", "1", "--batch-size", "8", "--max-steps", "2"]
    assert main(run) == 0
    ckpt = tmp_path / "t" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    capsys.readouterr()
    assert main([*run, "--resume"]) == 2
    line = error_line(capsys)
    assert str(ckpt) in line and "unreadable checkpoint" in line


def test_corrupt_report_json_names_the_file(tmp_path):
    data = tiny_task()
    teacher = BertForSequenceClassification(tiny_bert_config()).eval()
    run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(epochs=1), tmp_path / "r")
    report = tmp_path / "r" / "stage0-1-1-1" / "report.json"
    report.write_text('{"main_metric": "accuracy", "hist')
    with pytest.raises(rundir.RunDirError, match=f"{report}: corrupt run record"):
        run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(epochs=1), tmp_path / "r", resume=True)


def test_deeply_nested_jsonl_is_a_data_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"sentence": "ok", "label": "a"}\n' + '{"sentence": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match=r"deep.jsonl:2: JSON nested too deeply"):
        load_custom(path, ["sentence"], "label")


def test_summary_seq_len_zero_is_one_line(capsys):
    assert main(["summary", "tiny", "--seq-len", "0"]) == 2
    assert "argument --seq-len:" in error_line(capsys)


def test_regression_from_a_two_label_checkpoint_is_one_line(tmp_path, tiny_teacher, capsys):
    (tmp_path / "s.tsv").write_text("sentence\tscore\n" + "".join(f"good movie {i}\t{i / 7}\n" for i in range(8)))
    (tmp_path / "dev.tsv").write_text((tmp_path / "s.tsv").read_text())
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), "--train-file",
                 str(tmp_path / "s.tsv"), "--dev-file", str(tmp_path / "dev.tsv"), "--text-columns", "sentence",
                 "--label-column", "score", "--regression"]) == 2
    line = error_line(capsys)
    assert "classification head of 2 outputs" in line and "regression" in line


@pytest.mark.parametrize("args,flag", [
    (["predict", "m.bitbert", "text", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "m", "--task", "sst2", "--batch-size", "0"], "--batch-size"),
])
def test_cli_batch_size_zero_names_the_argument(tmp_path, capsys, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    if args[0] == "evaluate":  # a model folder to get as far as the evaluator
        save_tiny_base(tmp_path / "m")
        (tmp_path / "SST-2").mkdir()
        for split in ("train", "dev"):
            (tmp_path / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\na good film\t1\na bad one\t0\n")
        args = [*args, "--data-dir", str(tmp_path)]
    assert main(args) == 2
    assert f"argument {flag}:" in error_line(capsys)


def test_predict_non_utf8_input_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"a fine film\nan \xff\xfe awful one\n")
    assert main(["predict", str(tmp_path / "m.bitbert"), "--input", str(path)]) == 2
    assert f"{path}:2: not valid UTF-8" in error_line(capsys)


def test_missing_task_is_exit_code_2(tmp_path, tiny_teacher, capsys):
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t")]) == 2
    assert "argument --task" in error_line(capsys)


# --------------------------------------------------------------------------- data and flags
def test_single_class_training_set_is_refused(tmp_path):
    (tmp_path / "one.tsv").write_text("sentence\tlabel\na film\tpos\nanother\tpos\n")
    with pytest.raises(DataError, match="one.tsv: every training example has label 'pos'"):
        load_custom(tmp_path / "one.tsv", ["sentence"], "label")


@pytest.mark.parametrize("extra,flag", [(["--task", "sst2"], "--task"), (["--data-dir", "glue"], "--data-dir")])
def test_custom_task_flags_conflicting_with_glue_are_refused(tmp_path, tiny_teacher, capsys, extra, flag):
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), *data_args(tmp_path),
                 *extra]) == 2
    assert f"argument {flag}:" in error_line(capsys)


def test_regression_with_a_glue_task_is_refused(tmp_path, tiny_teacher, capsys):
    assert main(["finetune", "--model", str(tiny_teacher), "--out", str(tmp_path / "t"), "--task", "sst2",
                 "--data-dir", str(tmp_path), "--regression"]) == 2
    assert "argument --regression:" in error_line(capsys)


def test_label_column_equal_to_a_text_column_is_refused(tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\na film\tpos\nanother\tneg\n")
    with pytest.raises(ValueError, match="label column 'sentence' is also a text column"):
        load_custom(tmp_path / "t.tsv", ["sentence"], "sentence")


def test_large_tsv_field_is_read(tmp_path):
    big = "word " * 1_000_000  # 5 MB in one field
    (tmp_path / "big.tsv").write_text(f"sentence\tlabel\n{big}\tpos\nshort\tneg\n")
    spec, examples = load_custom(tmp_path / "big.tsv", ["sentence"], "label")
    assert len(examples.texts_a[0]) == len(big)


@pytest.mark.parametrize("scores", [[f"{i / 10:.1f}" for i in range(12)], [str(i) for i in range(40)],
                                    ["1", "1.00", "0", "0.0"]])
def test_numeric_label_column_without_regression_suggests_it(tmp_path, scores):
    path = tmp_path / "scores.tsv"
    path.write_text("sentence\tscore\n" + "".join(f"film {i}\t{s}\n" for i, s in enumerate(scores)))
    with pytest.raises(DataError, match="pass --regression"):
        load_custom(path, ["sentence"], "score")
    # a few integer classes stay classes
    path.write_text("sentence\tstars\n" + "".join(f"film {i}\t{i % 5 + 1}\n" for i in range(20)))
    spec, _ = load_custom(path, ["sentence"], "stars")
    assert spec.labels == ("1", "2", "3", "4", "5")


def test_subsampling_follows_the_seed(tmp_path, tiny_teacher):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_teacher)
    kw = dict(train_file=tmp_path / "train.tsv", dev_file=tmp_path / "dev.tsv", text_columns=["sentence"],
              max_train_examples=10)
    first = [load_task_data(None, tok, 32, seed=s, **kw).train.input_ids for s in (1, 1, 2)]
    same = all(np.array_equal(a, b) for a, b in zip(first[0], first[1]))
    differ = not all(np.array_equal(a, b) for a, b in zip(first[0], first[2]))
    assert same and differ
