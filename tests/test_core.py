"""binarize / summary / save / load on tiny random models."""
import copy
import dataclasses
import json

import pytest
import torch
from transformers import (BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification, BertModel,
                          DistilBertConfig, DistilBertModel, RobertaForSequenceClassification)

import bitbert
from bitbert.quant.layers import QuantEmbedding, QuantLinear
from bitbert.quant.quantizers import ActQuantizer


def test_identity_conversion_gives_identical_outputs(tiny_config, batch):
    model = BertForSequenceClassification(tiny_config).eval()
    ref = model(**batch).logits
    for preset in ("fp", "bit", "bibert", "baseline"):
        conv = bitbert.binarize(copy.deepcopy(model), bitbert.QuantConfig.from_preset(preset, "32-32-32"))
        assert torch.equal(conv(**batch).logits, ref)


@pytest.mark.parametrize("preset", ["bit", "bibert", "baseline"])
@pytest.mark.parametrize("bits", ["1-1-1", "1-1-2", "1-1-4", "1-1-8"])
def test_binarize_every_preset_and_precision_trains(tiny_config, batch, preset, bits):
    model = BertForSequenceClassification(tiny_config)
    cfg = bitbert.QuantConfig.from_preset(preset, bits)
    bitbert.binarize(model, cfg)
    bitbert.calibrate(model, [batch])
    out = model(**batch, labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    sa = model.bert.encoder.layer[0].attention.self
    assert isinstance(sa.query, QuantLinear) and sa.query.weight.grad is not None
    assert isinstance(model.bert.embeddings.word_embeddings, QuantEmbedding)
    assert model.config._attn_implementation == "bitbert"
    assert not isinstance(model.classifier, QuantLinear)  # heads stay full precision
    if cfg.act_quantizer == "elastic":
        assert sa.bitbert.q_quant.alpha.grad is not None  # quantizer params live on their modules
    if preset == "bit":
        assert isinstance(model.bert.encoder.layer[0].intermediate.intermediate_act_fn, torch.nn.ReLU)
        assert model.bert.encoder.layer[0].output.dense.act_quant.signed is False


def test_binary_forward_really_is_binary(tiny_config, batch):
    model = bitbert.binarize(BertModel(tiny_config), bitbert.QuantConfig.from_preset("bit"))
    bitbert.calibrate(model, [batch])
    seen = []
    q = model.encoder.layer[1].intermediate.dense
    q.register_forward_hook(lambda m, a, o: seen.append(m.act_quant(a[0]).unique().numel()))
    model(**batch)
    assert seen == [2]
    w = q.quantized_weight()
    assert w.unique().numel() == 2
    emb = model.embeddings.word_embeddings(batch["input_ids"])
    assert all(row.unique().numel() <= 2 for row in emb.reshape(-1, emb.shape[-1]))


def test_roberta_and_other_heads(tiny_roberta_config, tiny_config, batch):
    ids = {**batch, "input_ids": batch["input_ids"].clamp(min=3)}
    for model in (RobertaForSequenceClassification(tiny_roberta_config), BertForMaskedLM(tiny_config),
                  BertForQuestionAnswering(tiny_config)):
        bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-1"))
        bitbert.calibrate(model, [ids])
        out = model(**ids)
        assert torch.isfinite(out[0]).all()


def test_unsupported_model_is_a_clear_error():
    model = DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    with pytest.raises(bitbert.UnsupportedModelError, match="supported model types.*bert.*roberta"):
        bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit"))


def test_config_validation_messages():
    with pytest.raises(bitbert.ConfigError, match="valid presets.*bit.*bibert.*baseline.*fp"):
        bitbert.QuantConfig.from_preset("xnor")
    with pytest.raises(bitbert.ConfigError, match="activation bits 3"):
        bitbert.QuantConfig.from_preset("bit", "1-1-3")
    with pytest.raises(bitbert.ConfigError, match="E-W-A"):
        bitbert.QuantConfig.from_preset("bit", "one")
    cfg = bitbert.QuantConfig.from_preset("bit")
    with pytest.raises(bitbert.ConfigError, match="ffn_act='relu'"):
        dataclasses.replace(cfg, ffn_act="gelu")
    with pytest.raises(bitbert.ConfigError, match="attention_probs"):
        dataclasses.replace(cfg, attention_probs="sparsemax")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.act_bits = 2
    assert dataclasses.replace(cfg, residual_rank=2).residual_rank == 2
    assert bitbert.QuantConfig.from_dict(cfg.to_dict()) == cfg


def test_quant_overrides_are_typed_and_checked():
    from bitbert.core.config import parse_quant_overrides
    from bitbert.training.distill import stage_configs

    assert parse_quant_overrides(None) == parse_quant_overrides(" ") == {}
    assert parse_quant_overrides("binarize_pooler=false, residual_rank=2,attention_probs=softmax,"
                                 "embeddings=word+position") == {
        "binarize_pooler": False, "residual_rank": 2, "attention_probs": "softmax",
        "embeddings": ("word", "position")}
    assert parse_quant_overrides("weight_centering=TRUE") == {"weight_centering": True}
    # the dedicated flags join in; left at their defaults they add nothing, contradicting --quant is an error
    assert parse_quant_overrides("binarize_pooler=0", residual_rank=0) == {"binarize_pooler": False}
    assert parse_quant_overrides("residual_rank=1", residual_rank=1) == {"residual_rank": 1}
    with pytest.raises(bitbert.ConfigError, match="residual_rank=2 but its own flag says 1"):
        parse_quant_overrides("residual_rank=2", residual_rank=1)
    # training settings are not the model's: --quant names their own flags
    with pytest.raises(bitbert.ConfigError, match="alpha_init is a training setting: --alpha-init"):
        parse_quant_overrides("alpha_init=wide")
    with pytest.raises(bitbert.ConfigError, match="'pooler=false' is not key=value with key in"):
        parse_quant_overrides("pooler=false")
    with pytest.raises(bitbert.ConfigError, match="bits come from --schedule"):
        parse_quant_overrides("act_bits=2")
    with pytest.raises(bitbert.ConfigError, match="binarize_pooler needs true or false, got 'maybe'"):
        parse_quant_overrides("binarize_pooler=maybe")
    with pytest.raises(bitbert.ConfigError, match="residual_rank needs an integer, got 'two'"):
        parse_quant_overrides("residual_rank=two")
    # applied to every stage's preset; a combination the config refuses fails for the whole schedule
    fp, w1a2, w1a1 = stage_configs("bit", "32-32-32,1-1-2,1-1-1", {"binarize_pooler": False})
    assert fp.is_identity and not w1a2.binarize_pooler and w1a1.attention_probs == "softmax_elastic"
    assert w1a1 == bitbert.QuantConfig.from_preset("bit").replace(binarize_pooler=False)
    with pytest.raises(bitbert.ConfigError, match="ffn_act='relu'"):
        stage_configs("bit", "1-1-2,1-1-1", {"ffn_act": "gelu"})


def test_save_load_roundtrip_identical(tmp_path, tiny_config, batch):
    model = BertForSequenceClassification(tiny_config)
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-2").replace(residual_rank=1))
    bitbert.calibrate(model, [batch])
    with torch.no_grad():  # make the learned params non-trivial
        for m in model.modules():
            if isinstance(m, ActQuantizer):
                m.beta.add_(0.01)
    model.eval()
    ref = model(**batch).logits
    bitbert.save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = bitbert.load(tmp_path / "m")
    assert torch.equal(loaded(**batch).logits, ref)
    assert loaded.bitbert_config == model.bitbert_config


def test_rebinarize_previous_student(tiny_config, batch):
    model = BertForSequenceClassification(tiny_config)
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-2"))
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-1"))
    assert model.bert.encoder.layer[0].attention.self.query.act_quant.bits == 1
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("fp"))
    assert type(model.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear


@pytest.mark.parametrize("inherit", [False, True])
def test_rebinarize_inherits_quantizers_only_when_asked(tiny_config, batch, inherit):
    model = BertForSequenceClassification(tiny_config)
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-2"))
    bitbert.calibrate(model, [batch])
    before = {n: m for n, m in model.named_modules() if isinstance(m, ActQuantizer)}
    with torch.no_grad():  # stand-ins for what the 1-1-2 stage learned
        for i, q in enumerate(before.values()):
            q.alpha.fill_(0.1 * (i + 1))
            q.beta.fill_(0.01 * (i + 1))
    learned = {n: (q.alpha.clone(), q.beta.clone()) for n, q in before.items()}
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-1"), inherit_quantizers=inherit)
    after = {n: m for n, m in model.named_modules() if isinstance(m, ActQuantizer)}
    assert after.keys() == before.keys() and all(after[n] is not before[n] for n in after)
    assert all(q.bits == 1 for q in after.values())
    # Q/K/V, attention probabilities, every linear input (per-channel β), FFN2 (unsigned), pooler
    assert len(after) == tiny_config.num_hidden_layers * 10 + 1
    calibrated = bitbert.calibrate(model, [batch], only_uncalibrated=True)
    for n, q in after.items():
        alpha, beta = learned[n]
        if inherit:
            assert torch.equal(q.alpha, alpha) and torch.equal(q.beta, beta), n
        else:
            assert torch.equal(q.beta, torch.zeros_like(beta)) and not torch.equal(q.alpha, alpha), n
    assert calibrated == (0 if inherit else len(after))


def test_summary_bert_base_near_paper():
    from transformers import BertConfig

    model = BertForSequenceClassification(BertConfig(num_labels=2))
    fp = bitbert.summary(model)
    assert abs(fp.size_mb - 418) < 2 and abs(fp.gflops - 22.5) < 0.5
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-1"))
    s = bitbert.summary(model, seq_len=128)
    assert 13.0 < s.size_mb < 16.0  # BiT Table 1: 13.4 MB (README explains the difference)
    assert 0.3 < s.gflops < 0.45  # BiT Table 1: 0.4 GFLOPs
    assert s.params_by_bits[1] == 12 * 7_077_888 + 589_824 + 30522 * 768
    assert "total" in str(s) and abs(s.fp32_size_mb - fp.size_mb) < 1e-6
    two = bitbert.summary(bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", "1-1-2")))
    assert 1.8 < two.gflops / s.gflops < 2.2  # BiT: 0.4 -> 0.8


def test_calibrate_only_uncalibrated_keeps_learned_alpha(tiny_config, batch):
    model = bitbert.binarize(BertForSequenceClassification(tiny_config), bitbert.QuantConfig.from_preset("bit"))
    bitbert.calibrate(model, [batch])
    q = model.bert.encoder.layer[0].attention.self.query.act_quant
    with torch.no_grad():
        q.alpha.fill_(7.0)
    pooler_q = model.bert.pooler.dense.act_quant
    pooler_q.calibrated.fill_(False)
    assert bitbert.calibrate(model, [batch], only_uncalibrated=True) == 1
    assert q.alpha.item() == 7.0 and bool(pooler_q.calibrated)
    bitbert.calibrate(model, [batch])
    assert q.alpha.item() != 7.0


@pytest.mark.parametrize("preset,bits,map_,qkv,map_bits,replaced", [
    ("bit", "1-1-1", "softmax_elastic", 1, 1, True), ("bit", "1-1-2", "softmax_elastic", 2, 2, True),
    ("bibert", "1-1-1", "bool", 1, 1, True), ("baseline", "1-1-4", "softmax_sign", 4, 1, True),
    ("bit", "1-1-32", "softmax", 32, 32, False), ("fp", "32-32-32", "softmax", 32, 32, False)])
def test_attention_mode_is_decided_once_from_the_config(preset, bits, map_, qkv, map_bits, replaced, tiny_config):
    from transformers import BertForSequenceClassification

    cfg = bitbert.QuantConfig.from_preset(preset, bits)
    mode = cfg.attention
    assert (mode.map, mode.qkv_bits, mode.map_bits, mode.replaced) == (map_, qkv, map_bits, replaced)
    model = bitbert.binarize(BertForSequenceClassification(tiny_config), cfg)
    attached = [getattr(layer.attention.self, "bitbert", None) for layer in model.bert.encoder.layer]
    assert all((a is not None) == replaced for a in attached)
    assert all(a.mode == mode for a in attached if a is not None)  # the module runs the config's decision
    assert cfg.replace(residual_rank=1).attention.replaced  # BiPFT's estimators need bitbert's attention


def test_old_config_with_training_fields_loads(tmp_path, tiny_config):
    """config.json files saved when QuantConfig carried alpha_init / inherit_quantizers still load:
    those training settings never changed what the model computes."""
    from transformers import BertForSequenceClassification

    model = bitbert.binarize(BertForSequenceClassification(tiny_config), bitbert.QuantConfig.from_preset("bit", "1-1-1"))
    bitbert.save(model, tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    assert "alpha_init" not in cfg["bitbert"] and "inherit_quantizers" not in cfg["bitbert"]
    cfg["bitbert"].update(alpha_init="wide", inherit_quantizers=True)  # what an older bitbert wrote
    path.write_text(json.dumps(cfg))
    loaded = bitbert.load(tmp_path / "m")
    assert loaded.bitbert_config == model.bitbert_config
    ids = torch.randint(0, tiny_config.vocab_size, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    with pytest.raises(bitbert.ConfigError, match="unknown QuantConfig fields"):
        bitbert.QuantConfig.from_dict({**model.bitbert_config.to_dict(), "bogus": 1})


def test_schedule_is_parsed_once_into_a_typed_value():
    from bitbert.quant.schedule import Schedule

    s = Schedule.parse(" 32-32-32, 1-1-2 ,1-1-1")
    assert s.stages == ("32-32-32", "1-1-2", "1-1-1") and str(s) == "32-32-32,1-1-2,1-1-1" and len(s) == 3
    assert Schedule.parse(s) is s and Schedule.parse(["1-1-2", "1-1-1"]) == Schedule(("1-1-2", "1-1-1"))
    assert [c.bits for c in s.configs("bibert")] == list(s.stages)
    with pytest.raises(bitbert.ConfigError, match="schedule must list E-W-A stages"):
        Schedule.parse(" , ")
    with pytest.raises(bitbert.ConfigError, match="activation bits 3"):
        Schedule.parse("1-1-3")


def test_old_import_paths_keep_working():
    import bitbert.training.distill as distill
    import bitbert.pipeline as pipeline
    from bitbert.training.classifier import load_classifier
    from bitbert.training.finetune import finetune
    from bitbert.training.task_data import load_task_data

    assert distill.finetune is finetune and pipeline.load_classifier is load_classifier
    assert pipeline.load_task_data is load_task_data
    with pytest.raises(AttributeError):
        distill.no_such_name
