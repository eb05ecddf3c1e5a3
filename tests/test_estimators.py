"""BiPFT low-rank residual estimators: shapes, gradients (by hand and by finite differences),
zero start, training effect, and how `summary` accounts for them."""
import copy

import pytest
import torch
from torch.func import functional_call
from transformers import BertForSequenceClassification

import bitbert
from bitbert.quant.estimators import LowRankResidual

from conftest import tiny_bert_config

SHAPES = [(24, 2, 1), (32, 4, 4), (48, 6, 1), (96, 12, 4)]  # hidden, heads, rank


def _randomized(est: LowRankResidual, dtype=torch.float32, seed=0) -> LowRankResidual:
    """The estimator with every weight random (a fresh one has q_p = k_p = v_up = 0)."""
    est = copy.deepcopy(est).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in est.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.3)
    return est


def _projections(est: LowRankResidual, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """q_p, k_p, q_m, k_m as (B, H, L, r), computed from the weight layout without the module."""
    w = est.qk.weight.view(4, est.heads, est.rank, -1)
    return {name: torch.einsum("blk,hrk->bhlr", h, w[i]) for i, name in enumerate(("q_p", "k_p", "q_m", "k_m"))}


@pytest.mark.parametrize("hidden,heads,rank", SHAPES)
def test_shapes_and_fresh_gradients(hidden, heads, rank):
    torch.manual_seed(0)
    d = hidden // heads
    est = LowRankResidual(hidden, heads, d, rank)
    h = torch.randn(2, 5, hidden, requires_grad=True)
    s, v = est.score_residual(h), est.value_residual(h)
    assert s.shape == (2, heads, 5, 5) and v.shape == (2, heads, 5, d)
    assert not s.any() and not v.any()  # zero start
    (s * torch.randn_like(s)).sum().add((v * torch.randn_like(v)).sum()).backward()
    g = est.qk.weight.grad.view(4, heads * rank, hidden)
    # At zero q_p, k_p, v_up only they receive gradient (∂S/∂q_p = k_m + k_p, ∂S/∂k_p ∝ q_m, ...).
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0 and not g[2].any() and not g[3].any()
    assert est.v_up.weight.grad.abs().sum() > 0 and not est.v_down.weight.grad.any()
    assert all(torch.isfinite(p.grad).all() for p in est.parameters())
    assert est.num_macs(7) == heads * 49 * (2 * rank + d)


@pytest.mark.parametrize("hidden,heads,rank", SHAPES)
def test_score_residual_by_hand(hidden, heads, rank):
    est = _randomized(LowRankResidual(hidden, heads, hidden // heads, rank), torch.float64)
    h = torch.randn(2, 4, hidden, dtype=torch.float64, requires_grad=True)
    x = _projections(est, h)
    # BiPFT: the three dropped terms of (Q_b + ΔQ)(K_b + ΔK)ᵀ.
    ref = x["q_m"] @ x["k_p"].mT + x["q_p"] @ x["k_m"].mT + x["q_p"] @ x["k_p"].mT
    s = est.score_residual(h)
    torch.testing.assert_close(s, ref)
    # Hand gradient of L = Σ G ⊙ S with respect to the four projections, then to the weights.
    G = torch.randn_like(s)
    (s * G).sum().backward()
    grad_x = {"q_p": G @ (x["k_m"] + x["k_p"]), "k_p": G.mT @ (x["q_m"] + x["q_p"]),
              "q_m": G @ x["k_p"], "k_m": G.mT @ x["q_p"]}
    hand = torch.stack([torch.einsum("bhlr,blk->hrk", grad_x[n], h.detach()) for n in ("q_p", "k_p", "q_m", "k_m")])
    torch.testing.assert_close(est.qk.weight.grad, hand.reshape_as(est.qk.weight))


class _Method(torch.nn.Module):
    """Calls one method of the estimator, so `functional_call` can substitute its weights."""

    def __init__(self, est: LowRankResidual, method: str) -> None:
        super().__init__()
        self.est, self.method = est, method

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return getattr(self.est, self.method)(h)


@pytest.mark.parametrize("heads,rank", [(2, 1), (3, 2)])
@pytest.mark.parametrize("method", ["score_residual", "value_residual"])
def test_gradcheck_float64(heads, rank, method):
    """Autograd against finite differences, with respect to the input and every weight."""
    hidden = 4 * heads
    est = _randomized(LowRankResidual(hidden, heads, hidden // heads, rank), torch.float64, seed=1)
    call = _Method(est, method)
    names = [f"est.{k}" for k, _ in est.named_parameters()]
    weights = [p.detach().clone().requires_grad_(True) for p in est.parameters()]
    h = torch.randn(1, 3, hidden, dtype=torch.float64, requires_grad=True)
    f = lambda h, *ws: functional_call(call, dict(zip(names, ws)), (h,))
    assert torch.autograd.gradcheck(f, (h, *weights))


def _pair(hidden: int, heads: int, rank: int):
    """The same random tiny BERT binarized 1-1-1 without and with rank-``rank`` estimators."""
    torch.manual_seed(0)
    base = BertForSequenceClassification(tiny_bert_config(hidden_size=hidden, num_attention_heads=heads,
                                                          intermediate_size=2 * hidden))
    cfg = bitbert.QuantConfig.from_preset("bit", "1-1-1").replace(ffn2_input="signed")
    plain = bitbert.binarize(copy.deepcopy(base), cfg).eval()
    with_est = bitbert.binarize(copy.deepcopy(base), cfg.replace(residual_rank=rank)).eval()
    return plain, with_est


@pytest.mark.parametrize("hidden,heads,rank", SHAPES)
def test_fresh_estimator_keeps_output_then_training_changes_it(hidden, heads, rank, batch):
    plain, model = _pair(hidden, heads, rank)
    for m in (plain, model):
        bitbert.calibrate(m, [batch])
    encode = lambda m: m.bert(**batch).last_hidden_state
    with torch.no_grad():
        ref_logits, ref = plain(**batch).logits, encode(plain)
        assert torch.equal(model(**batch).logits, ref_logits) and torch.equal(encode(model), ref)
    sa = model.bert.encoder.layer[0].attention.self
    assert sa.bitbert._h is None  # the stashed layer input does not outlive the forward
    est = [l.attention.self.bitbert.residual for l in model.bert.encoder.layer]
    opt = torch.optim.SGD([p for e in est for p in e.parameters()], lr=0.5)
    model.train()
    torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([0, 1, 0])).backward()
    assert all(e.v_up.weight.grad.abs().sum() > 0 and e.qk.weight.grad.abs().sum() > 0 for e in est)
    opt.step()
    model.eval()
    with torch.no_grad():
        # The encoder output moves (the logits too once a change crosses a binarizer's threshold).
        assert not torch.equal(encode(model), ref)


@pytest.mark.parametrize("hidden,heads,rank", [(24, 2, 1), (48, 12, 4)])
def test_summary_counts_estimators_as_full_precision(hidden, heads, rank):
    plain, model = _pair(hidden, heads, rank)
    seq = 16
    s0, s1 = bitbert.summary(plain, seq_len=seq), bitbert.summary(model, seq_len=seq)
    ests = [l.attention.self.bitbert.residual for l in model.bert.encoder.layer]
    n_params = sum(p.numel() for e in ests for p in e.parameters())
    assert s1.params_by_bits[32] - s0.params_by_bits[32] == n_params
    assert s1.params_by_bits[1] == s0.params_by_bits[1]
    assert s1.size_mb - s0.size_mb == pytest.approx(n_params * 4 / 2**20)
    d = hidden // heads
    projections = seq * hidden * (4 * heads * rank + rank) + seq * rank * heads * d
    per_layer = projections + heads * seq * seq * (2 * rank + d)
    fp = lambda s: sum(r.fp_macs for r in s.rows)
    binary = lambda s: sum(r.binary_macs for r in s.rows)
    assert fp(s1) - fp(s0) == len(ests) * per_layer  # each MAC once, at full precision
    assert binary(s1) == binary(s0)
    assert s1.gflops - s0.gflops == pytest.approx(2 * len(ests) * per_layer / 1e9)


def test_rebinarize_keeps_one_hook_pair_and_can_drop_estimators(batch):
    """binarize() again (multi-distillation) must not stack input hooks, and converting a BiPFT
    model to a config without estimators (or back to full precision) must still run."""
    model = BertForSequenceClassification(tiny_bert_config())
    cfg = bitbert.QuantConfig.from_preset("bit", "1-1-1").replace(residual_rank=1)
    bitbert.binarize(model, cfg)
    bitbert.binarize(model, cfg.replace(residual_rank=2))
    sa = model.bert.encoder.layer[0].attention.self
    assert len(sa._forward_pre_hooks) == 1 and len(sa._forward_hooks) == 1
    assert sa.bitbert.residual.rank == 2
    with torch.no_grad():
        model(**batch)
        bitbert.binarize(model, cfg.replace(residual_rank=0))
        assert sa.bitbert.residual is None and sa.bitbert._h is None
        model(**batch)
        bitbert.binarize(model, bitbert.QuantConfig.from_preset("fp"))
        assert not hasattr(sa, "bitbert")
        model(**batch)
