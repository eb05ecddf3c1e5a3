"""The sentence-pair control (benchmarks/pair_control.py): pairs are built right, and a binary
student learns to compare two texts (slow: the real MiniLM teacher)."""
import csv
import importlib.util
import pathlib

import pytest

from conftest import SHARED

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pair_control", ROOT / "benchmarks" / "pair_control.py")
pair_control = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pair_control)

SENTENCES = [f"the {a} movie was {b} and {c}" for a in ("old", "new", "long") for b in ("good", "bad", "fine")
             for c in ("funny", "slow", "loud")]


@pytest.mark.parametrize("variant", pair_control.VARIANTS)
def test_pairs_are_balanced_and_labelled_by_identity(variant):
    pairs = pair_control.make_pairs(SENTENCES, variant, 200, seed=3)
    assert len(pairs) == 200 and sum(label for _, _, label in pairs) == 100
    for a, b, label in pairs:
        assert (a == b) == (label == 1)
        if variant == "edit" and label == 0:  # one word swapped, the rest in place
            wa, wb = a.split(), b.split()
            assert len(wa) == len(wb) and sum(x != y for x, y in zip(wa, wb)) == 1
    assert pairs == pair_control.make_pairs(SENTENCES, variant, 200, seed=3)  # deterministic


def test_train_and_dev_share_no_sentence(tmp_path):
    src = tmp_path / "s.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"{s}\t0\n" for s in SENTENCES))
    train, dev = pair_control.build_data(src, tmp_path, "identity", 60, 20, seed=1)
    read = lambda p: {r["sentence1"] for r in csv.DictReader(p.open(), delimiter="\t")}
    assert read(train) and read(dev) and not read(train) & read(dev)


MINILM = SHARED / "models" / "minilm-l6-h384-fp16"
SST2 = SHARED / "data" / "glue" / "SST-2" / "train.tsv"


@pytest.mark.slow
@pytest.mark.parametrize("schedule,floor", [("1-1-32", 95.0), ("1-1-2,1-1-1", 58.0)])
def test_binary_student_compares_two_texts(tmp_path, schedule, floor):
    """Teacher ~100%; a student that cannot compare the segments sits at 50%. The setting of
    benchmarks/results/pair_control.json (2,000 pairs, 3 epochs, batch 8): binary weights and
    embeddings keep the comparison (98.8-99.8 there); 1-bit activations lose most of it (61-65 there,
    the issue's target of 85 is not reached), and this floor keeps it from falling back to 50."""
    if not MINILM.is_dir() or not SST2.is_file():
        pytest.fail(f"the slow pair test needs {MINILM} and {SST2} (../shared)")
    pair_control.main(["--model", str(MINILM), "--sentences", str(SST2), "--out", str(tmp_path), "--train", "2000",
                       "--dev", "500", "--epochs", "3", "--runs", f"bit:{schedule}"])
    import json

    record = json.loads(next((tmp_path / "records").glob("*.json")).read_text())
    assert record["teacher_best"]["accuracy"] >= 95
    assert record["best"]["accuracy"] >= floor, record
