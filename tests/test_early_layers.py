"""Wider activations in the first encoder layers (QuantConfig.early_layers / early_act_bits): the
per-layer config, the converted modules, saving and loading, the sentence-pair default of a run."""
import dataclasses

import pytest
import torch
from transformers import BertForSequenceClassification

import bitbert
from bitbert.core.config import ConfigError, QuantConfig, parse_quant_overrides
from bitbert.quant import model_files
from bitbert.quant.layers import QuantLinear
from bitbert.quant.schedule import PAIR_TASK_QUANT, task_overrides
from bitbert.tasks import get_task
from bitbert.training.distill import run_schedule
from bitbert.training.train import TrainConfig
from test_distill import tiny_task


def test_layer_config_widens_only_the_first_layers():
    cfg = QuantConfig.from_preset("bit").replace(early_layers=2, early_act_bits=4)
    assert [cfg.layer_config(i).act_bits for i in range(4)] == [4, 4, 1, 1]
    assert cfg.layer_config(2) is cfg and cfg.layer_config(0).attention.map == "softmax_elastic"
    assert cfg.layer_config(0).attention.qkv_bits == 4 and cfg.bits == "1-1-1"
    fp = QuantConfig.from_preset("bibert").replace(early_layers=1, early_act_bits=32).layer_config(0)
    assert fp.act_bits == 32 and not fp.binarize_qkv and fp.attention_probs == "softmax" and not fp.attention.replaced
    # not wider than the rest (a 1-1-32 or 1-1-4 stage of a schedule): nothing changes
    for bits in ("1-1-32", "1-1-4"):
        c = QuantConfig.from_preset("bit", bits).replace(early_layers=2, early_act_bits=4)
        assert not c.widens_early_layers and c.layer_config(0) is c


@pytest.mark.parametrize("changes,message", [({"early_act_bits": 3}, "early_act_bits=3 is not valid"),
                                             ({"early_layers": -1}, "early_layers must be an int >= 0"),
                                             ({"early_layers": True}, "early_layers must be an int >= 0")])
def test_bad_early_settings_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        QuantConfig.from_preset("bit").replace(**changes)


def test_quant_flag_parses_early_settings():
    assert parse_quant_overrides("early_layers=2,early_act_bits=8") == {"early_layers": 2, "early_act_bits": 8}


def test_converted_model_runs_wider_first_layers_and_reloads(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config)
    cfg = QuantConfig.from_preset("bit").replace(early_layers=1, early_act_bits=4)
    bitbert.binarize(model, cfg)
    first, second = model.bert.encoder.layer
    assert {m.act_quant.bits for m in first.modules() if isinstance(m, QuantLinear)} == {4}
    assert {m.act_quant.bits for m in second.modules() if isinstance(m, QuantLinear)} == {1}
    assert first.attention.self.bitbert.q_quant.bits == 4 and second.attention.self.bitbert.q_quant.bits == 1
    assert model.bert.pooler.dense.act_quant.bits == 1  # after the encoder: the model's own bits
    ids = torch.randint(5, 100, (3, 12))
    bitbert.calibrate(model, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}])
    model.eval()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    assert torch.isfinite(ref).all()
    model_files.save(model, tmp_path / "m")
    again = bitbert.load(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, ref)
    # the activation bits counted where the modules say: wider first layer, more bit-operations
    plain = BertForSequenceClassification(tiny_config)
    bitbert.binarize(plain, QuantConfig.from_preset("bit"))
    bitbert.calibrate(plain, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}])
    wide, narrow = bitbert.summary(model, seq_len=32), bitbert.summary(plain, seq_len=32)
    assert wide.size_mb == narrow.size_mb and wide.gflops > narrow.gflops  # same 1-bit weights, more work


def test_sentence_pair_tasks_get_wider_first_layers_by_default():
    assert task_overrides(True) == dict(PAIR_TASK_QUANT) == {"early_layers": 2, "early_act_bits": 4}
    assert task_overrides(False) == {}
    assert task_overrides(True, {"early_layers": 0}) == {"early_layers": 0, "early_act_bits": 4}
    assert task_overrides(False, {"binarize_pooler": False}) == {"binarize_pooler": False}


def test_a_pair_task_run_trains_and_records_the_wider_layers(tmp_path, tiny_config):
    data = dataclasses.replace(tiny_task(), spec=get_task("mrpc"))
    assert data.spec.is_pair
    teacher = BertForSequenceClassification(tiny_config)
    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=8, eval_batch_size=16, eval_every=0, seed=1, log_every=10**9)
    res = run_schedule(teacher, data, "bit", "1-1-1", cfg, tmp_path / "pair")
    layers = res.student.bert.encoder.layer
    assert layers[0].attention.self.query.act_quant.bits == 4 == layers[1].attention.self.query.act_quant.bits
    assert bitbert.load(tmp_path / "pair" / "stage0-1-1-1" / "model").bitbert_config.early_layers == 2
    single = run_schedule(teacher, tiny_task(), "bit", "1-1-1", cfg, tmp_path / "single")
    assert single.student.bert.encoder.layer[0].attention.self.query.act_quant.bits == 1
    off = run_schedule(teacher, data, "bit", "1-1-1", cfg, tmp_path / "off", quant_overrides={"early_layers": 0})
    assert off.student.bert.encoder.layer[0].attention.self.query.act_quant.bits == 1


def test_small_pair_tasks_without_augmented_data_are_flagged():
    from bitbert.training.recipes import SMALL_PAIR_TASK, needs_augmented_data

    assert needs_augmented_data(True, 3668, augmented=False)  # MRPC's size
    assert not needs_augmented_data(True, 3668, augmented=True)
    assert not needs_augmented_data(False, 3668, augmented=False)  # one text: SST-2-like tasks learn without
    assert not needs_augmented_data(True, SMALL_PAIR_TASK, augmented=False)  # QNLI-sized: BiT does not augment
