import math

import torch
from transformers import BertForSequenceClassification

from bitbert.training.losses import (attention_kl, attention_mse, capture_qkv, dmd_loss, hidden_direction, hidden_mse, logit_loss,
                            soft_cross_entropy)


def test_soft_ce_value():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[0.0, math.log(3.0)]])  # teacher probs .25 / .75
    assert torch.isclose(soft_cross_entropy(s, t), torch.tensor(math.log(2.0)))


def test_regression_logit_loss_is_not_zero():
    s, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert soft_cross_entropy(s, t) == 0  # why the papers' STS-B logit loss is dead
    assert torch.isclose(logit_loss(s, t, regression=True), torch.tensor(2.5))
    s.requires_grad_(True)
    logit_loss(s, t, regression=True).backward()
    assert s.grad.abs().sum() > 0


def test_hidden_mse_sums_layers_and_masks_padding():
    a = [torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)]
    b = [torch.ones(1, 2, 2), torch.tensor([[[2.0, 2.0], [100.0, 100.0]]])]
    mask = torch.tensor([[1, 0]])
    assert torch.isclose(hidden_mse(a, b, mask), torch.tensor(1.0 + 4.0))
    assert torch.isclose(hidden_mse(a, b), torch.tensor(1.0 + (4 + 4 + 1e4 + 1e4) / 4))
    assert attention_mse([torch.zeros(2)], [torch.ones(2)]) == 1.0


def test_dmd_per_sample_normalisation_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g)
    y = torch.randn(2, 5, 8, generator=g)
    assert dmd_loss([x], [x.clone()], heads=2) < 1e-5
    # scaling one sample (or the whole student) leaves directions, hence the loss, unchanged
    x2 = x.clone()
    x2[0] *= 10
    assert torch.isclose(dmd_loss([x2], [y], heads=2), dmd_loss([x], [y], heads=2), rtol=1e-5)
    assert dmd_loss([x], [y], heads=2) > 0


def test_dmd_value_by_hand():
    # one head, L=2, d=1: X = [1, 0] gives XXᵀ = [[1, 0], [0, 0]]; Y = [0, 1] gives [[0, 0], [0, 1]].
    # Both already have unit norm, so ‖P_x − P_y‖_F = √2 (unsquared, as in BiBERT eq. 13).
    x = torch.tensor([[[1.0], [0.0]]])
    y = torch.tensor([[[0.0], [1.0]]])
    assert torch.isclose(dmd_loss([x], [y], heads=1), torch.tensor(math.sqrt(2.0)))
    # a padded position (mask 0) drops out of both maps: only position 0 is left, both maps equal [[1]]
    y2 = torch.tensor([[[3.0], [5.0]]])
    assert dmd_loss([x], [y2], heads=1, mask=torch.tensor([[1, 0]])) < 1e-5
    # gradient is finite (zero) at zero distance despite the unsquared norm
    x.requires_grad_(True)
    dmd_loss([x], [x.detach().clone()], heads=1).backward()
    assert torch.isfinite(x.grad).all()


def test_hidden_direction_is_scale_free_and_bounded():
    a = [torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])]
    b = [torch.tensor([[[0.0, 2.0], [7.0, 7.0]]])]
    # per sample: [1,0,0,0] vs [0,1,0,0] after masking position 1: distance √2
    assert torch.isclose(hidden_direction(a, b, torch.tensor([[1, 0]])), torch.tensor(math.sqrt(2.0)))
    assert torch.isclose(hidden_direction([10 * b[0]], b), torch.tensor(0.0), atol=1e-5)
    assert torch.isclose(hidden_direction([-b[0]], b), torch.tensor(2.0))  # opposite directions: the maximum


def test_capture_qkv_order(tiny_config, batch):
    model = BertForSequenceClassification(tiny_config)
    with capture_qkv(model) as cap:
        model(**batch)
    assert len(cap.tensors) == 3 * tiny_config.num_hidden_layers
    assert cap.tensors[0].shape == (3, 12, tiny_config.hidden_size)


def test_attention_kl_value_by_hand_and_masked_queries():
    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (B=1, H=1, L=2, L=2)
    s = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    row1 = 1.0 * math.log(1.0 / 0.5)
    assert torch.isclose(attention_kl([s], [t]), torch.tensor((row0 + row1) / 2))
    assert torch.isclose(attention_kl([s], [t], torch.tensor([[1, 0]])), torch.tensor(row0))  # padded query out
    assert torch.isclose(attention_kl([t, s], [t, s]), torch.tensor(0.0), atol=1e-6)


def test_attention_kl_normalises_a_bool_map():
    t = torch.tensor([[[[0.5, 0.5, 0.0]]]])
    bool_map = torch.tensor([[[[1.0, 1.0, 0.0]]]])  # BiBERT's map: as a distribution, uniform over its ones
    assert torch.isclose(attention_kl([bool_map], [t]), torch.tensor(0.0), atol=1e-6)


def test_binary_attention_returns_the_softmax_before_quantization(tiny_config, batch):
    import bitbert

    model = BertForSequenceClassification(tiny_config)
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-1"))
    bitbert.calibrate(model, [batch])
    attentions = model(**batch, output_attentions=True).attentions
    rows = attentions[0].sum(-1)[batch["attention_mask"].bool()[:, None, :].expand(-1, tiny_config.num_attention_heads, -1)]
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)  # distributions, not the {0, α} map
