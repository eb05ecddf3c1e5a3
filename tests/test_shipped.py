"""The 1-bit SST-2 model shipped in the package: present, pinned, and as accurate on the bundled dev
set as its record says (the README's number comes from that record)."""
import json
from pathlib import Path

from bitbert.cli import main
from bitbert.deploy.packing import file_sha256
from bitbert.deploy.shipped import SHIPPED_MODEL, SHIPPED_SHA256

RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "shipped_model.json"


def test_shipped_model_is_pinned_and_installed():
    assert SHIPPED_MODEL.is_file(), "the shipped model is missing from bitbert/data"
    assert SHIPPED_SHA256 and file_sha256(SHIPPED_MODEL) == SHIPPED_SHA256
    assert json.loads(RECORD.read_text())["sha256"] == SHIPPED_SHA256


def test_shipped_model_scores_its_record_on_the_bundled_dev_set(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--threads", "1", "--out", str(out)]) == 0  # no model: the shipped one, SST-2
    got = json.loads(out.read_text())
    recorded = json.loads(RECORD.read_text())["evaluation"]
    assert got["examples"] == recorded["examples"] == {"dev": 872}
    assert abs(got["metrics"]["accuracy"] - recorded["metrics"]["accuracy"]) < 1e-6
    assert got["metrics"]["accuracy"] > 75.0  # a model a user would call working


def test_predict_without_a_model_names_the_sentiment(capsys):
    assert main(["predict", "Terrible acting and a boring, predictable plot.", "A warm, funny and moving film."]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["negative", "positive"]
    assert all(set(r["scores"]) == {"negative", "positive"} for r in rows)
