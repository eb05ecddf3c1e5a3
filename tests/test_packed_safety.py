"""A packed file from a stranger: crafted files (checksums recomputed) give one PackedFormatError
naming the field, before any kernel runs; the out-of-file SHA-256 proves which file it is."""
import base64
import json
import zlib

import numpy as np
import pytest

import bitbert
from bitbert.cli import main
from bitbert.deploy.packing import MAX_TOKENIZER, PackedFormatError, file_sha256, read_packed
from packed_mutations import rewrite, with_metadata, with_tensors
from test_packing import binary_model, one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "m.bitbert"
    return bitbert.export(binary_model("bit"), path).read_bytes()


@pytest.fixture
def packed(exported, tmp_path):
    path = tmp_path / "m.bitbert"
    path.write_bytes(exported)
    return path


def set_config(**changes):
    return lambda cfg: {**cfg, **changes}


def refused(path, *fields):
    with pytest.raises(PackedFormatError) as err:
        bitbert.load_packed(path, threads=1)
    message = str(err.value)
    assert str(path) in message and all(f in message for f in fields), message
    return message


def test_resealed_file_still_loads(packed):
    """The mutation helpers themselves keep a file valid: what the tests below change is what breaks it."""
    rewrite(packed, lambda d: with_metadata(d, "model_config", lambda c: c))
    rewrite(packed, lambda d: with_tensors(d, lambda t: None))
    assert bitbert.load_packed(packed, threads=1).logits(np.array([[2, 5, 3]])).shape == (1, 2)


def test_repeated_value_weight_bits_is_a_format_error(packed):
    """Was heap corruption: `value.weight_bits` stacked 4x ran the GEMM past the packed rows."""
    def repeat(t):
        t["layers.0.value.weight_bits"] = np.concatenate([t["layers.0.value.weight_bits"]] * 4)
    refused(rewrite(packed, lambda d: with_tensors(d, repeat)), "layers.0.value.weight_bits", "uint64[256, 1]",
            "[64, 1]")


def test_pad_token_id_1e9_is_a_format_error(packed):
    """Was a SIGSEGV: padding positions indexed the embedding tables at 1e9."""
    refused(rewrite(packed, lambda d: with_metadata(d, "model_config", set_config(pad_token_id=10**9))),
            "pad_token_id", "[0, 199]")
    refused(rewrite(packed, lambda d: with_metadata(d, "model_config", set_config(pad_token_id=1e9))),
            "pad_token_id")


def test_zero_attention_heads_is_a_format_error(packed):
    """Was a ZeroDivisionError."""
    refused(rewrite(packed, lambda d: with_metadata(d, "model_config", set_config(num_attention_heads=0))),
            "num_attention_heads")


def test_heads_that_do_not_divide_hidden_are_a_format_error(packed):
    refused(rewrite(packed, lambda d: with_metadata(d, "model_config", set_config(num_attention_heads=3))),
            "num_attention_heads", "do not divide hidden_size 64")


def test_three_element_layernorm_is_a_format_error(packed):
    """Was a silent out-of-bounds read: a 3-element LayerNorm weight gave different logits per call."""
    def shrink(t):
        t["layers.1.ln_ffn.weight"] = t["layers.1.ln_ffn.weight"][:3].copy()
    refused(rewrite(packed, lambda d: with_tensors(d, shrink)), "layers.1.ln_ffn.weight", "[3]", "[64]")


def test_missing_extra_and_retyped_tensors_are_format_errors(exported, tmp_path):
    cases = {
        "missing": (lambda t: t.pop("head.out.bias"), ["head.out.bias", "missing"]),
        "extra": (lambda t: t.update(stowaway=np.zeros(3, np.float32)), ["stowaway", "not in the layout"]),
        "retyped": (lambda t: t.update({"layers.0.query.weight_scale": t["layers.0.query.weight_scale"]
                                        .astype(np.float64)}), ["layers.0.query.weight_scale", "float64"]),
        "nan": (lambda t: t["embeddings.position.weight"].__setitem__((0, 0), np.nan),
                ["embeddings.position.weight", "non-finite"]),
        "zero alpha": (lambda t: t["layers.0.attention.q.alpha"].__setitem__(0, 0.0), ["layers.0.attention.q.alpha"]),
    }
    for name, (change, fields) in cases.items():
        path = tmp_path / f"{name}.bitbert"
        path.write_bytes(exported)
        refused(rewrite(path, lambda d: with_tensors(d, change)), *fields)


def test_inconsistent_metadata_is_a_format_error(exported, tmp_path):
    def layout(change):
        return lambda d: with_metadata(d, "layout", change)

    def drop_layer(m):
        m["layers"].pop()
        return m

    cases = {
        "hidden": (lambda d: with_metadata(d, "model_config", set_config(hidden_size=128)), ["word.cols", "128"]),
        "layers": (layout(drop_layer), ["layout.layers", "num_hidden_layers=2"]),
        "mode": (layout(lambda m: (m["layers"][0]["attention"].update(mode="sparse"), m)[1]),
                 ["layout.layers[0].attention.mode", "sparse"]),
        "bits": (layout(lambda m: (m["layers"][0]["query"]["act"].update(bits=3), m)[1]),
                 ["layout.layers[0].query.act.bits"]),
        "labels": (lambda d: with_metadata(d, "model_config", set_config(id2label={"0": "a", "2": "b"})),
                   ["id2label", "0..1"]),
        "label count": (lambda d: with_metadata(d, "model_config", set_config(id2label={"0": "a", "1": "b", "2": "c"})),
                        ["head_out.out", "gives 3"]),
        "eps": (lambda d: with_metadata(d, "model_config", set_config(layer_norm_eps=1e-60)), ["layer_norm_eps"]),
        "roberta positions": (lambda d: with_metadata(d, "model_config", set_config(model_type="roberta")),
                              ["model_type"]),
        "quant config": (lambda d: with_metadata(d, "quant_config", lambda q: {**q, "act_bits": "one"}),
                         ["quant_config"]),
    }
    for name, (mutate, fields) in cases.items():
        path = tmp_path / f"{name}.bitbert"
        path.write_bytes(exported)
        refused(rewrite(path, mutate), *fields)


def test_tokenizer_bomb_is_refused(packed):
    """Was unbounded: a 0.58 MB file inflated its tokenizer by 750 MB."""
    bomb = base64.b64encode(zlib.compress(b" " * (MAX_TOKENIZER + 1), 9)).decode()
    refused(rewrite(packed, lambda d: _set_raw(d, tokenizer=bomb)), "tokenizer", "64 MiB")


def _set_raw(data, **meta):
    from packed_mutations import reseal, split

    header, payload = split(data)
    header["__metadata__"].update(meta)
    return reseal(header, payload)


def test_tokenizer_with_ids_past_the_vocabulary_is_refused(packed, tmp_path):
    from test_engine import tiny_tokenizer

    tok = tiny_tokenizer().backend_tokenizer
    tok.add_tokens([f"extra{i}" for i in range(300)])  # ids up to ~360 > vocab 200
    text = base64.b64encode(zlib.compress(tok.to_str().encode())).decode()
    rewrite(packed, lambda d: _set_raw(d, tokenizer=text))
    engine = bitbert.load_packed(packed, threads=1)
    with pytest.raises(PackedFormatError, match="tokens, more than the model's vocabulary of 200"):
        engine.predict(["a good film"])


def test_sha256_proves_which_file_is_loaded(packed, tmp_path, capsys):
    digest = file_sha256(packed)
    assert read_packed(packed, sha256=digest.upper()).spec.hidden == 64
    other = tmp_path / "other.bitbert"
    other.write_bytes(bitbert.export(binary_model("bit", seed=1), other).read_bytes())
    with pytest.raises(PackedFormatError, match=f"SHA-256 .* is not the expected {digest}"):
        bitbert.load_packed(other, sha256=digest)


def test_cli_export_prints_the_sha256(tmp_path, capsys):
    bitbert.save(binary_model("bit"), tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "m.bitbert")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sha256"] == file_sha256(tmp_path / "m.bitbert")
    assert main(["predict", str(tmp_path / "m.bitbert"), "x", "--sha256", "0" * 64]) == 2
    assert "is not the expected" in capsys.readouterr().err
