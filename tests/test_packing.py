"""Packed 1-bit export: layout, sizes, checksums and error handling (bitbert.deploy.packing)."""
import json
import os

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

import bitbert
from bitbert.deploy.kernels import unpack_bits
from bitbert.deploy.packing import FORMAT_VERSION, PackedFormatError, packed_summary, read_header, read_packed
from bitbert.quant.layers import QuantEmbedding, QuantLinear

TINY = dict(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def random_batch(n: int, length: int, vocab: int, seed: int, pad_id: int = 0, min_len: int = 2):
    """Random token ids (B, L) with random lengths, padded with pad_id, and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    lengths = torch.randint(min_len, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, pad_id), mask


def binary_model(preset: str = "bit", bits: str = "1-1-1", residual_rank: int = 0, cls=BertForSequenceClassification,
                 config=None, seed: int = 0, **changes):
    """A tiny binarized, calibrated classifier in eval mode, with β and biases moved off zero.

    Calibration leaves every β at 0 and Hugging Face initialises biases to 0. Then a binarizer's
    input is often exactly at its threshold (an integer dot of 0 gives 0), and PyTorch's sign of
    such a 0 is decided by the rounding order inside its float GEMM. Trained models have learned,
    non-zero β and biases; the small perturbation makes the random model look like one.
    """
    torch.manual_seed(seed)
    model = cls(config or BertConfig(**TINY))
    bitbert.binarize(model, bitbert.QuantConfig.from_preset(preset, bits).replace(residual_rank=residual_rank, **changes))
    ids, mask = random_batch(8, 24, model.config.vocab_size, seed + 1, model.config.pad_token_id or 0)
    bitbert.calibrate(model, [{"input_ids": ids, "attention_mask": mask}])
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("beta") and not name.endswith("LayerNorm.beta"):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.endswith(".bias") and "LayerNorm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif ".residual." in name:  # BiPFT estimators start at zero: give them something to do
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One PyTorch thread: on a loaded 2-core runner a second one waits for its time slice at every op
    (measured 10x slower exports); the models here are small."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bit_model():
    return binary_model("bit")


@pytest.fixture
def packed(bit_model, tmp_path):
    return bitbert.export(bit_model, tmp_path / "tiny.bitbert")


def test_export_layout_and_metadata(bit_model, packed):
    p = read_packed(packed)
    assert p.architecture == "BertForSequenceClassification" and p.spec.model_type == "bert"
    assert p.quant == bitbert.QuantConfig.from_preset("bit")
    assert p.config["hidden_size"] == 64 and p.float_dtype == "float32" and p.tokenizer_json is None
    header, meta = read_header(packed)
    assert meta["format"] == "bitbert.packed" and meta["format_version"] == str(FORMAT_VERSION)
    assert len(meta["payload_sha256"]) == 64
    q = p.layout.layers[0].query
    assert q.weight_bits.dtype == np.uint64 and q.weight_bits.shape == (64, 1)
    assert q.weight_scale.shape == (1,)  # BiT: one scale per tensor
    assert q.weight is None and "layers.0.query.weight" not in header  # no float copy of a binary weight
    assert q.act.meta() == {"kind": "elastic", "bits": 1, "signed": True}
    assert p.layout.layers[0].ffn_out.act.signed is False  # BiT's FFN2 input
    assert p.layout.position.weight.dtype == np.float32
    assert not any("calibrated" in k or k.startswith("bert.") for k in header)  # schema names, not HF paths


@pytest.mark.parametrize("preset", ["bit", "bibert"])
def test_bits_and_scales_reproduce_the_quantized_weights(preset, tmp_path):
    model = binary_model(preset)
    p = read_packed(bitbert.export(model, tmp_path / "m.bitbert"))
    base = model.bert
    stored = {base.embeddings.word_embeddings: p.layout.word, base.pooler.dense: p.layout.head_dense}
    for layer, rec in zip(base.encoder.layer, p.layout.layers):
        stored.update({layer.attention.self.query: rec.query, layer.attention.self.key: rec.key,
                       layer.attention.self.value: rec.value, layer.attention.output.dense: rec.attn_out,
                       layer.intermediate.dense: rec.ffn_in, layer.output.dense: rec.ffn_out})
    checked = 0
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            rec = stored[m]
            bits = unpack_bits(rec.weight_bits, m.weight.shape[1]).astype(bool)
            scale = rec.weight_scale[:, None]
            assert scale.shape[0] == (m.weight.shape[0] if isinstance(m, QuantEmbedding) or m.per_row else 1)
            rebuilt = np.where(bits, scale, -scale)
            np.testing.assert_array_equal(rebuilt, m.quantized_weight().detach().numpy())  # exact: centre folded in
            checked += 1
    assert checked == 1 + 2 * 6 + 1  # word embeddings, 6 linears per layer, pooler


def _arithmetic_bytes(model) -> float:
    """1 bit per binary weight, fp32 for everything else (bitbert.summary's size accounting)."""
    return bitbert.summary(model, seq_len=16).size_mb * 2**20


def test_tensor_bytes_equal_the_bit_arithmetic(bit_model, packed):
    header, _ = read_header(packed)
    payload = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert payload == pytest.approx(_arithmetic_bytes(bit_model), rel=0.02)


def test_bert_base_1_1_1_file_is_at_most_16_mb(tmp_path):
    torch.manual_seed(0)
    model = bitbert.binarize(BertForSequenceClassification(BertConfig(num_labels=2)),
                             bitbert.QuantConfig.from_preset("bit", "1-1-1")).eval()
    path = bitbert.export(model, tmp_path / "base.bitbert")
    size = path.stat().st_size
    assert size == pytest.approx(_arithmetic_bytes(model), rel=0.02)
    assert size <= 16 * 2**20, f"{size / 2**20:.2f} MiB"
    half = bitbert.export(model, tmp_path / "base16.bitbert", float_dtype="float16")
    assert half.stat().st_size < size - 0.8 * 2**20  # position embeddings alone halve 1.5 MiB
    assert "1-bit linear weights" in packed_summary(path)


def test_float16_keeps_scales_and_quantizers_in_float32(bit_model, tmp_path):
    p = read_packed(bitbert.export(bit_model, tmp_path / "h.bitbert", float_dtype="float16"))
    assert p.float_dtype == "float16"
    layer = p.layout.layers[0]
    assert p.layout.position.weight.dtype == np.float16 and layer.ffn_in.bias.dtype == np.float16
    assert layer.query.act.beta.dtype == np.float32 and layer.attention.p.alpha.dtype == np.float32
    assert layer.query.weight_scale.dtype == np.float32


def test_packed_summary_lists_groups_and_totals(packed):
    text = packed_summary(packed)
    for group in ("1-bit linear weights", "1-bit embeddings", "LayerNorms", "activation binarizers", "fp32 MiB"):
        assert group in text
    assert "smaller" in text.splitlines()[-1]


def test_export_rejects_other_architectures_and_dtypes(tmp_path, bit_model):
    mlm = bitbert.binarize(BertForMaskedLM(BertConfig(**TINY)), bitbert.QuantConfig.from_preset("bit"))
    with pytest.raises(ValueError, match="supported architectures"):
        bitbert.export(mlm, tmp_path / "x.bitbert")
    with pytest.raises(ValueError, match="float_dtype"):
        bitbert.export(bit_model, tmp_path / "x.bitbert", float_dtype="bfloat16")
    assert not (tmp_path / "x.bitbert").exists()


def test_export_is_atomic_and_overwrites(bit_model, packed):
    before = read_header(packed)
    bitbert.export(bit_model, packed)
    assert read_header(packed) == before  # same tensors, same hashes (metadata key order may vary)
    assert os.listdir(packed.parent) == [packed.name]  # no temporary left behind


def test_multibit_models_export_their_1bit_weights(tmp_path):
    p = read_packed(bitbert.export(binary_model("bit", "1-1-2"), tmp_path / "m.bitbert"))
    layer = p.layout.layers[0]
    assert layer.query.act.bits == 2 and layer.attention.q.bits == 2 and layer.query.weight_bits is not None


# ----------------------------------------------------------------------------- bad files


def _rewrite_metadata(path, **changes):
    """Rewrite a packed file's metadata in place, keeping its payload (and so its payload hash)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_packed(tmp_path / "nope.bitbert")
    with pytest.raises(FileNotFoundError):
        bitbert.load_packed(tmp_path / "nope.bitbert")


@pytest.mark.parametrize("cut", [0.999, 0.5, 0.01, 5])
def test_truncated_file_is_a_format_error(packed, cut):
    data = packed.read_bytes()
    packed.write_bytes(data[: int(len(data) * cut) if cut < 1 else cut])
    with pytest.raises(PackedFormatError, match="truncated|checksum"):
        read_packed(packed)


def test_corrupted_payload_fails_the_checksum(packed):
    data = bytearray(packed.read_bytes())
    data[-100] ^= 0x10
    packed.write_bytes(bytes(data))
    with pytest.raises(PackedFormatError, match="checksum"):
        bitbert.load_packed(packed)


def test_corrupted_header_fails_the_checksum(packed):
    _rewrite_metadata(packed, float_dtype="float16")
    with pytest.raises(PackedFormatError, match="checksum"):
        read_packed(packed)


def test_unknown_version_names_found_and_supported(packed):
    _rewrite_metadata(packed, format_version="99")
    with pytest.raises(PackedFormatError, match=r"version '99'.*\[2\]"):
        read_packed(packed)


def test_version_1_files_are_refused_with_the_reason(packed):
    _rewrite_metadata(packed, format_version="1")
    with pytest.raises(PackedFormatError, match=r"version '1' is no longer read.*re-export"):
        bitbert.load_packed(packed)


def test_not_a_packed_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(PackedFormatError, match="not a bitbert packed model"):
        read_packed(path)
