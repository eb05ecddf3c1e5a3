"""Task registry, file readers, their error messages, and the metrics."""
from __future__ import annotations

import gzip
import json
import lzma
import sys
from pathlib import Path

import numpy as np
import pytest

from bitbert.tasks import (GLUE_TASKS, DataError, Examples, TaskSpec, get_task, load_custom, load_glue,
                           load_glue_hub, load_split)
from bitbert.tasks.metrics import compute_metrics, main_metric

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"{GLUE_DIR} not available")


def write(path: Path, rows: list[str], opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        f.write("".join(row + "\n" for row in rows))
    return path


def tsv(*fields: str) -> str:
    return "\t".join(fields)


# --------------------------------------------------------------------------- GLUE layouts
MNLI_TRAIN_HEADER = tsv("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                        "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                        "sentence1", "sentence2", "label1", "gold_label")
MNLI_DEV_HEADER = tsv("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                      "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                      "sentence2", "label1", "label2", "label3", "label4", "label5", "gold_label")


def mnli_row(premise: str, hypothesis: str, label: str, dev: bool) -> str:
    votes = [label] * (5 if dev else 1)
    return tsv("0", "1", "1e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", premise, hypothesis,
               *votes, label)


# task -> (file name, lines, first texts_a, first texts_b, labels)
GLUE_FILES = {
    "cola": ("train.tsv", [tsv("gj04", "1", "", "Our friends won't buy this."),
                           tsv("gj04", "0", "*", "They drank the pub.")],
             "Our friends won't buy this.", None, [1, 0]),
    "sst2": ("train.tsv", ["sentence\tlabel", tsv('it \'s a "charming" film ', "1"), tsv("dull", "0")],
             'it \'s a "charming" film ', None, [1, 0]),
    "mrpc": ("train.tsv", ["\ufeff" + tsv("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                           tsv("1", "702876", "702977", 'He said "hi".', "He greeted."),
                           tsv("0", "2108705", "2108831", "A cat.", "A dog.")],
             'He said "hi".', "He greeted.", [1, 0]),
    "stsb": ("train.tsv", [tsv("index", "genre", "filename", "year", "old_index", "source1", "source2",
                               "sentence1", "sentence2", "score"),
                           tsv("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                               "A plane is taking off.", "An air plane is taking off.", "5.000"),
                           tsv("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none",
                               "A man plays a flute.", "A man plays a bamboo flute.", "3.800")],
             "A plane is taking off.", "An air plane is taking off.", [5.0, 3.8]),
    "qqp": ("train.tsv", [tsv("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                          tsv("133273", "213221", "213222", 'How is "life"?', "How is life?", "1"),
                          tsv("402555", "536040", "536041", "Why?", "Why not?", "0")],
            'How is "life"?', "How is life?", [1, 0]),
    "mnli": ("train.tsv", [MNLI_TRAIN_HEADER, mnli_row("P one.", "H one.", "neutral", dev=False),
                           mnli_row("P two.", "H two.", "contradiction", dev=False)],
             "P one.", "H one.", [2, 0]),
    "qnli": ("train.tsv", [tsv("index", "question", "sentence", "label"),
                           tsv("0", "Who?", "Him.", "entailment"), tsv("1", "What?", "No.", "not_entailment")],
             "Who?", "Him.", [0, 1]),
    "rte": ("train.tsv", [tsv("index", "sentence1", "sentence2", "label"),
                          tsv("0", "A is B.", "B is A.", "not_entailment"), tsv("1", "C.", "C.", "entailment")],
            "A is B.", "B is A.", [1, 0]),
    "wnli": ("train.tsv", [tsv("index", "sentence1", "sentence2", "label"),
                           tsv("0", "I stuck a pin.", "The pin had a hole.", "1"), tsv("1", "X.", "Y.", "0")],
             "I stuck a pin.", "The pin had a hole.", [1, 0]),
}


def test_registry_covers_glue():
    assert set(GLUE_TASKS) == set(GLUE_FILES)
    assert get_task("SST-2") is get_task("sst-2") is get_task("sst2") is GLUE_TASKS["sst2"]
    assert get_task("STS-B").is_regression and get_task("stsb").num_labels == 1
    assert get_task("MNLI").num_labels == 3 and get_task("mnli").dev_splits == ("dev_matched", "dev_mismatched")
    with pytest.raises(DataError, match="unknown task 'sst3'.*sst2"):
        get_task("sst3")


@pytest.mark.parametrize("task", sorted(GLUE_FILES))
def test_glue_reader_layouts(tmp_path, task):
    name, rows, text_a, text_b, labels = GLUE_FILES[task]
    write(tmp_path / name, rows)
    ex = load_glue(task.upper(), tmp_path, "train")
    assert isinstance(ex, Examples) and len(ex) == len(labels)
    assert ex.texts_a[0] == text_a
    assert (ex.texts_b[0] if ex.texts_b is not None else None) == text_b
    spec = get_task(task)
    assert ex.labels.dtype == (np.float32 if spec.is_regression else np.int64)
    np.testing.assert_allclose(ex.labels, labels, rtol=1e-6)
    assert ex.source == str(tmp_path / name)


def test_mnli_dev_splits(tmp_path):
    write(tmp_path / "dev_matched.tsv", [MNLI_DEV_HEADER, mnli_row("M.", "m.", "entailment", dev=True)])
    write(tmp_path / "dev_mismatched.tsv", [MNLI_DEV_HEADER, mnli_row("X.", "x.", "neutral", dev=True),
                                            mnli_row("Y.", "y.", "contradiction", dev=True)])
    matched = load_glue("mnli", tmp_path, "dev_matched")
    mismatched = load_glue("mnli", tmp_path, "validation_mismatched")
    assert matched.texts_a == ["M."] and matched.labels.tolist() == [1]
    assert mismatched.texts_b == ["x.", "y."] and mismatched.labels.tolist() == [2, 0]
    with pytest.raises(DataError, match="valid splits: train, dev_matched, dev_mismatched"):
        load_glue("mnli", tmp_path, "dev")


@pytest.mark.parametrize("ext,opener", [(".gz", gzip.open), (".xz", lzma.open)])
def test_compressed_files_and_glue_root(tmp_path, ext, opener):
    write(tmp_path / "SST-2" / f"dev.tsv{ext}", ["sentence\tlabel", "good\t1"], opener)
    for data_dir in (tmp_path / "SST-2", tmp_path):  # the task folder or the glue_data root
        ex = load_glue("sst2", data_dir, "dev")
        assert ex.texts_a == ["good"] and ex.labels.tolist() == [1]


@needs_glue
@pytest.mark.parametrize("task,folder,split,n", [("sst2", "SST-2", "dev", 872), ("MRPC", "MRPC", "dev", 408),
                                                  ("CoLA", "CoLA", "dev", 1043)])
def test_real_glue_dev(task, folder, split, n):
    ex = load_glue(task, GLUE_DIR / folder, split)
    assert len(ex) == n and set(ex.labels.tolist()) == {0, 1}
    assert (ex.texts_b is not None) == get_task(task).is_pair
    assert all(ex.texts_a)


# --------------------------------------------------------------------------- errors
def test_missing_file_lists_directory(tmp_path):
    write(tmp_path / "train.tsv", ["sentence\tlabel", "a\t1"])
    with pytest.raises(DataError) as err:
        load_glue("sst2", tmp_path, "dev")
    assert "dev.tsv" in str(err.value) and "train.tsv" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_glue("sst2", tmp_path / "nope", "dev")


def expect_error(path: Path, line: int | None, *fragments: str):
    """Context manager: a DataError naming ``path`` (and ``line``) and containing ``fragments``."""
    class Check:
        def __enter__(self):
            self.raises = pytest.raises(DataError)
            self.info = self.raises.__enter__()

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            message = str(self.info.value)
            where = f"{path.name}:{line}:" if line is not None else path.name
            assert where in message, message
            for fragment in fragments:
                assert fragment in message, message
            return handled
    return Check()


SST2_SPEC = GLUE_TASKS["sst2"]


def test_error_wrong_column_count(tmp_path):
    path = write(tmp_path / "dev.tsv", ["sentence\tlabel", "ok\t1", "too\tmany\t1"])
    with expect_error(path, 3, "expected 2", "found 3"):
        load_split(SST2_SPEC, path)


def test_error_unknown_label_lists_valid(tmp_path):
    path = write(tmp_path / "dev.tsv", ["sentence\tlabel", "ok\t1", "ok\t1", "bad\tpositive"])
    with expect_error(path, 4, "'positive'", "['0', '1']"):
        load_split(SST2_SPEC, path)


def test_error_non_numeric_regression_label(tmp_path):
    spec = get_task("stsb")
    header, row = GLUE_FILES["stsb"][1][:2]
    path = write(tmp_path / "dev.tsv", [header, row, row.replace("5.000", "high")])
    with expect_error(path, 3, "'high'", "not a finite number"):
        load_split(spec, path)


def test_error_empty_split(tmp_path):
    path = write(tmp_path / "dev.tsv", ["sentence\tlabel"])
    with expect_error(path, None, "no examples"):
        load_split(SST2_SPEC, path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with expect_error(empty, None, "no examples"):
        load_custom(empty, ["text"], "label")


def test_error_wrong_column_name_lists_columns(tmp_path):
    path = write(tmp_path / "dev.tsv", ["text\tlabel", "a\t1"])
    with expect_error(path, 1, "['sentence']", "['text', 'label']"):
        load_split(SST2_SPEC, path)
    jpath = write(tmp_path / "d.jsonl", [json.dumps({"text": "a", "label": "x"}), json.dumps({"txt": "b"})])
    with expect_error(jpath, 2, "['text', 'label']", "['txt']"):
        load_custom(jpath, ["text"], "label")


def test_error_bad_json(tmp_path):
    path = write(tmp_path / "train.jsonl", [json.dumps({"text": "a", "label": "x"}), '{"text": "b", "label":'])
    with expect_error(path, 2, "invalid JSON"):
        load_custom(path, ["text"], "label")
    path = write(tmp_path / "list.jsonl", ['["a", "x"]'])
    with expect_error(path, 1, "JSON object"):
        load_custom(path, ["text"], "label")


def test_error_bad_encoding_and_csv(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(b"sentence\tlabel\nok\t1\nbad \xff\t0\n")
    with expect_error(path, 3, "UTF-8"):
        load_split(SST2_SPEC, path)
    path = write(tmp_path / "t.csv", ["text,label", "ok,a", '"unterminated,a'])
    with expect_error(path, 3, "expected 2"):  # the open quote swallows the rest of the file as one field
        load_custom(path, ["text"], "label")


def test_error_unsupported_extension(tmp_path):
    path = write(tmp_path / "train.txt", ["a\t1"])
    with expect_error(path, None, ".tsv, .csv or .jsonl"):
        load_custom(path, ["text"], "label")


# --------------------------------------------------------------------------- custom files
def custom_rows(fmt: str, pair: bool, labels: list) -> list[str]:
    columns = ["text", "other", "y"] if pair else ["text", "y"]
    values = [[f'say "{i}", ok', f"b{i}"][:len(columns) - 1] + [label] for i, label in enumerate(labels)]
    if fmt == "jsonl":
        return [json.dumps(dict(zip(columns, v))) for v in values]
    if fmt == "tsv":
        return ["\t".join(columns)] + ["\t".join(map(str, v)) for v in values]
    quote = lambda s: '"' + str(s).replace('"', '""') + '"'  # noqa: E731
    return [",".join(columns)] + [",".join(quote(x) for x in v) for v in values]


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("regression", [False, True])
def test_custom_formats(tmp_path, fmt, pair, regression):
    train_labels = [0.5, 2.0, 1.25] if regression else ["pos", "neg", "pos"]
    path = write(tmp_path / f"train.{fmt}", custom_rows(fmt, pair, train_labels))
    text_columns = ["text", "other"] if pair else ["text"]
    spec, ex = load_custom(path, text_columns, "y", regression=regression)
    assert spec.is_regression == regression and spec.is_pair == pair
    assert ex.texts_a[0] == 'say "0", ok'
    assert (ex.texts_b == ["b0", "b1", "b2"]) if pair else ex.texts_b is None
    if regression:
        assert spec.metric == "pearson_spearman" and ex.labels.dtype == np.float32
        np.testing.assert_allclose(ex.labels, train_labels)
    else:
        assert spec.labels == ("neg", "pos") and ex.labels.tolist() == [1, 0, 1]
        # The spec is reused for the dev file; a label it has never seen is an error.
        dev = write(tmp_path / f"dev.{fmt}", custom_rows(fmt, pair, ["neg", "maybe"]))
        with expect_error(dev, 3 if fmt != "jsonl" else 2, "'maybe'", "['neg', 'pos']"):
            load_split(spec, dev)
        dev = write(tmp_path / f"dev.{fmt}", custom_rows(fmt, pair, ["neg"]))
        assert load_split(spec, dev).labels.tolist() == [0]


def test_custom_labels_given_and_numeric_sort(tmp_path):
    path = write(tmp_path / "t.jsonl", [json.dumps({"t": "a", "l": v}) for v in (10, 2, 2)])
    spec, ex = load_custom(path, ["t"], "l")
    assert spec.labels == ("2", "10") and ex.labels.tolist() == [1, 0, 0]
    spec, ex = load_custom(path, ["t"], "l", labels=["10", "2", "3"])
    assert spec.num_labels == 3 and ex.labels.tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        load_custom(path, ["t", "u", "v"], "l")


def test_hub_without_datasets_is_clear(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="needs the `datasets` package"):
        load_glue_hub("sst2", "dev")


# --------------------------------------------------------------------------- metrics
def test_metrics_classification_hand_computed():
    labels = np.array([1, 1, 1, 0, 0, 0])
    preds = np.array([1, 1, 0, 0, 0, 1])  # tp=2 tn=2 fp=1 fn=1
    f1 = compute_metrics(get_task("mrpc"), preds, labels)
    assert f1 == pytest.approx({"f1": 100 * 2 / 3, "accuracy": 100 * 4 / 6})
    assert list(f1)[0] == main_metric(get_task("mrpc")) == "f1"
    mcc = compute_metrics("mcc", preds, labels)
    assert mcc["mcc"] == pytest.approx(100 / 3)  # (2*2 - 1*1) / sqrt(3*3*3*3)
    assert compute_metrics("mcc", np.zeros(6, int), labels)["mcc"] == 0.0  # undefined -> 0
    assert compute_metrics("accuracy", preds, labels) == pytest.approx({"accuracy": 100 * 4 / 6})
    # 3 classes: C = [[2,0,0],[1,1,0],[0,1,1]]; n=6, c=4, t=(2,2,2), p=(3,2,1)
    mc = compute_metrics("mcc", np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2]))["mcc"]
    assert mc == pytest.approx(100 * (4 * 6 - 12) / np.sqrt((36 - 14) * (36 - 12)))
    with pytest.raises(ValueError, match="argmax"):
        compute_metrics("accuracy", np.zeros((6, 2)), labels)


def test_metrics_regression_hand_computed():
    m = compute_metrics(get_task("stsb"), np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))
    pearson = 15 / np.sqrt(228)  # sum dxdy=5, sum dx^2=2, sum dy^2=114/9
    assert m["pearson"] == pytest.approx(100 * pearson)
    assert m["spearman"] == pytest.approx(100.0)
    assert m["pearson_spearman"] == pytest.approx(50 * (pearson + 1))
    assert main_metric(get_task("stsb")) == "pearson_spearman"
    # Ties take their average rank: ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    ties = compute_metrics("pearson_spearman", np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4]))
    assert ties["spearman"] == pytest.approx(100 * 3 / np.sqrt(10))
    assert compute_metrics("pearson_spearman", np.ones(3), np.arange(3.0))["pearson"] == 0.0


def test_taskspec_validation():
    spec = TaskSpec("x", ["a"], "y", ["0", "1"], "f1")
    assert spec.text_columns == ("a",) and spec.main_key == "f1" and hash(spec)
    with pytest.raises(ValueError, match="does not suit"):
        TaskSpec("x", ("a",), "y", None, "accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        TaskSpec("x", ("a",), "y", ("0",), "bleu")
