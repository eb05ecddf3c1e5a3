"""BiPFT pretraining on a tiny random BERT, a tiny WordPiece tokenizer and a few-KB corpus: run,
resume, NSP on/off, bad input, the CLI, and fine-tuning the result without a teacher."""
import dataclasses
import json
import random
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForPreTraining, BertModel, PreTrainedTokenizerFast

import bitbert
from bitbert.cli import main
from bitbert.quant.calibration import uncalibrated
from bitbert.quant.quantizers import ActQuantizer
from bitbert.tasks.corpus import CorpusError
from bitbert.training.pretraining import PretrainConfig, PretrainLoss, PretrainingObjective, build_student, pretrain
from conftest import wordpiece_tokenizer

WORDS = ("the a cat dog bird fish sat ran flew swam on under over near mat log tree pond quickly slowly and "
         "then it was red blue green big small old young").split()

# seq 16, batch 4: 64 tokens a step. The corpus has ~2.9k tokens (~200 blocks; every 5th held out).
FAST = PretrainConfig(seq_len=16, batch_size=4, holdout_every=5, heldout_sequences=8, eval_batch_size=8,
                      eval_every=3, log_every=1, num_workers=0, shuffle_buffer=16, calibration_batches=2,
                      max_steps=6, lr=1e-3)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return wordpiece_tokenizer(WORDS + [".", ","])


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A teacher without heads (like MiniLM), one with MLM and NSP heads, and the corpus."""
    root = tmp_path_factory.mktemp("pretrain")
    tok = tiny_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    for name, cls in (("teacher", BertModel), ("teacher_heads", BertForPreTraining)):
        cls(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    corpus = root / "corpus.txt"
    lines = sentences(300, 0)
    body = "\n".join(lines[:100]) + "\n\n   \n" + "\n".join(lines[100:]) + "\n"
    corpus.write_bytes(body.encode() + b"caf\xe9 latin-1 line\n")  # one non-UTF-8 line, two empty ones
    return {"teacher": root / "teacher", "teacher_heads": root / "teacher_heads", "corpus": corpus}


def weights(path):
    return load_file(str(path / "model" / "model.safetensors"))


def test_pretrain_saves_model_and_heldout_curve(files, tmp_path, caplog):
    with caplog.at_level("INFO", logger="bitbert"):
        report = pretrain(files["teacher"], [files["corpus"]], tmp_path / "run", FAST)
    assert "skipped 2 empty and 1 non-UTF-8 lines" in caplog.text
    assert report["corpus_lines"]["skipped_empty"] == 2 and report["corpus_lines"]["skipped_non_utf8"] == 1
    assert report["finished"] and report["tokens_seen"] == 6 * 4 * 16 and report["tokens_per_s"] > 0
    assert [h["step"] for h in report["heldout"]] == [3, 6] and report["heldout"][1]["tokens"] == 384
    assert {"mlm_loss", "mlm_accuracy", "nsp_accuracy"} <= set(report["final"])
    assert report["teacher_heads"] == {"mlm": False, "nsp": False}
    assert [s for s, _ in report["train_loss"]] == list(range(1, 7))
    assert json.loads((tmp_path / "run" / "report.json").read_text())["steps"] == 6
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/mlm_accuracy" in r for r in log) and any("train/loss" in r for r in log)
    model = bitbert.load(tmp_path / "run" / "model")
    assert type(model).__name__ == "BertForPreTraining"
    assert model.bitbert_config == FAST.quant_config() and model.bitbert_config.ffn2_input == "signed"
    assert model.bert.encoder.layer[0].attention.self.bitbert.residual.rank == 1
    assert not uncalibrated(model)
    # The tied decoder shares the (full-precision latent) word embedding weights.
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()


def test_resume_equals_uninterrupted(files, tmp_path):
    # With the DataLoader worker (the GPU setting); the other tests cover num_workers=0.
    cfg = dataclasses.replace(FAST, nsp=False, max_steps=0, max_tokens=8 * 4 * 16, num_workers=1)
    straight = pretrain(files["teacher"], files["corpus"], tmp_path / "a", cfg)
    part = pretrain(files["teacher"], files["corpus"], tmp_path / "b", dataclasses.replace(cfg, max_steps=5))
    assert not part["finished"] and part["steps"] == 5 and not (tmp_path / "b" / "model").exists()
    resumed = pretrain(files["teacher"], files["corpus"], tmp_path / "b", cfg, resume=True)
    assert resumed["finished"] and resumed["steps"] == straight["steps"] == 8
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["mlm_loss"] for h in resumed["heldout"]] == [h["mlm_loss"] for h in straight["heldout"]]
    # The logged training loss is train()'s running average, carried over by the checkpoint: equal throughout.
    assert [s for s, _ in resumed["train_loss"]] == list(range(1, 9))
    assert resumed["train_loss"] == straight["train_loss"]


def test_resume_with_other_settings_is_refused(files, tmp_path):
    pretrain(files["teacher"], files["corpus"], tmp_path / "r", dataclasses.replace(FAST, max_steps=2, max_tokens=512))
    with pytest.raises(bitbert.ConfigError, match="seq_len"):
        pretrain(files["teacher"], files["corpus"], tmp_path / "r",
                 dataclasses.replace(FAST, seq_len=12, max_tokens=512), resume=True)
    # another corpus or teacher is another run; a fresh run does not overwrite this one
    other = tmp_path / "other.txt"
    other.write_bytes(files["corpus"].read_bytes() + b"one more line of text\n")
    with pytest.raises(bitbert.ConfigError, match="corpus="):
        pretrain(files["teacher"], [other], tmp_path / "r", dataclasses.replace(FAST, max_tokens=512), resume=True)
    with pytest.raises(bitbert.ConfigError, match="already holds a run"):
        pretrain(files["teacher"], files["corpus"], tmp_path / "r", dataclasses.replace(FAST, max_tokens=512))
    # wider first layers are another run; the fully binary default keeps the identity runs had before them
    with pytest.raises(bitbert.ConfigError, match="early_layers"):
        pretrain(files["teacher"], files["corpus"], tmp_path / "r",
                 dataclasses.replace(FAST, max_tokens=512, early_layers=2), resume=True)
    progress = json.loads((tmp_path / "r" / "progress.json").read_text())
    assert "early_layers" not in progress["config"] and "early_act_bits" not in progress["config"]


@pytest.mark.parametrize("nsp", [True, False])
def test_nsp_on_off_and_teacher_heads(files, tmp_path, nsp):
    cfg = dataclasses.replace(FAST, nsp=nsp, max_steps=3, residual_rank=0)
    report = pretrain(files["teacher_heads"], files["corpus"], tmp_path / "n", cfg)
    assert report["teacher_heads"] == {"mlm": True, "nsp": nsp}
    assert ("nsp_accuracy" in report["final"]) == nsp
    model = bitbert.load(tmp_path / "n" / "model")
    assert type(model).__name__ == ("BertForPreTraining" if nsp else "BertForMaskedLM")
    assert getattr(model.bert.encoder.layer[0].attention.self.bitbert, "residual") is None


def test_loss_terms(files):
    """Logit KD is used exactly when the teacher has the head; the MLM CE ignores unmasked tokens."""
    cfg = dataclasses.replace(FAST, nsp=True)
    torch.manual_seed(0)
    student, teacher, heads = build_student(files["teacher_heads"], cfg)
    student.eval()  # no dropout: the three losses below see the same student outputs
    ids = torch.randint(5, 30, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": labels, "next_sentence_label": torch.tensor([0, 1])}
    objective = PretrainingObjective(student, nsp=True)
    hidden, mlm, nsp = objective(**batch)
    assert mlm.shape == (2, student.config.vocab_size) and nsp.shape == (2, 2) and len(hidden) == 3
    full = PretrainLoss(teacher, heads, cfg)(objective, batch)
    no_kd = PretrainLoss(teacher, heads, dataclasses.replace(cfg, kd_weight=0.0))(objective, batch)
    headless = PretrainLoss(teacher, {"mlm": False, "nsp": False}, cfg)(objective, batch)
    assert full > no_kd and torch.allclose(headless, no_kd)
    full.backward()
    assert student.cls.predictions.transform.dense.weight.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in teacher.parameters())


def test_cli_pretrain_then_finetune_without_teacher(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cli"
    rc = main(["pretrain", "--teacher", str(files["teacher"]), "--corpus", str(files["corpus"]), "--out", str(out),
               "--seq-len", "16", "--batch-size", "4", "--holdout-every", "5", "--heldout-sequences", "8",
               "--eval-every", "2", "--max-steps", "4", "--num-workers", "0", "--shuffle-buffer", "16",
               "--calibration-batches", "2", "--residual-rank", "1", "--nsp"])
    printed = capsys.readouterr().out  # progress lines, then the report as JSON
    assert rc == 0 and json.loads(re.search(r"^\{$.*^\}$", printed, re.M | re.S).group(0))["finished"]
    pretrained = bitbert.load(out / "model")
    alphas = {n: m.alpha.clone() for n, m in pretrained.named_modules() if isinstance(m, ActQuantizer) and m.kind == "elastic"}

    # The pretrained encoder becomes a classifier: every tensor kept, α too (no re-calibration).
    from bitbert.tasks import get_task
    from bitbert.training.classifier import load_classifier

    clf = load_classifier(out / "model", get_task("sst2"))
    assert type(clf).__name__ == "BertForSequenceClassification" and clf.config.num_labels == 2
    assert not uncalibrated(clf)
    got = {n: m.alpha for n, m in clf.named_modules() if isinstance(m, ActQuantizer) and m.kind == "elastic"}
    assert got.keys() == alphas.keys() and all(torch.equal(got[n], alphas[n]) for n in got)

    rows = ["sentence\tlabel"] + [f"{s}\t{int('cat' in s)}" for s in sentences(64, 1)]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:25]) + "\n")
    rc = main(["finetune", "--model", str(out / "model"), "--binary-pretrained", "--train-file", str(tmp_path / "train.tsv"),
               "--dev-file", str(tmp_path / "dev.tsv"), "--text-columns", "sentence", "--out", str(tmp_path / "ft"),
               "--epochs", "1", "--batch-size", "16", "--max-length", "16"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(r"^dev accuracy \d+\.\d\d final", printed, re.M) and f"model: {tmp_path / 'ft' / 'model'}" in printed
    tuned = bitbert.load(tmp_path / "ft" / "model")
    assert type(tuned).__name__ == "BertForSequenceClassification"
    assert tuned.bitbert_config == pretrained.bitbert_config


def test_classifier_from_encoder_without_pooler(files, tmp_path):
    """A pretrained model without a pooler: the encoder loads strictly, pooler and classifier start
    fresh (binarized per the QuantConfig); a missing encoder tensor is an error."""
    cfg = dataclasses.replace(FAST, nsp=False, max_steps=2)
    pretrain(files["teacher"], files["corpus"], tmp_path / "p", cfg)
    saved = weights(tmp_path / "p")
    clf = bitbert.load(tmp_path / "p" / "model", model_class="BertForSequenceClassification", num_labels=3,
                       problem_type="single_label_classification")
    assert clf.config.num_labels == 3 and clf.classifier.out_features == 3
    state = clf.state_dict()
    encoder = {k: v for k, v in saved.items() if k.startswith("bert.")}
    assert encoder and all(torch.equal(state[k], v) for k, v in encoder.items())
    assert type(clf.bert.pooler.dense).__name__ == "QuantLinear"
    assert uncalibrated(clf) == ["bert.pooler.dense.act_quant"]
    del saved["bert.encoder.layer.1.attention.self.bitbert.residual.v_up.weight"]
    save_file(saved, str(tmp_path / "p" / "model" / "model.safetensors"))
    with pytest.raises(ValueError, match="v_up"):
        bitbert.load(tmp_path / "p" / "model", model_class="BertForSequenceClassification", num_labels=2)


def test_corpus_too_small_is_a_clear_error(files, tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("the cat sat.\n\nthe dog ran.\n")
    with pytest.raises(CorpusError, match="need at least 4"):
        pretrain(files["teacher"], small, tmp_path / "s", FAST)
    rc = main(["pretrain", "--teacher", str(files["teacher"]), "--corpus", str(small), "--out", str(tmp_path / "s"),
               "--seq-len", "16", "--batch-size", "4", "--max-steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "need at least 4" in err and "Traceback" not in err
    rc = main(["pretrain", "--teacher", str(files["teacher"]), "--corpus", str(tmp_path / "missing.txt"),
               "--out", str(tmp_path / "s"), "--max-steps", "2"])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_time_limit_stops_and_saves(files, tmp_path):
    cfg = dataclasses.replace(FAST, max_steps=0, max_tokens=10**6, max_seconds=1e-9, residual_rank=0)
    report = pretrain(files["teacher"], files["corpus"], tmp_path / "t", cfg)
    assert report["stopped_by"] == "max_seconds" and report["steps"] == 1 and not report["finished"]
    assert (tmp_path / "t" / "model" / "model.safetensors").is_file() and (tmp_path / "t" / "checkpoint.pt").is_file()


def test_config_validation():
    with pytest.raises(bitbert.ConfigError, match="num_workers"):
        PretrainConfig(num_workers=2)
    with pytest.raises(bitbert.ConfigError, match="budget"):
        PretrainConfig().total_steps(1)
    with pytest.raises(bitbert.ConfigError):
        PretrainConfig(bits="1-1-3")
    cfg = PretrainConfig(max_tokens=10_000, batch_size=8, seq_len=16)
    assert cfg.total_steps(1) == 78 and cfg.total_steps(2) == 39
    assert cfg.train_config().max_steps == 0 and dataclasses.replace(cfg, max_steps=5).train_config().max_steps == 5
    assert cfg.quant_config().residual_rank == 1 and cfg.quant_config().ffn2_input == "signed"


def test_pretrain_with_wider_first_layers_for_pair_tasks(files, tmp_path, monkeypatch, capsys):
    """--early-layers builds the pretrained student with the pair tasks' wider first layers (kept by
    fine-tuning); fine-tuning a fully binary one on a two-text task warns that it cannot compare texts."""
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    common = ["--teacher", str(files["teacher"]), "--corpus", str(files["corpus"]), "--seq-len", "16",
              "--batch-size", "4", "--holdout-every", "5", "--heldout-sequences", "8", "--eval-every", "2",
              "--max-steps", "2", "--num-workers", "0", "--shuffle-buffer", "16", "--calibration-batches", "2"]
    assert main(["pretrain", *common, "--out", str(tmp_path / "wide"), "--early-layers", "1"]) == 0
    assert main(["pretrain", *common, "--out", str(tmp_path / "flat")]) == 0
    wide, flat = bitbert.load(tmp_path / "wide" / "model"), bitbert.load(tmp_path / "flat" / "model")
    assert wide.bitbert_config.label == "1-1-1 (first 1 layers A4)" and flat.bitbert_config.label == "1-1-1"
    first = [m for m in wide.modules() if isinstance(m, ActQuantizer)]
    assert {m.bits for m in first} == {1, 4}  # layer 1 at 4 bits, layer 2 binary
    rows = ["a\tb\tlabel"] + [f"{s}\t{s if i % 2 else t}\t{i % 2}"
                              for i, (s, t) in enumerate(zip(sentences(32, 1), sentences(32, 2)))]
    (tmp_path / "pairs.tsv").write_text("\n".join(rows) + "\n")
    data = ["--train-file", str(tmp_path / "pairs.tsv"), "--dev-file", str(tmp_path / "pairs.tsv"),
            "--text-columns", "a", "b", "--label-column", "label", "--epochs", "1", "--batch-size", "16",
            "--max-length", "32", "--binary-pretrained"]
    for name in ("wide", "flat"):
        capsys.readouterr()
        assert main(["finetune", "--model", str(tmp_path / name / "model"), "--out", str(tmp_path / f"ft-{name}"), *data]) == 0
        printed = capsys.readouterr()
        warned = "pretrain with --early-layers 2" in printed.out + printed.err
        assert warned == (name == "flat"), name
    assert bitbert.load(tmp_path / "ft-wide" / "model").bitbert_config == wide.bitbert_config


def test_bipft_script_passes_the_pair_layers_to_pretraining(tmp_path, monkeypatch):
    """benchmarks/run_bipft.py pretrain --early-layers 2: the PretrainConfig it runs has the wider first
    layers (what gpu_bipft.sh's PT_EXTRA needs to pretrain a model for two-text tasks)."""
    import runpy
    import sys

    import bitbert.training.pretraining as pretraining

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    seen = {}

    def fake_pretrain(model, corpus, out, cfg, resume=False):
        seen["cfg"] = cfg
        return {"stopped_by": "max_steps", "steps": 0, "tokens_seen": 0, "tokens_per_s": 0.0, "final": {}}

    monkeypatch.setattr(pretraining, "pretrain", fake_pretrain)
    monkeypatch.setattr("run_glue.hardware", lambda: "test", raising=False)
    base = ["run_bipft.py", "pretrain", "--variant", "bipft-a", "--model", "m", "--corpus", "c", "--runs", str(tmp_path)]
    for extra, want in (([], (0, 4)), (["--early-layers", "2", "--early-act-bits", "8"], (2, 8))):
        monkeypatch.setattr(sys, "argv", base + extra)
        runpy.run_path(str(root / "benchmarks" / "run_bipft.py"), run_name="__main__")
        assert (seen["cfg"].early_layers, seen["cfg"].early_act_bits) == want
        assert seen["cfg"].residual_rank == 0  # bipft-a
