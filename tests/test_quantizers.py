"""Every quantizer's forward and straight-through gradient against hand-computed values."""
import pytest
import torch

from bitbert.quant.quantizers import ActQuantizer, BinaryWeight, BoolSTE, ElasticQuant, ElasticSign, SignSTE, levels


def grads(fn, *tensors, g=None):
    ts = [t.clone().requires_grad_(True) for t in tensors]
    y = fn(*ts)
    y.backward(g if g is not None else torch.ones_like(y))
    return y.detach(), [t.grad for t in ts]


def test_binary_weight_centred_per_tensor():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.0]])  # mean 0.5, mean|w| 1.5
    y, (gw,) = grads(lambda w: BinaryWeight.apply(w, True, False), w, g=torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(y, torch.tensor([[1.5, -1.5], [1.5, -1.5]]))
    assert torch.equal(gw, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # identity, even for |w| > 1


def test_binary_weight_uncentred_and_per_row():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    assert torch.equal(BinaryWeight.apply(w, False, False), torch.tensor([[1.25, -1.25], [1.25, 1.25]]))
    # per row: row 0 scale 2, mean -1 -> signs (+,-); row 1 scale .5, mean .5 -> sgn(0)=+1
    assert torch.equal(BinaryWeight.apply(w, True, True), torch.tensor([[2.0, -2.0], [0.5, 0.5]]))


def test_sign_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.0, 3.0])
    y, (gx,) = grads(SignSTE.apply, x, g=torch.full((6,), 2.0))
    assert torch.equal(y, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(gx, torch.tensor([0.0, 2.0, 2.0, 2.0, 2.0, 0.0]))


def test_bool_ste():
    x = torch.tensor([-3.0, -0.2, 0.0, 0.5, 2.0])
    y, (gx,) = grads(BoolSTE.apply, x)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert torch.equal(gx, torch.tensor([0.0, 0.5, 0.5, 0.5, 0.0]))


def test_elastic_sign_gradients():
    x = torch.tensor([[-3.0, 0.5], [1.0, 2.5]])
    alpha, beta = torch.tensor(2.0), torch.tensor([0.0, 1.0])
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y, (gx, ga, gb) = grads(ElasticSign.apply, x, alpha, beta, g=g)
    # u = x - beta = [[-3, -0.5], [1, 1.5]]
    assert torch.equal(y, torch.tensor([[-2.0, -2.0], [2.0, 2.0]]))
    assert torch.equal(gx, torch.tensor([[0.0, 2.0], [3.0, 4.0]]))  # |u| <= 2
    assert ga.item() == -1.0 - 2.0 + 3.0 + 4.0  # sum g * sgn(u)
    assert torch.equal(gb, torch.tensor([-3.0, -6.0]))  # -sum over rows of g*m


def test_elastic_unsigned_one_bit_matches_bit_eq_10_11():
    alpha, beta = torch.tensor(2.0), torch.tensor(0.5)
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])  # u = (x - .5)/2 = [-.25, .25, .75, 1.25]
    y, (gx, ga, gb) = grads(lambda x, a, b: ElasticQuant.apply(x, a, b, 0, 1), x, alpha, beta)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 2.0, 2.0]))
    assert torch.equal(gx, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    # eq. 10: 0 below beta; (beta - x)/alpha = -.25; 1 - (x-beta)/alpha = .25; 1 above alpha+beta
    assert torch.isclose(ga, torch.tensor(0.0 - 0.25 + 0.25 + 1.0))
    assert gb.item() == -2.0  # eq. 11: -1 for beta <= x < alpha + beta


def test_elastic_multibit_lsq():
    qn, qp = levels(2, True)
    assert (qn, qp) == (-2, 1)
    alpha, beta = torch.tensor(1.0), torch.tensor(0.0)
    x = torch.tensor([-3.0, -1.2, 0.4, 2.0])  # u same; q = [-2, -1, 0, 1]
    y, (gx, ga, gb) = grads(lambda x, a, b: ElasticQuant.apply(x, a, b, qn, qp), x, alpha, beta)
    assert torch.equal(y, torch.tensor([-2.0, -1.0, 0.0, 1.0]))
    assert torch.equal(gx, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert torch.isclose(ga, torch.tensor(-2.0 + (-1.0 + 1.2) + (0.0 - 0.4) + 1.0))
    assert gb.item() == -2.0


def test_act_quantizer_calibration_values():
    q = ActQuantizer(1, True)
    assert torch.isclose(q.initial_alpha(torch.tensor([-1.0, 3.0])), torch.tensor(2.0))
    u = ActQuantizer(1, False)
    # fixed point of alpha = mean(x | x >= alpha/2): {0.1, 0.2, 4, 6} -> 5
    assert torch.isclose(u.initial_alpha(torch.tensor([0.1, 0.2, 4.0, 6.0])), torch.tensor(5.0))
    assert set(dict(q.named_parameters())) == {"alpha", "beta"}
    assert "calibrated" in q.state_dict()


def test_wide_alpha_init_is_bit_codes():
    x = torch.tensor([-1.0, 3.0])  # mean|x| = 2
    assert torch.isclose(ActQuantizer(1, True).initial_alpha(x, "wide"), torch.tensor(4.0))
    u = ActQuantizer(1, False)
    assert torch.isclose(u.initial_alpha(torch.tensor([0.1, 0.2, 4.0, 6.0]), "wide"), torch.tensor(4 * 10.3 / 4))
    with torch.no_grad():
        u.beta.fill_(0.1)  # relative to the threshold: mean|x - β| = (0 + 0.1 + 3.9 + 5.9) / 4
    assert torch.isclose(u.initial_alpha(torch.tensor([0.1, 0.2, 4.0, 6.0]), "wide"), torch.tensor(9.9))
    # multi-bit keeps LSQ's rule: 2·mean|x| / √Qp, Qp = 1 for signed 2-bit
    assert torch.isclose(ActQuantizer(2, True).initial_alpha(x, "wide"), torch.tensor(4.0))


def test_alpha_init_reaches_every_quantizer_through_calibrate(tiny_config):
    import bitbert
    from bitbert.core.config import ConfigError
    from bitbert.quant.schedule import QuantInit
    from transformers import BertForSequenceClassification

    model = bitbert.binarize(BertForSequenceClassification(tiny_config), bitbert.QuantConfig.from_preset("bit", "1-1-1"))
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    assert quantizers
    seen = {}
    handles = [q.register_forward_pre_hook(lambda m, a: seen.setdefault(id(m), a[0].detach().clone()))
               for q in quantizers]
    batch = {"input_ids": torch.randint(0, tiny_config.vocab_size, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    bitbert.calibrate(model, [batch], alpha_init="wide")  # one batch: α is exactly the rule applied to what each site saw
    for h in handles:
        h.remove()
    for q in quantizers:
        want = (2 if q.signed else 4) * (seen[id(q)].float() - q.beta).abs().mean()
        assert torch.isclose(q.alpha, want, rtol=1e-5), q
    with pytest.raises(ConfigError, match="alpha_init"):
        QuantInit(alpha_init="huge")
    with pytest.raises(ValueError, match="alpha_init"):
        bitbert.calibrate(model, [batch], alpha_init="huge")


def test_sign_quantizer_has_no_parameters():
    q = ActQuantizer(1, True, "sign")
    assert list(q.parameters()) == []
    assert torch.equal(q(torch.tensor([-0.1, 0.1])), torch.tensor([-1.0, 1.0]))
