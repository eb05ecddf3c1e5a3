"""The device scripts that produce the results, end to end on the CPU with a tiny model:
gpu_probe.sh runs each variant with its own arguments (a variant's --runs wins over RUNS) on one
shared teacher; gpu_glue.sh runs a task's run groups in parallel on one teacher; both return their
records and logs, and stop at once when their data did not travel; gpu_mrpc.sh runs gpu_probe.sh per
seed on MRPC; fp_weight_layers.py keeps the named layers' weights in full precision."""
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import save_tiny_base, sentiment_rows

ROOT = Path(__file__).resolve().parents[1]


def _fake_repo(tmp_path: Path, model: str) -> Path:
    """The scripts' layout under their working directory: benchmarks/ and bitbert/ (links to ours),
    a tiny model at .devdata/MODEL and a tiny SST-2 in .devdata/glue/SST-2."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("benchmarks", "bitbert"):
        (repo / name).symlink_to(ROOT / name)
    save_tiny_base(repo / ".devdata" / model)
    glue = repo / ".devdata" / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = sentiment_rows(lambda positive: int(positive))
    (glue / "train.tsv").write_text("\n".join(rows) + "\n")
    (glue / "dev.tsv").write_text("\n".join(rows[:13]) + "\n")
    return repo


def _run(repo: Path, script: str, out: Path, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", f"benchmarks/{script}", str(out)], cwd=repo, env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_gpu_probe_runs_every_variant_on_one_teacher(tmp_path):
    repo = _fake_repo(tmp_path, "tiny-bert")
    model = repo / ".devdata" / "tiny-bert"
    out = tmp_path / "out"
    _run(repo, "gpu_probe.sh", out, MODEL=".devdata/tiny-bert", EPOCHS="1", EVALS="0", GLUE_TIMEOUT="300",
         VARIANTS="ref:|a32:--runs bit:1-1-32|pool:--quant binarize_pooler=false|w4:FP_LAYERS=0 WEIGHT_BITS=4|n:NOISE=0.2 NOISE_KIND=mask",
         RUNS="bit:1-1-1")
    records = json.loads((out / "records.json").read_text())
    got = {(Path(r["records_file"]).parent.name, r["method"], r["schedule"]) for r in records}
    assert got == {("ref", "fp", "32-32-32"), ("ref", "bit", "1-1-1"), ("a32", "bit", "1-1-32"), ("pool", "bit", "1-1-1"),
                   ("w4", "bit", "1-1-1"), ("n", "bit", "1-1-1")}
    pool = next(r for r in records if r["records_file"].endswith("pool/sst2.json"))
    assert pool["quant_overrides"] == {"binarize_pooler": False} and str(model.name) in pool["command"]
    w4 = next(r for r in records if r["records_file"].endswith("w4/sst2.json"))  # the environment made it a probe
    assert w4["probe_weight_bits"] == 4 and w4["fp_weight_layers"] == [0] and w4["command"].startswith("FP_LAYERS=0 WEIGHT_BITS=4")
    noisy = next(r for r in records if r["records_file"].endswith("n/sst2.json"))
    assert noisy["token_noise"] == {"rate": 0.2, "kind": "mask"}
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


def test_gpu_glue_runs_a_tasks_groups_on_one_teacher(tmp_path):
    repo = _fake_repo(tmp_path, "minilm-l6-h384-fp16")  # the model path gpu_glue.sh expects
    out = tmp_path / "out"
    _run(repo, "gpu_glue.sh", out, SKIP_TESTS="1", SKIP_SPEED="1", TASKS="sst2", SST2_EPOCHS="1",
         SST2_RUNS="bit:1-1-1|baseline:1-1-1", GLUE_TIMEOUT="300")
    records = json.loads((out / "records.json").read_text())
    assert sorted((r["method"], r["schedule"]) for r in records) == [
        ("baseline", "1-1-1"), ("bit", "1-1-1"), ("fp", "32-32-32")]
    assert len({r["teacher_metric"] for r in records}) == 1
    assert (repo / "runs" / "glue" / "p1" / "sst2" / "teacher").is_symlink()  # the second group's shared teacher
    with tarfile.open(out / "runs.tgz") as tar:
        assert any(n.endswith("sst2.1.log") for n in tar.getnames())


def test_gpu_mrpc_probes_share_one_teacher_per_seed(tmp_path):
    repo = _fake_repo(tmp_path, "minilm-l6-h384-fp16")
    mrpc = repo / ".devdata" / "glue" / "MRPC"
    mrpc.mkdir(parents=True)
    words = ["good", "bad", "fine", "great", "awful", "poor"]
    rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
        f"{int(i % 2 == 0)}\t{i}\t{i + 100}\tthe movie was {a}\tthe movie was {a if i % 2 == 0 else b}"
        for i, (a, b) in enumerate(zip(words * 4, words[1:] * 4 + words[:1] * 4))]
    (mrpc / "train.tsv").write_text("\n".join(rows) + "\n")
    (mrpc / "dev.tsv").write_text("\n".join(rows[:11]) + "\n")
    out = tmp_path / "out"
    proc = _run(repo, "gpu_mrpc.sh", out, AUG="0", SEEDS="42 43", EPOCHS="1", DEADLINE="400",
                VARIANTS="ref:|row:--quant weight_scale=row", RUNS="bit:1-1-1")
    lines = (out / "summary.txt").read_text().splitlines()
    got = {(line.split()[0], line.split()[1], line.split()[3]) for line in lines}
    assert got == {(f"probe-mrpc-s{s}/{v}", m, s) for s in ("42", "43") for v, m in
                   (("ref", "fp"), ("ref", "bit"), ("row", "bit"))}, proc.stdout
    row = json.loads((repo / "runs" / "probe-mrpc-s43" / "row" / "mrpc.json").read_text())[0]
    assert row["quant_overrides"] == {"weight_scale": "row"}  # the user's; the pair default is applied under it
    assert row["precision"] == "1-1-1 (first 2 layers A4)"
    assert (repo / "runs" / "probe-mrpc-s43" / "row" / "mrpc" / "teacher").is_symlink()
    with tarfile.open(out / "mrpc.tgz") as tar:
        assert any(n.endswith("probe-mrpc-s42/row.log") for n in tar.getnames())


def test_fp_weight_layers_probe_keeps_only_the_named_layers_weights(monkeypatch):
    import runpy

    from bitbert.training.distill import stage_configs

    monkeypatch.setenv("FP_LAYERS", "0,2")
    probe = runpy.run_path(str(ROOT / "benchmarks" / "fp_weight_layers.py"), run_name="probe")
    cfg = stage_configs("bit", "1-1-1", {"early_layers": 2, "early_act_bits": 4})[0]
    got = [(c.weight_bits, c.act_bits) for c in (probe["layer_config"](cfg, i) for i in range(4))]
    assert got == [(32, 4), (1, 4), (32, 1), (1, 1)]  # activations as configured, weights per FP_LAYERS
    assert [probe["layers_text"](s) for s in ({0}, {0, 1}, {0, 2})] == ["layer 1", "layers 1-2", "layers 1,3"]
    monkeypatch.setenv("FP_LAYERS", "first")
    with pytest.raises(SystemExit, match="FP_LAYERS"):
        runpy.run_path(str(ROOT / "benchmarks" / "fp_weight_layers.py"), run_name="probe")
    monkeypatch.setenv("FP_LAYERS", "0")
    monkeypatch.setenv("WEIGHT_BITS", "1")
    with pytest.raises(SystemExit, match="WEIGHT_BITS"):
        runpy.run_path(str(ROOT / "benchmarks" / "fp_weight_layers.py"), run_name="probe")


def test_k_bit_weight_probe_quantizes_only_the_named_layers(monkeypatch):
    """WEIGHT_BITS=k: the named layers' linears run k-bit weights (2^k - 1 levels a row, straight-through
    gradient), the other layers stay binary, activations as configured."""
    import runpy

    import torch
    from transformers import BertForSequenceClassification

    import bitbert
    from bitbert.core.config import QuantConfig
    from bitbert.quant import convert, layers
    from bitbert.training.distill import stage_configs
    from conftest import tiny_bert_config

    monkeypatch.setenv("FP_LAYERS", "0")
    monkeypatch.setenv("WEIGHT_BITS", "3")
    probe = runpy.run_path(str(ROOT / "benchmarks" / "fp_weight_layers.py"), run_name="probe")
    w = torch.randn(4, 64, requires_grad=True)
    q = probe["uniform_weight"](w, 3)
    assert all(len(torch.unique(row)) <= 7 for row in q.detach())
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through
    monkeypatch.setattr(QuantConfig, "layer_config", probe["layer_config"])
    monkeypatch.setattr(convert, "_swap_linear", convert._swap_linear)  # restored after the test
    monkeypatch.setattr(layers.QuantLinear, "quantized_weight", layers.QuantLinear.quantized_weight)
    probe["install_k_bit_weights"]()
    torch.manual_seed(0)
    model = bitbert.binarize(BertForSequenceClassification(tiny_bert_config(num_hidden_layers=2)),
                             stage_configs("bit", "1-1-1", {"early_layers": 1, "early_act_bits": 4})[0])
    first, second = (model.bert.encoder.layer[i].intermediate.dense for i in (0, 1))
    assert (first.probe_bits, first.act_quant.bits) == (3, 4) and not hasattr(second, "probe_bits")
    assert 2 < len(torch.unique(first.quantized_weight()[0].detach())) <= 7
    assert len(torch.unique(second.quantized_weight()[0].detach())) == 2


def test_token_noise_probe_corrupts_only_text_tokens_of_training_batches(monkeypatch):
    """NOISE=p: a share p of the attended, non-special tokens is replaced ([MASK] or a text token of the
    same batch); [CLS]/[SEP], padding and the attention mask stay; the evaluation never sees noise."""
    import runpy

    import torch

    from bitbert.training import distill

    monkeypatch.setenv("NOISE", "0.5")
    monkeypatch.setenv("NOISE_KIND", "batch")
    probe = runpy.run_path(str(ROOT / "benchmarks" / "token_noise.py"), run_name="probe")
    cls, sep, pad, mask_id = 101, 102, 0, 103
    ids = torch.tensor([[cls] + list(range(1000, 1030)) + [sep] + list(range(2000, 2030)) + [sep] + [pad] * 8] * 16)
    batch = {"input_ids": ids, "attention_mask": (ids != pad).long()}
    special = torch.tensor([pad, cls, sep, mask_id])
    g = torch.Generator().manual_seed(0)
    out = probe["corrupt"](batch, 0.5, "batch", mask_id, special, g)["input_ids"]
    changed = out != ids
    text = batch["attention_mask"].bool() & ~torch.isin(ids, special)
    assert not changed[~text].any()  # special tokens and padding untouched
    assert 0.4 < changed[text].float().mean() < 0.6  # about half replaced (960 tokens at rate 0.5)
    assert torch.isin(out[text], ids[text]).all()  # by the batch's own text tokens
    masked = probe["corrupt"](batch, 0.5, "mask", mask_id, special, g)["input_ids"]
    assert set(masked[masked != ids].tolist()) == {mask_id}
    seen = []
    monkeypatch.setattr(distill.DistillLoss, "__call__", lambda self, student, b: seen.append(b["input_ids"]))
    probe["install"](mask_id, [pad, cls, sep, mask_id])
    student = torch.nn.Linear(1, 1)
    distill.DistillLoss.__call__(None, student.train(), batch)
    distill.DistillLoss.__call__(None, student.eval(), batch)
    assert not torch.equal(seen[0], ids) and torch.equal(seen[1], ids)
    monkeypatch.setenv("NOISE", "0.9")
    with pytest.raises(SystemExit, match="NOISE"):
        runpy.run_path(str(ROOT / "benchmarks" / "token_noise.py"), run_name="probe")


def test_gpu_mrpc_runs_seeded_probes_on_squad_pairs_too(tmp_path):
    """TASK=qnli: the same per-seed probes on the pairs benchmarks/squad_pairs.py builds."""
    import runpy
    repo = _fake_repo(tmp_path, "minilm-l6-h384-fp16")
    data = []
    for i in range(8):
        context = f"The film {i} was made in {1950 + i}. It was {'good' if i % 2 else 'bad'}. It ran long."
        qas = [{"question": f"When was film {i} made?", "answers": [{"answer_start": context.index(str(1950 + i)),
                                                                     "text": str(1950 + i)}]},
               {"question": f"How was film {i}?", "answers": [{"answer_start": context.index("It was") + 7,
                                                               "text": "good" if i % 2 else "bad"}]}]
        data.append({"title": str(i), "paragraphs": [{"context": context, "qas": qas}]})
    (tmp_path / "squad.json").write_text(json.dumps({"version": "1.1", "data": data}))
    build = runpy.run_path(str(ROOT / "benchmarks" / "squad_pairs.py"), run_name="squad_pairs")["build"]
    counts = build(tmp_path / "squad.json", repo / ".devdata" / "glue" / "QNLI", dev_every=4)
    assert (counts["train"], counts["dev"]) == (24, 8)
    out = tmp_path / "out"
    proc = _run(repo, "gpu_mrpc.sh", out, TASK="qnli", SEEDS="42", EPOCHS="1", DEADLINE="400",
                VARIANTS="pd:|fb:--quant early_layers=0", RUNS="bit:1-1-1")
    lines = (out / "summary.txt").read_text().splitlines()
    assert {(line.split()[0], line.split()[1]) for line in lines} == {
        ("probe-qnli-s42/pd", "fp"), ("probe-qnli-s42/pd", "bit"), ("probe-qnli-s42/fb", "bit")}, proc.stdout
    precision = {v: json.loads((repo / "runs" / "probe-qnli-s42" / v / "qnli.json").read_text())[-1]["precision"]
                 for v in ("pd", "fb")}
    assert precision == {"pd": "1-1-1 (first 2 layers A4)", "fb": "1-1-1"}
    assert not (repo / "runs" / "mrpc-aug-out").exists()  # no augmented MRPC runs beside another task
    with tarfile.open(out / "qnli.tgz") as tar:
        assert any(n.endswith("probe-qnli-s42/fb.log") for n in tar.getnames())
