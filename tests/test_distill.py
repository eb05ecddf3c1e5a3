"""Fine-tune → multi-distillation schedule → resume, on a tiny random model and a tiny custom task."""
import json

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification

import bitbert
from bitbert.quant.schedule import QuantInit, Schedule
from bitbert.tasks import get_task
from bitbert.tasks.batching import TokenizedSplit
from bitbert.training.distill import DistillLoss, LossWeights, method_losses, run_schedule
from bitbert.training.finetune import finetune
from bitbert.training.task_data import TaskData
from conftest import tiny_bert_config
from bitbert.training.train import TrainConfig


def tiny_task(n=48, seed=0, regression=False) -> TaskData:
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, 120, rng.integers(4, 14)), [3]]).astype(np.int32) for _ in range(n)]
    labels = (np.array([x[1] % 2 for x in ids]) if not regression else np.array([x[1] / 120 for x in ids])).astype(
        np.float32 if regression else np.int64)
    split = TokenizedSplit(ids, [np.zeros_like(x) for x in ids], labels, "tiny")
    spec = get_task("stsb" if regression else "sst2")
    return TaskData(spec, split, {"dev": TokenizedSplit(ids[:16], [np.zeros_like(x) for x in ids[:16]], labels[:16])}, 0)


CFG = TrainConfig(epochs=2, lr=1e-3, batch_size=8, eval_batch_size=16, eval_every=4, seed=1, log_every=2)


def test_schedule_hands_over_and_reports(tmp_path, tiny_config):
    data = tiny_task()
    teacher = BertForSequenceClassification(tiny_config)
    finetune(teacher, data, CFG, tmp_path / "teacher")
    teacher = bitbert.load(tmp_path / "teacher" / "model")
    res = run_schedule(teacher, data, "bit", "32-32-32,1-1-2,1-1-1", CFG, tmp_path / "d")
    assert [s.bits for s in res.stages] == ["32-32-32", "1-1-2", "1-1-1"]
    assert res.stages[0].skipped
    for st in res.stages[1:]:
        assert st.report.finished and st.report.best is not None and st.report.final["step"] == st.report.steps
    # stage 2 starts from stage 1's weights (the student becomes the next initialization)
    s1 = bitbert.load(tmp_path / "d" / "stage1-1-1-2" / "model")
    s2 = bitbert.load(tmp_path / "d" / "stage2-1-1-1" / "model")
    assert s1.bitbert_config.act_bits == 2 and s2.bitbert_config.act_bits == 1
    summary = json.loads((tmp_path / "d" / "schedule.json").read_text())
    assert len(summary["stages"]) == 3 and "best" in summary["stages"][2]
    lines = (tmp_path / "d" / "stage2-1-1-1" / "metrics.jsonl").read_text().splitlines()
    assert any("eval/accuracy" in l for l in lines) and any("train/loss" in l for l in lines)


def test_inherited_quantizers_are_not_recalibrated(tmp_path, tiny_config, monkeypatch):
    import bitbert.training.distill as distill

    counts = []
    real = distill.calibrate
    monkeypatch.setattr(distill, "calibrate", lambda *a, **k: counts.append(real(*a, **k)) or counts[-1])
    data, teacher = tiny_task(), BertForSequenceClassification(tiny_config).eval()
    run_schedule(teacher, data, "bit", "1-1-2,1-1-1", CFG, tmp_path / "fresh")
    run_schedule(teacher, data, "bit", "1-1-2,1-1-1", CFG, tmp_path / "inherit",
                 quant_init=QuantInit(inherit_quantizers=True))
    sites = tiny_config.num_hidden_layers * 10 + 1
    # fresh: every site calibrated in both stages; inherited: only in the first (the 1-1-2 stage's
    # learned α, β start the 1-1-1 stage)
    assert counts == [sites, sites, sites, 0]


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_kill_matches_uninterrupted(tmp_path, tiny_config):
    data = tiny_task()
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_config).eval()
    straight = run_schedule(teacher, data, "bit", "1-1-2,1-1-1", CFG, tmp_path / "a")
    # kill in the middle of stage 1 (after a checkpoint at step 4, before the one at 8) ...
    class Killed(Exception):
        pass

    import bitbert.training.train as T

    orig = T.train

    def killing_train(*a, **k):
        def on_step(step):
            if step == 6 and "stage1" in str(a[5]):
                raise Killed
        return orig(*a, **k, on_step=on_step)

    T_distill = __import__("bitbert.training.distill", fromlist=["train"])
    T_distill.train = killing_train
    try:
        with pytest.raises(Killed):
            run_schedule(teacher, data, "bit", "1-1-2,1-1-1", CFG, tmp_path / "b")
    finally:
        T_distill.train = orig
    assert (tmp_path / "b" / "stage0-1-1-2" / "model").is_dir() and not (tmp_path / "b" / "stage1-1-1-1" / "model").exists()
    resumed = run_schedule(teacher, data, "bit", "1-1-2,1-1-1", CFG, tmp_path / "b", resume=True)
    a, b = _weights(straight.student), _weights(resumed.student)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.stages[-1].report.final == resumed.stages[-1].report.final


def test_max_steps_then_resume(tmp_path, tiny_config):
    data = tiny_task()
    teacher = BertForSequenceClassification(tiny_config).eval()
    part = run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(max_steps=3), tmp_path / "c")
    assert not part.stages[0].report.finished
    progress = json.loads((tmp_path / "c" / "stage0-1-1-1" / "progress.json").read_text())  # readable while cut
    assert progress["steps"] == 3 and progress["total_steps"] > 3 and progress["history"] == part.stages[0].report.history
    first_wall = part.stages[0].report.wall_s
    done = run_schedule(teacher, data, "bit", "1-1-1", CFG, tmp_path / "c", resume=True)
    assert done.stages[0].report.finished
    assert done.stages[0].report.wall_s > first_wall > 0  # wall time sums the resumed segments


def test_resume_with_other_settings_is_refused(tmp_path, tiny_config):
    data = tiny_task()
    teacher = BertForSequenceClassification(tiny_config).eval()
    run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(max_steps=3), tmp_path / "r")  # a checkpoint
    with pytest.raises(bitbert.ConfigError, match=r"lr=0.001 there, 0.0005 now.*new output directory"):
        run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(lr=5e-4), tmp_path / "r", resume=True)
    # what may change on a resume: the step budget, the eval cadence
    done = run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(eval_every=6), tmp_path / "r", resume=True)
    assert done.stages[0].report.finished and done.stages[0].report.config["losses"]["hidden"] == 1.0
    # a finished stage is reused only by the same run: other loss weights or another seed are refused
    with pytest.raises(bitbert.ConfigError, match=r"losses="):
        run_schedule(teacher, data, "bit", "1-1-1", CFG, tmp_path / "r", resume=True,
                     losses=method_losses("bit").with_overrides("hidden=0"))
    with pytest.raises(bitbert.ConfigError, match=r"seed=1 there, 2 now"):
        run_schedule(teacher, data, "bit", "1-1-1", CFG.replace(seed=2), tmp_path / "r", resume=True)
    again = run_schedule(teacher, data, "bit", "1-1-1", CFG, tmp_path / "r", resume=True)
    assert again.stages[0].report.final == done.stages[0].report.final


@pytest.mark.parametrize("method", ["bibert", "baseline"])
def test_other_methods_run(tmp_path, tiny_config, method):
    data = tiny_task()
    teacher = BertForSequenceClassification(tiny_config).eval()
    res = run_schedule(teacher, data, method, "1-1-1", CFG.replace(epochs=1), tmp_path / method)
    assert res.stages[0].report.finished


def test_regression_distillation_trains_logits(tiny_config):
    data = tiny_task(regression=True)
    teacher = BertForSequenceClassification(tiny_config.__class__(**{**tiny_config.to_dict(), "num_labels": 1})).eval()
    student = bitbert.binarize(BertForSequenceClassification(teacher.config), bitbert.QuantConfig.from_preset("bit"))
    loss = DistillLoss(teacher, data.spec, LossWeights(hidden=0.0))
    batch = data.train_batches(8, 0).collate(np.arange(8))
    value = loss(student, batch)
    value.backward()
    assert value > 0 and student.classifier.weight.grad.abs().sum() > 0  # MSE, not a zero soft-CE
    assert not loss.teacher.training


def test_method_losses_and_schedule_validation():
    assert method_losses("bibert").dmd == 1.0 and method_losses("bit").dmd == 0.0
    bibert = method_losses("bibert")
    assert bibert.ground_truth == 0.5 and bibert.hidden_loss == "direction"  # BiBERT code's recipe
    changed = bibert.with_overrides("dmd=0.25, hidden_loss=mse,ground_truth=0")
    assert (changed.dmd, changed.hidden_loss, changed.ground_truth, changed.logits) == (0.25, "mse", 0.0, 1.0)
    assert bibert.with_overrides(None) is bibert
    with pytest.raises(bitbert.ConfigError, match="not key=value"):
        bibert.with_overrides("dmd")
    with pytest.raises(bitbert.ConfigError):
        Schedule.parse("1-1-1,1-1-3")


def test_evaluate_batches_is_graph_free_deterministic_and_restores_mode():
    from bitbert.training.train import evaluate_batches

    torch.manual_seed(0)
    model = bitbert.binarize(BertForSequenceClassification(tiny_bert_config(hidden_dropout_prob=0.5)),
                             bitbert.QuantConfig.from_preset("bit"))
    model.train()  # a caller's training model: dropout must not reach the dev metric
    ids = torch.randint(5, 90, (3, 7))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0])}] * 2
    a, labels = evaluate_batches(model, batches, torch.device("cpu"))
    b, _ = evaluate_batches(model, batches, torch.device("cpu"))
    assert not a.requires_grad and a.grad_fn is None  # no graph kept across the dev set
    assert torch.equal(a, b) and torch.equal(a[:3], a[3:])
    assert labels.tolist() == [0, 1, 0, 0, 1, 0]
    assert model.training


@pytest.mark.parametrize("bits,method", [("1-1-32", "bit"), ("1-1-1", "bit"), ("1-1-1", "bibert")])
def test_attention_kl_trains_the_students_attention(tiny_config, bits, method):
    """The attention term reaches Q/K through the student's attention map, whether the student keeps
    transformers' own attention (1-1-32: sdpa gives no maps, so it is switched to eager) or runs
    bitbert's (softmax before quantization; BiBERT's bool map)."""
    data = tiny_task()
    teacher = BertForSequenceClassification(tiny_config).eval()
    student = bitbert.binarize(BertForSequenceClassification(tiny_config), bitbert.QuantConfig.from_preset(method, bits))
    student.config._attn_implementation = student.config._attn_implementation if bits != "1-1-32" else "sdpa"
    batch = data.train_batches(8, 0).collate(np.arange(8))
    bitbert.calibrate(student, [batch])
    only_attention = DistillLoss(teacher, data.spec, LossWeights(logits=0.0, hidden=0.0, attention_kl=1.0))
    value = only_attention(student, batch)
    value.backward()
    query = student.bert.encoder.layer[0].attention.self.query.weight
    assert value > 0 and query.grad is not None and query.grad.abs().sum() > 0
