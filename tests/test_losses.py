import math

import torch
from transformers import BertForSequenceClassification

from bitbert.losses import (attention_mse, capture_qkv, dmd_loss, hidden_mse, logit_loss, soft_cross_entropy)


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
    assert dmd_loss([x], [x.clone()], heads=2) == 0
    # scaling one sample (or the whole student) leaves directions, hence the loss, unchanged
    x2 = x.clone()
    x2[0] *= 10
    assert torch.isclose(dmd_loss([x2], [y], heads=2), dmd_loss([x], [y], heads=2), rtol=1e-5)
    assert dmd_loss([x], [y], heads=2) > 0


def test_capture_qkv_order(tiny_config, batch):
    model = BertForSequenceClassification(tiny_config)
    with capture_qkv(model) as cap:
        model(**batch)
    assert len(cap.tensors) == 3 * tiny_config.num_hidden_layers
    assert cap.tensors[0].shape == (3, 12, tiny_config.hidden_size)
