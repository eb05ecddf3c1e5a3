"""The packed CPU engine against the PyTorch fake-quantized forward (bitbert.deploy.engine), its CLI and bench."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

import bitbert
from bitbert.cli import main
from bitbert.deploy.engine import EngineError
from test_packing import TINY, binary_model, one_torch_thread, random_batch  # noqa: F401 (autouse fixture)

SHARED = Path(__file__).resolve().parents[2] / "shared"
WORDS = ("the a an and or but not is was are film movie story actor plot good bad great awful fun dull "
         "long short funny sad it this that very too so of in on with to for as by at from").split()


def tiny_tokenizer():
    """A WordPiece tokenizer over WORDS (ids < 60), wrapped for bitbert.save."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "!"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def tiny_roberta():
    config = RobertaConfig(**{**TINY, "max_position_embeddings": 66}, pad_token_id=1, type_vocab_size=1)
    return binary_model("bit", cls=RobertaForSequenceClassification, config=config)


def pow2_qk_scales(model):
    """Round the Q and K scales α to powers of two. Multi-bit Q·K dots are integers, so scores are
    often exactly 0, and BiBERT's bool map thresholds at 0: PyTorch's float GEMM gets those ties
    right only when α_q α_k · level products are exact, which powers of two make them (the engine's
    integer dot is always exact)."""
    with torch.no_grad():
        for m in model.modules():
            att = getattr(m, "bitbert", None)
            if att is not None:
                for quant in (att.q_quant, att.k_quant):
                    if getattr(quant, "alpha", None) is None:  # a 1-bit sign layer: no scale
                        continue
                    quant.alpha.copy_(2.0 ** torch.round(torch.log2(quant.alpha)))
    return model


MODELS = {
    "bit": lambda: binary_model("bit"),
    "bibert": lambda: binary_model("bibert"),
    "baseline": lambda: binary_model("baseline"),
    "bipft-rank1": lambda: binary_model("bit", residual_rank=1),
    "roberta-bit": tiny_roberta,
    # multi-bit activations, bit-serial (BiT's W1A2 / W1A4 students)
    "bit-1-1-2": lambda: binary_model("bit", "1-1-2"),
    "bit-1-1-4": lambda: binary_model("bit", "1-1-4"),
    "bibert-1-1-2": lambda: pow2_qk_scales(binary_model("bibert", "1-1-2")),
    "baseline-1-1-2": lambda: binary_model("baseline", "1-1-2"),
    "bipft-rank1-1-1-2": lambda: binary_model("bit", "1-1-2", residual_rank=1),
    # a 1-1-1 student whose first layer runs wider activations (QuantConfig.early_layers)
    "bit-early-a8": lambda: binary_model("bit", early_layers=1, early_act_bits=8),
    "bit-early-a4": lambda: binary_model("bit", early_layers=1, early_act_bits=4),
    "bibert-early-a2": lambda: pow2_qk_scales(binary_model("bibert", early_layers=1, early_act_bits=2)),
}


def torch_logits(model, ids, mask, types=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()


@pytest.mark.parametrize("name", list(MODELS))
def test_engine_matches_pytorch(name, tmp_path):
    model = MODELS[name]()
    engine = bitbert.load_packed(bitbert.export(model, tmp_path / "m.bitbert"), threads=1)
    pad = model.config.pad_token_id or 0
    for seed, (n, length) in enumerate([(1, 7), (5, 24), (16, 64 if name != "roberta-bit" else 60)]):
        ids, mask = random_batch(n, length, model.config.vocab_size, seed, pad_id=pad)
        types = None
        if name != "roberta-bit":
            types = (torch.arange(length)[None, :] >= length // 2).long().expand(n, -1) * mask
        ref = torch_logits(model, ids, mask, types)
        got = engine.logits(ids.numpy(), mask.numpy(), None if types is None else types.numpy())
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3 * np.abs(ref).max())
    # Predictions on a few hundred random sequences (padded batches of mixed lengths).
    ids, mask = random_batch(300, 32, model.config.vocab_size, 99, pad_id=pad)
    ref = np.concatenate([torch_logits(model, ids[i : i + 100], mask[i : i + 100]) for i in range(0, 300, 100)])
    got = np.concatenate([engine.logits(ids[i : i + 100].numpy(), mask[i : i + 100].numpy())
                          for i in range(0, 300, 100)])
    assert (got.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["bit", "bibert", "baseline", "bit-1-1-2", "bibert-1-1-2", "baseline-1-1-2"])
def test_compiled_layers_give_the_steps_bits(name, tmp_path):
    """All-1-bit and all-2-bit layers run as one compiled call (engine.fused); step by step they give
    the same bits."""
    import dataclasses

    engine = bitbert.load_packed(bitbert.export(MODELS[name](), tmp_path / "m.bitbert"), threads=1)
    ids, mask = random_batch(5, 24, 200, 4)
    compiled = engine.logits(ids.numpy(), mask.numpy())
    layers = engine.model.layers
    assert all(layer.compiled is not None for layer in layers)
    object.__setattr__(engine.model, "layers", tuple(dataclasses.replace(la, compiled=None) for la in layers))
    np.testing.assert_array_equal(engine.logits(ids.numpy(), mask.numpy()).view(np.int32), compiled.view(np.int32))


def test_trailing_padding_costs_nothing_and_changes_nothing(tmp_path):
    """A batch padded past its longest sequence runs at that sequence's length, with the same logits."""
    from bitbert.deploy.engine.packed_engine import _trailing_padding_dropped

    engine = bitbert.load_packed(bitbert.export(MODELS["bit"](), tmp_path / "m.bitbert"), threads=1)
    ids, mask = (t.numpy() for t in random_batch(4, 20, 200, 5))
    mask[:, 17:] = 0  # the longest sequence ends at 17
    padded_ids = np.concatenate([ids, np.zeros((4, 44), ids.dtype)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((4, 44), mask.dtype)], axis=1)
    trimmed = _trailing_padding_dropped(padded_ids, padded_mask.astype(bool), np.zeros_like(padded_ids))
    assert trimmed[0].shape == (4, 17)
    np.testing.assert_array_equal(engine.logits(padded_ids, padded_mask).view(np.int32),
                                  engine.logits(ids[:, :17], mask[:, :17]).view(np.int32))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_threads_do_not_change_results(tmp_path):
    path = bitbert.export(binary_model("bit"), tmp_path / "m.bitbert")
    ids, mask = random_batch(6, 40, 200, 3)
    one = bitbert.load_packed(path, threads=1).logits(ids.numpy(), mask.numpy())
    two = bitbert.load_packed(path, threads=2).logits(ids.numpy(), mask.numpy())
    np.testing.assert_array_equal(one, two)
    with pytest.raises(ValueError, match="threads"):
        bitbert.load_packed(path, threads=0)


def test_input_validation(tmp_path):
    engine = bitbert.load_packed(bitbert.export(binary_model("bit"), tmp_path / "m.bitbert"))
    with pytest.raises(ValueError, match="maximum 64"):
        engine.logits(np.ones((1, 65), np.int64))
    with pytest.raises(ValueError, match="token ids"):
        engine.logits(np.full((1, 4), 200))
    with pytest.raises(ValueError, match="shape"):
        engine.logits(np.ones((2, 4), np.int64), np.ones((2, 5)))
    with pytest.raises(EngineError, match="no tokenizer"):
        engine.predict(["hello"])


def test_engine_refuses_full_precision_activations(tmp_path):
    path = bitbert.export(binary_model("bit", "1-1-32"), tmp_path / "m.bitbert")
    with pytest.raises(EngineError, match="1- to 8-bit activations; use PyTorch for bits 1-1-32"):
        bitbert.load_packed(path)


def test_engine_refuses_full_precision_early_layers(tmp_path):
    path = bitbert.export(binary_model("bit", early_layers=1, early_act_bits=32), tmp_path / "m.bitbert")
    with pytest.raises(EngineError, match="early_act_bits=32"):
        bitbert.load_packed(path)


def test_engine_refuses_full_precision_weights(tmp_path):
    model = bitbert.binarize(binary_model("bit"), bitbert.QuantConfig.from_preset("bit").replace(weight_bits=32))
    with pytest.raises(EngineError, match="use PyTorch for bits 1-32-1"):
        bitbert.load_packed(bitbert.export(model, tmp_path / "m.bitbert"))


def test_predict_pairs_and_truncation_warning(tmp_path):
    tok = tiny_tokenizer()
    model = binary_model("bit")
    engine = bitbert.load_packed(bitbert.export(model, tmp_path / "m.bitbert", tokenizer=tok))
    texts = ["a good film", "the plot was dull and too long", ("a great story", "it is fun")]
    out = engine.predict(texts)
    assert [set(r) for r in out] == [{"label", "scores"}] * 3
    assert all(r["label"] in ("LABEL_0", "LABEL_1") and abs(sum(r["scores"]) - 1) < 1e-6 for r in out)
    enc = tok(["a good film", "the plot was dull and too long"], padding=True, return_tensors="pt")
    pair = tok("a great story", "it is fun", return_tensors="pt")
    expected = [*torch_logits(model, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).argmax(1),
                torch_logits(model, pair["input_ids"], pair["attention_mask"], pair["token_type_ids"]).argmax(1)[0]]
    assert [r["label"] for r in out] == [f"LABEL_{k}" for k in expected]
    long_text = " ".join(["good"] * 100)
    with pytest.warns(UserWarning, match="truncated"):
        first = engine.predict([long_text])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per engine
        assert engine.predict([long_text]) == first


NO_TORCH = textwrap.dedent("""
    import importlib.util, sys, types
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    pkg = types.ModuleType("bitbert")  # the package __init__ imports the training stack: skip it
    pkg.__path__ = [sys.argv[1]]
    sys.modules["bitbert"] = pkg
    import numpy as np
    from bitbert.deploy.engine import load_packed
    from bitbert.deploy.packing import packed_summary
    engine = load_packed(sys.argv[2])
    print(engine.logits(np.array([[2, 9, 10, 3]])).tolist())
    print(engine.predict(["a good film"])[0]["label"])
    print(len(packed_summary(sys.argv[2])) > 0)
""")


def test_engine_never_imports_torch(tmp_path):
    model = binary_model("bit")
    path = bitbert.export(model, tmp_path / "m.bitbert", tokenizer=tiny_tokenizer())
    pkg = Path(bitbert.__file__).parent
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(pkg), str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logits, label, summary = proc.stdout.strip().splitlines()
    np.testing.assert_allclose(json.loads(logits), torch_logits(model, torch.tensor([[2, 9, 10, 3]]), None),
                               atol=1e-6)
    assert label.startswith("LABEL_") and summary == "True"


def test_cli_export_predict_summary(tmp_path, capsys):
    tok = tiny_tokenizer()
    model = binary_model("bibert")
    bitbert.save(model, tmp_path / "model", tok)
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "m.bitbert")]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizer"] is True
    assert main(["predict", str(tmp_path / "m.bitbert"), "a good film", "an awful , dull plot"]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    enc = tok(["a good film", "an awful , dull plot"], padding=True, return_tensors="pt")
    expected = torch_logits(model, enc["input_ids"], enc["attention_mask"]).argmax(1)
    assert [l["label"] for l in lines] == [f"LABEL_{k}" for k in expected]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a good film"}\n{"text": "a story", "text_b": "it is fun"}\n')
    plain = tmp_path / "in.txt"
    plain.write_text("a good film\n\nthe movie was great\n")
    for path, n in ((jsonl, 2), (plain, 2)):
        assert main(["predict", str(tmp_path / "m.bitbert"), "--input", str(path), "--threads", "1"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == n
    assert main(["summary", str(tmp_path / "m.bitbert")]) == 0
    assert "1-bit linear weights" in capsys.readouterr().out
    (tmp_path / "bad.bitbert").write_bytes(b"\x00" * 64)
    assert main(["predict", str(tmp_path / "bad.bitbert"), "x"]) == 2
    assert "not a bitbert packed file" in capsys.readouterr().err


def test_bench_runs_on_a_tiny_shape(tmp_path):
    from bitbert.deploy.bench import run_bench

    out = tmp_path / "bench.json"
    rec = run_bench(shape="tiny", batch_sizes=[1, 2], seq_len=16, threads=[1], repeats=1, gemm_seconds=0.01,
                    out=out, argv=["bench", "--shape", "tiny"])
    saved = json.loads(out.read_text())
    assert saved["command"] == "bitbert bench --shape tiny" and saved["hardware"]["cores"] >= 1
    assert [(r["threads"], r["batch"]) for r in saved["results"]] == [(1, 1), (1, 2)]
    row = saved["results"][0]
    assert row["engine"]["median_s"] > 0 and row["fp32"]["median_s"] > 0 and row["int8"]["median_s"] > 0
    assert row["speedup_vs_fp32"] == pytest.approx(row["fp32"]["median_s"] / row["engine"]["median_s"])
    assert {g["N"] for g in saved["gemm"]} == {64, 128} and all(g["prepacked"] for g in saved["gemm"])
    assert "| packed engine |" in rec["table"] and saved["versions"]["numba"] == numba.__version__
    phases = saved["phases"]
    parts = sum(v["ms"] for k, v in phases.items() if k != "forward")
    assert parts == pytest.approx(phases["forward"]["ms"], rel=1e-6) and phases["GEMMs"]["ms"] > 0
    assert phases["attention"]["ms"] > 0 and "Where the engine's time goes" in rec["table"]
    from bitbert.deploy.ort_baseline import missing

    if missing() is None:  # the bitbert[bench] extra is installed: both ONNX Runtime columns measured
        assert row["ort_fp32"]["median_s"] > 0 and row["ort_int8"]["median_s"] > 0 and "skipped" not in saved


def test_bench_without_onnxruntime_says_what_it_skipped(monkeypatch):
    import bitbert.deploy.ort_baseline
    from bitbert.deploy.bench import run_bench

    monkeypatch.setattr(bitbert.deploy.ort_baseline, "missing", lambda: "ONNX Runtime columns skipped (x): pip install y")
    rec = run_bench(shape="tiny", batch_sizes=[1], seq_len=16, threads=[1], repeats=1, gemm_seconds=0)
    assert rec["skipped"] == ["ONNX Runtime columns skipped (x): pip install y"] and "pip install y" in rec["table"]
    assert "ort_int8" not in rec["results"][0] and rec["results"][0]["int8"]["median_s"] > 0


def test_profiling_leaves_the_engine_as_it_was(tmp_path):
    from bitbert.deploy.bench import export_random_bit, random_classifier
    from bitbert.deploy.engine import layers, load_packed
    from bitbert.deploy.engine.profile import profile_phases

    engine = load_packed(export_random_bit(random_classifier("tiny"), tmp_path / "m.bitbert", 16), threads=1)
    ids = np.random.default_rng(0).integers(1, 1000, (2, 16))
    before, gemm, attention = engine.logits(ids), layers.xnor_gemm, engine.model.layers[0].attention
    profile_phases(engine, ids, repeats=1)
    assert np.array_equal(engine.logits(ids), before)
    assert layers.xnor_gemm is gemm and engine.model.layers[0].attention is attention


# ----------------------------------------------------------------------------- real model (slow)

MINILM = SHARED / "models" / "minilm-l6-h384-fp16"
SST2_DEV = SHARED / "data" / "glue" / "SST-2" / "dev.tsv"


@pytest.mark.slow
@pytest.mark.skipif(not (MINILM.is_dir() and SST2_DEV.is_file()), reason="needs ../shared MiniLM and SST-2")
@pytest.mark.parametrize("bits", ["1-1-1", "1-1-2"])
def test_minilm_bit_on_sst2_dev_predicts_as_pytorch(tmp_path, bits):
    """All 872 SST-2 dev sentences, MiniLM-L6 binarized with BiT: the engine predicts as PyTorch (at
    its default thread count) does.

    Every float32 step of the engine is PyTorch's own (LayerNorm moments, softmax, exp, GELU, the
    thresholds), except the summation order inside PyTorch's float GEMMs, which the engine replaces
    by exact integer dots. That order is not stable even within PyTorch: for this calibrated but
    untrained model (random head, tiny margins), PyTorch at 1 thread and at 2 threads disagree with
    each other on 1-2 of the 872 predictions at 1-1-1 for each of seeds 0-5, and the engine's
    disagreements with either are of the same kind and number (values within ~1e-7 of a binarization
    threshold). So the yardstick is PyTorch against itself: the engine may flip no more predictions,
    and move no more sentences' logits (beyond 1e-3 of their scale), than PyTorch at 1 thread does
    against its default, or than the 2 of 872 seen across seeds where that is fewer (with seed 3 at
    1-1-1 PyTorch moves 2 sentences and flips none; the engine moved and flipped 1). A 2-bit
    activation has three thresholds instead of one: at 1-1-2 PyTorch's thread counts disagree on 4
    predictions here. The default `bitbert distill`
    job's students (1-1-2 and 1-1-1, trained, wider margins) scored the same full-dev accuracy on
    the engine as in PyTorch.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    from bitbert.quant.quantizers import ActQuantizer

    if (os.cpu_count() or 1) < 2:
        pytest.skip("the yardstick is PyTorch at 1 thread against its default: needs 2 or more cores")
    torch.set_num_threads(os.cpu_count() or 1)  # PyTorch's default; the module fixture restores 1 after
    torch.manual_seed(3)
    model = BertForSequenceClassification.from_pretrained(MINILM, num_labels=2, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(MINILM)
    with SST2_DEV.open() as f:
        texts = [row[0] for row in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    assert len(texts) == 872
    bitbert.binarize(model, bitbert.QuantConfig.from_preset("bit", bits))
    bitbert.calibrate(model, [dict(tok(texts[:64], padding=True, return_tensors="pt"))])
    model.eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # as a trained model's β: not exactly at the calibration's 0
        for m in model.modules():
            if isinstance(m, ActQuantizer) and m.kind == "elastic":
                m.beta.add_(torch.randn(m.beta.shape, generator=g) * 0.05 * m.alpha.abs())
    engine = bitbert.load_packed(bitbert.export(model, tmp_path / "minilm.bitbert", tokenizer=tok))
    batches = [tok(texts[i : i + 64], padding=True, return_tensors="pt") for i in range(0, len(texts), 64)]
    keys = ("input_ids", "attention_mask", "token_type_ids")

    def pytorch() -> np.ndarray:
        return np.concatenate([torch_logits(model, *(enc[k] for k in keys)) for enc in batches])

    ref = pytorch()
    got = np.concatenate([engine.logits(*(enc[k].numpy() for k in keys)) for enc in batches])
    labels = np.array([int(r["label"].removeprefix("LABEL_")) for r in engine.predict(texts)])

    def differ(logits: np.ndarray) -> tuple[int, int]:
        """(flipped predictions, sentences whose logits moved) against the reference"""
        moved = np.abs(logits - ref).max(1) > 1e-3 * np.abs(ref).max()
        return int((logits.argmax(1) != ref.argmax(1)).sum()), int(moved.sum())

    assert (labels == got.argmax(1)).all()
    torch.set_num_threads(1)
    own = differ(pytorch())  # PyTorch against itself
    engine_diff = differ(got)
    assert engine_diff[0] <= max(own[0], 2) and engine_diff[1] <= max(own[1], 2), (engine_diff, own)
