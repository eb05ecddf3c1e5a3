"""benchmarks/squad_pairs.py: a QNLI-style pair task from SQuAD. The positive holds the answer span, the
negative is the most question-like sentence without any answer, articles never straddle the split, the
output reads as GLUE QNLI, and a malformed file is named down to its entry."""
import json
import runpy
from pathlib import Path

import pytest
from conftest import SHARED

from bitbert.tasks import load_glue

ROOT = Path(__file__).resolve().parents[1]
sp = runpy.run_path(str(ROOT / "benchmarks" / "squad_pairs.py"), run_name="squad_pairs")

CONTEXT = ("The castle was built in 1204 by King John. It burned down in 1390. "
           "Dr. Smith restored the castle in 1950! Was it worth it? \"Yes,\" said the town.")


def test_sentence_spans_split_at_sentence_ends_only():
    got = [CONTEXT[a:b] for a, b in sp["sentence_spans"](CONTEXT)]
    assert got == ["The castle was built in 1204 by King John.", "It burned down in 1390.",
                   "Dr.", "Smith restored the castle in 1950!", "Was it worth it?", "\"Yes,\" said the town."]
    assert sp["sentence_spans"]("no end mark") == [(0, 11)] and sp["sentence_spans"]("  ") == []


def test_positive_holds_the_answer_and_negative_is_the_closest_other_sentence():
    start = CONTEXT.index("1390")
    pairs = sp["question_pairs"](CONTEXT, "When did the castle burn down?", [(start, "1390")])
    assert [(p.sentence, p.label) for p in pairs] == [
        ("It burned down in 1390.", "entailment"),
        # this and 'Smith restored the castle...' share the most words with the question ('the',
        # 'castle'): the tie goes to the earlier sentence
        ("The castle was built in 1204 by King John.", "not_entailment")]
    assert pairs[0].question == pairs[1].question == "When did the castle burn down?"


def test_no_negative_may_contain_any_of_the_answers():
    start = CONTEXT.index("1204")
    pairs = sp["question_pairs"](CONTEXT, "When was the castle built?", [(start, "1204"), (start, "1204 by King John")])
    assert pairs[1].sentence == "Smith restored the castle in 1950!"  # shares 'the castle'; no '1204' in it
    only_answers = "It was 1204. It was 1204 again."
    assert sp["question_pairs"](only_answers, "When?", [(6, "1204")]) == []  # every other sentence has it


def test_answer_across_a_sentence_boundary_drops_the_question():
    start = CONTEXT.index("John.")
    assert sp["question_pairs"](CONTEXT, "Who?", [(start, "John. It burned")]) == []


def _squad(articles: int, with_answers: bool = True) -> dict:
    data = []
    for i in range(articles):
        context = f"Town{i} lies on a river. The mayor of Town{i} is Ann{i}.\tIt has a bridge."
        qa = {"question": f"Who is the mayor of Town{i}?", "id": str(i)}
        if with_answers:
            qa["answers"] = [{"answer_start": context.index(f"Ann{i}"), "text": f"Ann{i}"}]
        data.append({"title": f"T{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    return {"version": "1.1", "data": data}


def test_build_writes_glue_qnli_split_by_article(tmp_path):
    src = tmp_path / "squad.json"
    src.write_text(json.dumps(_squad(6)))
    out = tmp_path / "QNLI"
    counts = sp["build"](src, out, dev_every=3)
    assert (counts["train"], counts["dev"]) == (8, 4)
    dev = load_glue("qnli", out, "dev")
    train = load_glue("qnli", out, "train")
    assert dev.texts_a == ["Who is the mayor of Town2?"] * 2 + ["Who is the mayor of Town5?"] * 2
    assert dev.texts_b[0] == "The mayor of Town2 is Ann2." and list(dev.labels) == [0, 1, 0, 1]  # entailment = 0
    assert not set(train.texts_a) & set(dev.texts_a)
    assert all("\t" not in t for t in train.texts_b)  # the context's tab became a space
    with pytest.raises(FileExistsError, match="--force"):
        sp["build"](src, out)
    assert sp["build"](src, out, dev_every=2, force=True)["dev"] == 6


@pytest.mark.parametrize("doc, fragment", [
    ("{not json", "not a JSON file"),
    (json.dumps({"version": "1.1"}), "missing 'data'"),
    (json.dumps(_squad(2, with_answers=False)), "data[0].paragraphs[0].qas[0]: missing 'answers'"),
    (json.dumps({"data": [{"paragraphs": [{"context": "Short.", "qas": [
        {"question": "Q?", "answers": [{"answer_start": 99, "text": "x"}]}]}]}]}),
     "data[0].paragraphs[0].qas[0].answers[0]: answer_start 99 with a 1-character answer lies outside"),
    (json.dumps({"data": [{"paragraphs": [{"context": 7, "qas": []}]}]}),
     "data[0].paragraphs[0].context: expected str, got int"),
    (json.dumps(_squad(1)), "too few articles"),
])
def test_malformed_squad_is_named_down_to_the_entry(tmp_path, capsys, doc, fragment):
    src = tmp_path / "squad.json"
    src.write_text(doc)
    assert sp["main"]([str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and str(src) in err
    assert not (tmp_path / "out").exists()  # nothing written from a bad file


def test_bad_arguments_are_named(tmp_path, capsys):
    assert sp["main"]([str(tmp_path / "none.json"), str(tmp_path / "out")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    assert sp["main"]([str(tmp_path / "none.json"), str(tmp_path / "out"), "--dev-every", "1"]) == 2
    assert "--dev-every must be >= 2" in capsys.readouterr().err


def test_real_squad_dev_gives_a_balanced_pair_task(tmp_path):
    out = tmp_path / "QNLI"
    counts = sp["build"](SHARED / "data" / "squad" / "dev-v1.1.json", out)
    assert (counts["train"], counts["dev"]) == (16346, 3804)  # 10,075 of 10,570 questions, two rows each
    assert 70 < counts["overlap_baseline"]["dev_accuracy"] < 73  # word matching alone: well above chance
    dev = load_glue("qnli", out, "dev")
    assert dev.labels.mean() == 0.5
    assert not set(dev.texts_a) & set(load_glue("qnli", out, "train").texts_a)


def test_overlap_baseline_fits_its_threshold_on_train():
    P = sp["Pair"]
    train = [P("a b c d", "a b c x", "entailment"), P("a b c d", "a x y z", "not_entailment"),
             P("a b c d", "a b x y", "entailment"), P("a b c d", "a b y z", "not_entailment")]
    dev = [P("a b", "a b", "entailment"), P("a b", "a", "not_entailment"), P("a b", "z", "not_entailment")]
    got = sp["overlap_baseline"](train, dev)
    # shares 0.75, 0.25, 0.5, 0.5: threshold 0.5 gets 3 of 4, 0.75 also 3 of 4; the lower one is kept
    assert got["threshold"] == 0.5 and got["train_accuracy"] == 75.0
    assert got["dev_accuracy"] == 100.0 * 2 / 3  # 'a' shares 0.5 of 'a b': answered entailment, wrong
