"""`bitbert evaluate` of a packed file matches classes by the names the file stores (issue: with labels
whose sorted order flips, a 90.3% student was reported at 9.7% with no message)."""
import json

import pytest

import bitbert
from bitbert.cli import main
from bitbert.tasks import DataError
from bitbert.tasks.label_map import match_labels
from test_engine import WORDS, tiny_tokenizer
from test_packing import binary_model, one_torch_thread  # noqa: F401 (autouse fixture)

# Output 0 is "b_objective", output 1 "a_subjective": a file's sorted labels put them the other way.
NAMES = {0: "b_objective", 1: "a_subjective"}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A packed model with named classes, a dev file labelled with its own predictions (the right
    class mapping scores 100%, a swapped one 0%: a tiny random model predicts one class), and a
    training file with both names, whose sorted order is the reverse of the model's."""
    tmp = tmp_path_factory.mktemp("labels")
    model = binary_model("bit")
    model.config.id2label, model.config.label2id = dict(NAMES), {v: k for k, v in NAMES.items()}
    path = bitbert.export(model, tmp / "m.bitbert", tokenizer=tiny_tokenizer())
    bitbert.save(model, tmp / "model", tiny_tokenizer())  # the same model as a directory
    texts = [" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(3 + i % 5)) for i in range(40)]
    predicted = [r["label"] for r in bitbert.load_packed(path, threads=1).predict(texts)]
    rows = ["sentence\tlabel", *(f"{t}\t{label}" for t, label in zip(texts, predicted))]
    (tmp / "dev.tsv").write_text("\n".join(rows) + "\n")
    other = next(name for name in NAMES.values() if name not in predicted[:1])
    (tmp / "train.tsv").write_text("\n".join([*rows, f"a film\t{other}"]) + "\n")
    return tmp


def evaluate(tmp, *extra, model: str = "m.bitbert"):
    """`bitbert evaluate` of the packed file (on one engine thread) or of the model directory."""
    runs_on = ["--threads", "1"] if model.endswith(".bitbert") else ["--device", "cpu"]
    return main(["evaluate", str(tmp / model), "--dev-file", str(tmp / "dev.tsv"), "--text-columns", "sentence",
                 *runs_on, *extra])


def test_evaluate_packed_does_not_swap_classes_whose_sorted_order_flips(labelled, capsys):
    assert evaluate(labelled, "--train-file", str(labelled / "train.tsv")) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == 100.0


def test_evaluate_packed_scores_without_a_train_file(labelled, capsys):
    assert evaluate(labelled) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["accuracy"] == 100.0 and result["examples"] == {"dev": 40}


def test_evaluate_packed_refuses_classes_it_cannot_match(labelled, tmp_path, capsys):
    rows = (labelled / "train.tsv").read_text().replace("a_subjective", "pos").replace("b_objective", "neg")
    (tmp_path / "train.tsv").write_text(rows)
    (tmp_path / "m.bitbert").symlink_to(labelled / "m.bitbert")
    (tmp_path / "dev.tsv").write_text(rows)
    assert evaluate(tmp_path, "--train-file", str(tmp_path / "train.tsv")) == 2
    err = capsys.readouterr().err
    assert "['b_objective', 'a_subjective']" in err and "['neg', 'pos']" in err and "Traceback" not in err


def test_evaluate_packed_glue_task_by_class_names_or_file_labels(tmp_path, capsys):
    """A GLUE task's files write 0/1; a model names its classes as the task does (negative/positive)
    or, trained on the files' own labels, 0/1: both match, in either output order."""
    glue = tmp_path / "SST-2"
    glue.mkdir()
    texts = [" ".join(WORDS[(5 * i + j) % len(WORDS)] for j in range(2 + i % 4)) for i in range(24)]
    for names in ({0: "negative", 1: "positive"}, {0: "positive", 1: "negative"}, {0: "1", 1: "0"}):
        model = binary_model("bit")
        model.config.id2label, model.config.label2id = dict(names), {v: k for k, v in names.items()}
        path = bitbert.export(model, tmp_path / "m.bitbert", tokenizer=tiny_tokenizer())
        predicted = [r["label"] for r in bitbert.load_packed(path, threads=1).predict(texts)]
        ids = [{"negative": "0", "positive": "1"}.get(label, label) for label in predicted]
        (glue / "dev.tsv").write_text("\n".join(["sentence\tlabel", *(f"{t}\t{i}" for t, i in zip(texts, ids))]) + "\n")
        assert main(["evaluate", str(path), "--task", "sst2", "--data-dir", str(glue), "--threads", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == 100.0, names


def test_match_labels():
    assert match_labels(["b", "a"], ["a", "b"], "m") == [1, 0]
    assert match_labels(["1", "0"], ["no", "yes"], "m", file_labels=["0", "1"]) == [1, 0]  # the files' labels
    assert match_labels(["LABEL_0", "LABEL_1"], ["x", "y"], "m") == [0, 1]  # unnamed: index order
    assert match_labels(["LABEL_0"], None, "m") is None
    for model, task in ((["a", "b"], ["a", "c"]), (["a", "b", "c"], ["a", "b"]), (["a", "b"], None)):
        with pytest.raises(DataError, match="m "):
            match_labels(model, task, "m")


def test_evaluate_model_dir_does_not_swap_classes_whose_sorted_order_flips(labelled, capsys):
    assert evaluate(labelled, "--train-file", str(labelled / "train.tsv"), model="model") == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == 100.0
    assert evaluate(labelled, model="model") == 0  # scored with the classes its config.json names
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == 100.0


def test_training_from_a_model_whose_classes_are_in_another_order_is_refused(labelled):
    """Distilling or fine-tuning maps output i to the task's class i: a teacher that names them in
    another order would teach swapped classes, so it is refused with both lists."""
    from bitbert.tasks import load_custom
    from bitbert.training.classifier import load_classifier

    spec, _ = load_custom(labelled / "train.tsv", ["sentence"], "label")
    with pytest.raises(DataError, match=r"in another order.*\['a_subjective', 'b_objective'\]"):
        load_classifier(labelled / "model", spec)
