"""benchmarks/gpu_probe.sh end to end on the CPU with a tiny model: the script that produces the probe
results must run each variant with its own arguments (a variant's --runs wins over RUNS), share one
teacher between them, and return the records even when there is nothing more."""
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import save_tiny_base, sentiment_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="gpu_probe.sh is a bash script")
def test_gpu_probe_runs_every_variant_on_one_teacher(tmp_path):
    repo = tmp_path / "repo"  # the script's layout: benchmarks/, bitbert/ and .devdata/ under its working directory
    repo.mkdir()
    for name in ("benchmarks", "bitbert"):
        (repo / name).symlink_to(ROOT / name)
    model = save_tiny_base(repo / ".devdata" / "tiny-bert")
    glue = repo / ".devdata" / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = sentiment_rows(lambda positive: int(positive))
    (glue / "train.tsv").write_text("\n".join(rows) + "\n")
    (glue / "dev.tsv").write_text("\n".join(rows[:13]) + "\n")
    env = dict(os.environ, MODEL=".devdata/tiny-bert", EPOCHS="1", EVALS="0", GLUE_TIMEOUT="300",
               VARIANTS="ref:|a32:--runs bit:1-1-32|pool:--quant binarize_pooler=false", RUNS="bit:1-1-1")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_probe.sh", str(out)], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = json.loads((out / "records.json").read_text())
    got = {(Path(r["records_file"]).parent.name, r["method"], r["schedule"]) for r in records}
    assert got == {("ref", "fp", "32-32-32"), ("ref", "bit", "1-1-1"), ("a32", "bit", "1-1-32"), ("pool", "bit", "1-1-1")}
    pool = next(r for r in records if r["records_file"].endswith("pool/sst2.json"))
    assert pool["quant_overrides"] == {"binarize_pooler": False} and str(model.name) in pool["command"]
    teachers = {r["teacher_metric"] for r in records if r["method"] != "fp"}
    assert len(teachers) == 1  # one teacher, fine-tuned once and linked into every variant
    assert (repo / "runs" / "probe" / "a32" / "sst2" / "teacher").is_symlink()
    with tarfile.open(out / "runs.tgz") as tar:
        assert any(n.endswith("pool.log") for n in tar.getnames())


def test_gpu_probe_stops_at_once_without_its_data(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "benchmarks").symlink_to(ROOT / "benchmarks")
    proc = subprocess.run(["bash", "benchmarks/gpu_probe.sh", str(tmp_path / "out")], cwd=repo, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, VARIANTS="ref:"))
    assert proc.returncode == 2 and "minilm-l6-h384-fp16/config.json is missing" in proc.stderr
