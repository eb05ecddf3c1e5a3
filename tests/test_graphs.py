"""CUDA-graph training steps: the step must be free of host syncs (checked on CPU by making every
Python-level read of a tensor's value raise, as stream capture would), and a replayed step must
equal the eager one (checked where a GPU exists)."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import bitbert
from bitbert.tasks import get_task
from bitbert.training.distill import DistillLoss, method_losses
from bitbert.training.graphs import GraphedStep, capture_safe_masks, graphs_wanted


class HostSync(AssertionError):
    pass


@contextlib.contextmanager
def capture_like():
    """Tensor value reads raise, and transformers believes a CUDA stream is capturing (so it takes
    the same sync-free mask path it takes under a real capture)."""
    import transformers.utils.import_utils as iu

    def boom(*a, **k):
        raise HostSync("host sync inside a step that is captured as a CUDA graph")

    names = ("item", "__bool__", "tolist", "__int__", "__float__", "numpy", "cpu")
    saved = {n: getattr(torch.Tensor, n) for n in names}
    saved_capturing = iu.is_cuda_stream_capturing
    try:
        for n in names:
            setattr(torch.Tensor, n, boom)
        iu.is_cuda_stream_capturing = lambda: True
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)
        iu.is_cuda_stream_capturing = saved_capturing


def tiny(seed: int = 0, dropout: float = 0.1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=96, max_position_embeddings=64, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(cfg)


def batch(b: int = 4, n: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[0, n // 2:] = 0  # padding, so the mask path is the real one
    return {"input_ids": torch.randint(5, 120, (b, n), generator=g), "attention_mask": mask,
            "token_type_ids": torch.zeros(b, n, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0][:b])}


def student_and_loss(method: str, residual_rank: int = 0):
    teacher = tiny().eval()
    student = copy.deepcopy(teacher)
    cfg = bitbert.QuantConfig.from_preset(method, "1-1-1")
    if residual_rank:
        cfg = cfg.replace(residual_rank=residual_rank)
    bitbert.binarize(student, cfg)
    bitbert.calibrate(student, [batch()])
    weights = method_losses(method)
    if method == "bit":  # every optional term too
        weights = weights.__class__(attention=1.0, ground_truth=0.5)
    return student.train(), DistillLoss(teacher, get_task("sst2"), weights)


@pytest.mark.parametrize("method,rank", [("bit", 0), ("bibert", 0), ("baseline", 0), ("bit", 2)])
def test_distillation_step_has_no_host_sync(method, rank):
    student, loss_fn = student_and_loss(method, rank)
    b = batch()
    with capture_like():
        loss = loss_fn(student, b)
        loss.backward()
    assert torch.isfinite(loss.detach())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_capture_safe_eager_mask_gives_the_same_model_outputs():
    model = tiny(dropout=0.0).eval()
    model.config._attn_implementation = "eager"  # the path of a teacher whose attention is distilled
    b = batch()
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    want = model(**inputs, output_attentions=True)
    with capture_safe_masks():
        got = model(**inputs, output_attentions=True)
    assert torch.equal(got.logits, want.logits)
    assert all(torch.equal(g, w) for g, w in zip(got.attentions, want.attentions))
    assert want.attentions[0][0, :, :, 6:].abs().max() == 0  # padded keys really are masked


def test_capture_like_catches_a_sync():
    with capture_like(), pytest.raises(HostSync):
        if torch.ones(()) > 0:
            pass


def test_graphs_wanted():
    assert not graphs_wanted("auto", torch.device("cpu"), 1)
    assert graphs_wanted("auto", torch.device("cuda"), 1)
    assert not graphs_wanted("on", torch.device("cuda"), 2)  # DDP hooks are not captured
    assert not graphs_wanted("off", torch.device("cuda"), 1)
    with pytest.raises(ValueError, match="cuda_graphs"):
        graphs_wanted("yes", torch.device("cuda"), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("method", ["bit", "bibert"])
def test_graph_replay_equals_eager_step(method):
    student, loss_fn = student_and_loss(method)
    student.cuda()
    for m in student.modules():  # no dropout: eager and replay must then agree exactly
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    loss_fn.teacher.cuda()
    step = GraphedStep(student, loss_fn)
    for n in (12, 16, 12):  # two shapes, the first replayed twice
        b = {k: v.cuda() for k, v in batch(n=n).items()}
        ref = copy.deepcopy(student)
        for p in ref.parameters():
            p.grad = None
        eager = loss_fn(ref, b)
        eager.backward()
        want = {name: p.grad for name, p in ref.named_parameters() if p.grad is not None}
        for p in student.parameters():
            if p.grad is not None:
                p.grad.zero_()
        got = step(b)
        torch.cuda.synchronize()
        assert torch.allclose(got, eager, rtol=1e-5, atol=1e-6)
        for name, p in student.named_parameters():
            if name in want:
                assert torch.allclose(p.grad, want[name], rtol=1e-4, atol=1e-6), name
    assert len(step.graphs) == 2
    next(student.parameters()).grad = None  # breaking the contract is an error, not silent garbage
    with pytest.raises(RuntimeError, match="set_to_none=False"):
        step(b)


def test_cli_cuda_graphs_flag_reaches_the_train_config():
    import argparse

    from bitbert.cli import _add_train_args, _train_config

    p = argparse.ArgumentParser()
    _add_train_args(p)
    assert _train_config(p.parse_args(["--cuda-graphs", "off"]), {}).cuda_graphs == "off"
    assert _train_config(p.parse_args([]), {}).cuda_graphs == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["--cuda-graphs", "sometimes"])


def test_pretraining_loss_is_not_graphed():
    from bitbert.training.pretraining import PretrainLoss

    assert PretrainLoss.graphable is False  # boolean-indexed MLM targets: a data-dependent shape
