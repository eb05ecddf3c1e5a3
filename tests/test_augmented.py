"""TinyBERT-style augmentation on tiny random models: candidates (BERT and RoBERTa masked LMs, the
embedding fallback), the augmented file (determinism, resume, marks, pairs), reading it back for
distillation, the masked-LM head trainer, and clear errors for bad input."""
import json
import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, BertModel, PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

import bitbert.training.augmented as augmented
from bitbert.cli import main
from bitbert.core.config import AugmentConfig, ConfigError
from bitbert.tasks import DataError, get_task, load_custom
from bitbert.training.augment import COPY_COLUMN, UNKNOWN_CLASS
from bitbert.training.candidates import CandidateGenerator, find_words
from bitbert.training.mlm_head import MLMHeadConfig, train_mlm_head
from bitbert.training.task_data import load_task_data
from conftest import save_tiny_base, wordpiece_tokenizer

WORDS = ("good bad fine awful great terrible movie film plot actor story acting music scene cast boring funny "
         "dull smart the a was is very not and but").split()
PIECES = ["##s", "##ly"]


def bert_tokenizer() -> PreTrainedTokenizerFast:
    return wordpiece_tokenizer([*WORDS, *PIECES, ",", "."])


def roberta_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    rng = random.Random(0)
    tok.train_from_iterator([" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(500)], trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def tiny(vocab_size: int, **kw) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, **kw)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm")
    torch.manual_seed(0)
    bt, rt = bert_tokenizer(), roberta_tokenizer()
    BertForMaskedLM(BertConfig(**tiny(len(bt), max_position_embeddings=64))).save_pretrained(root / "bert")
    bt.save_pretrained(root / "bert")
    BertModel(BertConfig(**tiny(len(bt), max_position_embeddings=64))).save_pretrained(root / "encoder")
    bt.save_pretrained(root / "encoder")
    RobertaForMaskedLM(RobertaConfig(**tiny(len(rt), max_position_embeddings=66, pad_token_id=1))).save_pretrained(
        root / "roberta")
    rt.save_pretrained(root / "roberta")
    save_tiny_base(root / "classifier")
    return root


def test_find_words_skips_stop_words_numbers_and_single_letters():
    text = "The movie wasn't 42 times as good, I think"
    assert [text[s:e] for s, e in find_words(text)] == ["movie", "times", "good", "think"]


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_masked_lm_candidates_are_whole_words_never_the_word(models_dir, name):
    gen = CandidateGenerator.from_pretrained(models_dir / name, top_m=5, device="cpu")
    text = "the movie was good but the acting dull"
    (words,) = gen.words([text])
    assert [text[w.start:w.end] for w in words] == ["movie", "good", "acting", "dull"]
    vocab_words = set(WORDS) | {w.capitalize() for w in WORDS}
    for w in words:
        assert w.source == "mlm" and 1 <= len(w.candidates) <= 5
        assert text[w.start:w.end] not in w.candidates and set(w.candidates) <= vocab_words, w
    # the same words through one batched forward with other texts: the same candidates
    batched = gen.words(["a fine film", text, "boring"])
    assert batched[1] == words
    # with the original allowed (recall), exactly top_m whole words
    assert all(len(w.candidates) == 5 for w in gen.words([text], keep_original=True)[0])


def test_multi_piece_words_fall_back_to_embedding_neighbours(models_dir):
    gen = CandidateGenerator.from_pretrained(models_dir / "bert", top_m=3, device="cpu")
    text = "Movies, sadly"  # movie ##s, sad→[UNK]... : 'movies' has two pieces
    words = {text[w.start:w.end]: w for w in gen.words([text])[0]}
    assert words["Movies"].source == "neighbours" and len(words["Movies"].candidates) == 3
    assert all(c[0].isupper() for c in words["Movies"].candidates)  # the word's case is kept
    near = gen.neighbours(["movies"])[0]
    assert near == tuple(c.lower() for c in words["Movies"].candidates) and "movies" not in near
    emb = CandidateGenerator.from_pretrained(models_dir / "classifier", "embedding", top_m=3, device="cpu")
    assert all(w.source == "neighbours" for w in emb.words(["the movie was good"])[0])


def test_a_model_without_masked_lm_head_is_a_clear_error(models_dir, tmp_path):
    for name in ("encoder", "classifier"):
        with pytest.raises(ConfigError, match="no masked-LM head"):
            CandidateGenerator.from_pretrained(models_dir / name)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        CandidateGenerator.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="candidate mode"):
        CandidateGenerator.from_pretrained(models_dir / "bert", "glove")


# --------------------------------------------------------------------------- the file
ROWS = ["the movie was good", "a boring plot and dull acting", "the cast is funny but the music is awful",
        "42 !", "very smart film", "terrible story", "fine actor"]


def sst(tmp_path, n=len(ROWS)):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(ROWS[:n])))
    return load_custom(path, ["sentence"], "label")


def read(path):
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_file_originals_first_then_marked_copies(models_dir, tmp_path):
    spec, examples = sst(tmp_path)
    gen = CandidateGenerator.from_pretrained(models_dir / "bert", top_m=4, device="cpu")
    record = augmented.write_augmented(examples, spec, gen, tmp_path / "aug.tsv", AugmentConfig(copies=5, seed=1),
                                       chunk_size=3)
    header, rows = read(tmp_path / "aug.tsv")
    assert header == ["sentence", "label", COPY_COLUMN]
    assert [r[0] for r in rows[:len(ROWS)]] == ROWS and all(r[2] == "0" for r in rows[:len(ROWS)])
    copies = rows[len(ROWS):]
    assert copies and all(int(r[2]) >= 1 for r in copies) and record["rows"] == len(rows)
    by_original: dict = {}
    for text, label, k in copies:
        by_original.setdefault(label, []).append(text)
    assert "42 !" not in {r[0] for r in copies}  # nothing to replace: no copy
    # each example's copies are distinct, differ from their original, and are numbered 1..n in order
    ks, prev = [], None
    for r in copies:
        ks.append(int(r[2]))
    starts = [i for i, k in enumerate(ks) if k == 1]
    for a, b in zip(starts, starts[1:] + [len(ks)]):
        assert ks[a:b] == list(range(1, b - a + 1))
        assert len({r[0] for r in copies[a:b]}) == b - a and not {r[0] for r in copies[a:b]} & set(ROWS)
    assert not (tmp_path / "aug.tsv.parts").exists() and (tmp_path / "aug.tsv.log").read_text().count("examples/s") == 3
    assert json.loads((tmp_path / "aug.tsv.augment.json").read_text())["copies"] == len(copies)


def test_file_is_deterministic_and_resumes_identically(models_dir, tmp_path, monkeypatch):
    spec, examples = sst(tmp_path)
    gen = CandidateGenerator.from_pretrained(models_dir / "bert", top_m=4, device="cpu")
    cfg = AugmentConfig(copies=4, seed=3)
    augmented.write_augmented(examples, spec, gen, tmp_path / "a.tsv", cfg, chunk_size=2)
    augmented.write_augmented(examples, spec, gen, tmp_path / "b.tsv", cfg, chunk_size=5)  # batching: no change
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    augmented.write_augmented(examples, spec, gen, tmp_path / "c.tsv", AugmentConfig(copies=4, seed=4), chunk_size=2)
    assert (tmp_path / "a.tsv").read_bytes() != (tmp_path / "c.tsv").read_bytes()

    real, calls = augmented._copy_rows, []

    def dies_on_third_chunk(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(augmented, "_copy_rows", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        augmented.write_augmented(examples, spec, gen, tmp_path / "d.tsv", cfg, chunk_size=2)
    assert not (tmp_path / "d.tsv").exists() and len(list((tmp_path / "d.tsv.parts").glob("part-*"))) == 2
    monkeypatch.setattr(augmented, "_copy_rows", real)
    with pytest.raises(ConfigError, match="other settings"):  # the parts were written with other settings
        augmented.write_augmented(examples, spec, gen, tmp_path / "d.tsv", AugmentConfig(copies=5, seed=3), chunk_size=2)
    record = augmented.write_augmented(examples, spec, gen, tmp_path / "d.tsv", cfg, chunk_size=2)
    assert (tmp_path / "d.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()
    assert (tmp_path / "d.tsv.log").read_text().count("examples/s") == 4  # 2 chunks, then the other 2
    # a finished file: a re-run leaves it, other settings are refused
    assert augmented.write_augmented(examples, spec, gen, tmp_path / "d.tsv", cfg, chunk_size=2) == record
    with pytest.raises(ConfigError, match="other settings"):
        augmented.write_augmented(examples, spec, gen, tmp_path / "d.tsv", AugmentConfig(copies=4, seed=9), chunk_size=2)


def test_pair_task_copy_perturbs_one_text_jsonl(models_dir, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs = [("the movie was good", "the film was fine"), ("boring plot", "dull story")]
    path.write_text("".join(json.dumps({"s1": a, "s2": b, "y": 1.5 * i}) + "\n" for i, (a, b) in enumerate(pairs)))
    spec, examples = load_custom(path, ["s1", "s2"], "y", regression=True)
    gen = CandidateGenerator.from_pretrained(models_dir / "roberta", top_m=3, device="cpu")
    augmented.write_augmented(examples, spec, gen, tmp_path / "aug.jsonl", AugmentConfig(copies=6, replace_prob=1.0))
    rows = [json.loads(line) for line in (tmp_path / "aug.jsonl").read_text().splitlines()]
    assert [(r["s1"], r["s2"], r[COPY_COLUMN]) for r in rows[:2]] == [(a, b, 0) for a, b in pairs]
    copies = rows[2:]
    firsts, seconds = dict(pairs), {b: a for a, b in pairs}
    # every copy keeps one text of its original and changes the other; both texts get copies
    changed = [(r["s1"] in firsts) + 2 * (r["s2"] in seconds) for r in copies]
    assert set(changed) == {1, 2}
    assert all(r["s2"] != firsts[r["s1"]] if r["s1"] in firsts else r["s1"] != seconds[r["s2"]] for r in copies)
    assert json.loads((tmp_path / "aug.jsonl.augment.json").read_text())["settings"]["copy_rule"] == "one text per copy"
    back = augmented.load_augmented(spec, tmp_path / "aug.jsonl")
    assert back.texts_b[:2] == [b for _, b in pairs] and back.labels[:2].tolist() == [0.0, 1.5]
    assert np.isnan(back.labels[2:]).all() and len(back) == len(rows)


def test_load_augmented_marks_copies_and_rejects_bad_files(tmp_path):
    spec = get_task("sst2")
    good = tmp_path / "aug.tsv"
    good.write_text(f"sentence\tlabel\t{COPY_COLUMN}\na\t1\t0\nb\t0\t0\nc\t1\t1\nd\t0\t1\ne\t0\t2\n")
    ex = augmented.load_augmented(spec, good)
    assert ex.labels.tolist() == [1, 0, UNKNOWN_CLASS, UNKNOWN_CLASS, UNKNOWN_CLASS] and "2 originals + 3" in ex.source
    bad = tmp_path / "bad.tsv"
    for body, match in ((f"sentence\tlabel\na\t1\n", f"{COPY_COLUMN}"), (f"sentence\tlabel\t{COPY_COLUMN}\na\t1\tx\n", ":2: column"),
                        (f"sentence\tlabel\t{COPY_COLUMN}\na\t1\t1\nb\t1\t0\n", ":3: an original row"),
                        (f"text\tlabel\t{COPY_COLUMN}\na\t1\t0\n", "sentence")):
        bad.write_text(body)
        with pytest.raises(DataError, match=match):
            augmented.load_augmented(spec, bad)
    with pytest.raises(DataError, match="file not found"):
        augmented.load_augmented(spec, tmp_path / "missing.tsv")


def test_task_data_from_augmented_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (tmp_path / "aug.tsv").write_text(f"sentence\tlabel\t{COPY_COLUMN}\ngood\t1\t0\nbad\t0\t0\nfine\t1\t1\n")
    data = load_task_data("sst2", bert_tokenizer(), 16, data_dir=tmp_path, augmented_file=tmp_path / "aug.tsv")
    assert data.train.labels.tolist() == [1, 0, UNKNOWN_CLASS] and len(data.dev["dev"]) == 1
    with pytest.raises(DataError, match="cannot subsample an augmented file"):
        load_task_data("sst2", bert_tokenizer(), 16, data_dir=tmp_path, augmented_file=tmp_path / "aug.tsv",
                       max_train_examples=2)


def test_cli_augment_then_distill(models_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BITBERT_CACHE", str(tmp_path / "cache"))
    spec, _ = sst(tmp_path)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nthe movie was good\t1\nboring\t0\n")
    out = tmp_path / "aug.tsv"
    data = ["--train-file", str(tmp_path / "train.tsv"), "--text-columns", "sentence"]
    assert main(["augment", *data, "--mlm", str(models_dir / "bert"), "--out", str(out), "--copies", "3",
                 "--candidates", "4", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["originals"] == len(ROWS) and printed["rows"] == len(out.read_text().splitlines()) - 1
    assert main(["distill", "--teacher", str(models_dir / "classifier"), *data, "--dev-file", str(tmp_path / "dev.tsv"),
                 "--augmented-file", str(out), "--method", "bibert", "--epochs", "1", "--batch-size", "4",
                 "--out", str(tmp_path / "run")]) == 0
    schedule = json.loads((tmp_path / "run" / "schedule.json").read_text())
    assert schedule["stages"][0]["steps"] == -(-printed["rows"] // 4)  # an epoch covers originals and copies
    recorded = schedule["augmented_file"]  # the run's record says what it trained on
    assert recorded["rows"] == printed["rows"] and recorded["augment"]["copies"] == 3
    assert recorded["candidates"]["mode"] == "mlm" and recorded["file"] == str(out)
    assert main(["distill", "--teacher", str(models_dir / "classifier"), *data, "--dev-file", str(tmp_path / "dev.tsv"),
                 "--augmented-file", str(out), "--augment", "2", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("args, message", [
    (["--train-file", "MISSING", "--text-columns", "sentence"], "file not found"),
    (["--train-file", "TRAIN", "--text-columns", "review"], "column(s) ['review'] not found"),
    (["--task", "sst2"], "give --task and --data-dir"),
    (["--train-file", "TRAIN", "--text-columns", "sentence", "--out", "OUT.csv"], "must end in .tsv or .jsonl"),
])
def test_cli_augment_bad_input_is_one_clear_error(models_dir, tmp_path, capsys, args, message):
    sst(tmp_path)
    args = [a.replace("MISSING", str(tmp_path / "no.tsv")).replace("TRAIN", str(tmp_path / "train.tsv"))
            .replace("OUT", str(tmp_path / "o")) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "o.tsv")]
    assert main(["augment", *args, *out, "--mlm", str(models_dir / "bert"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_augment_non_mlm_dir_is_a_clear_error(models_dir, tmp_path, capsys):
    sst(tmp_path)
    assert main(["augment", "--train-file", str(tmp_path / "train.tsv"), "--text-columns", "sentence",
                 "--mlm", str(models_dir / "classifier"), "--out", str(tmp_path / "o.tsv")]) == 2
    err = capsys.readouterr().err
    assert "no masked-LM head" in err and "bitbert mlm-head" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the head
def corpus(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + " ." for _ in range(400)))
    return path


@pytest.mark.parametrize("train_encoder", [False, True])
def test_mlm_head_saves_a_plain_masked_lm_with_recall(models_dir, tmp_path, train_encoder):
    cfg = MLMHeadConfig(train_encoder=train_encoder, seq_len=16, batch_size=8, max_steps=4, eval_every=2, log_every=1,
                        holdout_every=5, heldout_sequences=8, recall_texts=6, top_m=5, mixed_precision="no")
    report = train_mlm_head(models_dir / "encoder", corpus(tmp_path), tmp_path / "run", cfg)
    assert report["finished"] and report["steps"] == 4 and len(report["heldout"]) == 2
    model = BertForMaskedLM.from_pretrained(report["model_dir"])  # an ordinary HF masked LM, head included
    before = BertModel.from_pretrained(models_dir / "encoder").embeddings.word_embeddings.weight
    changed = not torch.equal(model.bert.embeddings.word_embeddings.weight, before)
    assert changed == train_encoder
    recall = json.loads((tmp_path / "run" / "recall.json").read_text())
    assert recall["masked_words"] > 0 and set(recall["mlm"]) == {"recall_at_1", "recall_at_5"}
    assert 0 <= recall["mlm"]["recall_at_1"] <= recall["mlm"]["recall_at_5"] <= 1
    assert 0 <= recall["embedding_neighbours"]["share_in_mlm_top_5"] <= 1
    CandidateGenerator.from_pretrained(report["model_dir"], device="cpu")  # usable by augment at once


def test_mlm_head_rejects_non_bert_and_bad_settings(models_dir, tmp_path):
    with pytest.raises(ConfigError, match="'roberta'"):
        train_mlm_head(models_dir / "roberta", corpus(tmp_path), tmp_path / "run", MLMHeadConfig(max_steps=1))
    with pytest.raises(ConfigError, match="holdout_every"):
        MLMHeadConfig(holdout_every=0)


@pytest.mark.slow
def test_gpu_mlm_head_script_end_to_end_on_cpu(tmp_path):
    """benchmarks/gpu_mlm_head.sh with a tiny encoder and corpus: both variants run, the better model
    comes back as tar parts that unpack to a masked LM the candidates load."""
    import lzma
    import subprocess
    import tarfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    repo = tmp_path / "repo"
    (repo / ".devdata" / "corpus").mkdir(parents=True)
    for name in ("benchmarks", "bitbert"):
        (repo / name).symlink_to(root / name)
    tok = bert_tokenizer()
    BertModel(BertConfig(**tiny(len(tok), max_position_embeddings=64))).save_pretrained(repo / ".devdata" / "enc")
    tok.save_pretrained(repo / ".devdata" / "enc")
    rng = random.Random(0)
    with lzma.open(repo / ".devdata" / "corpus" / "english.txt.xz", "wt") as f:
        f.write("\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(3000)))
    env = dict(__import__("os").environ, MODEL=".devdata/enc", SEQ_LEN="16", BATCH="8", HOLDOUT="5", RECALL_TEXTS="20",
               EVAL_EVERY="5", HEAD_STEPS="6", ENC_STEPS="6")
    proc = subprocess.run(["bash", "benchmarks/gpu_mlm_head.sh", str(tmp_path / "out")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = json.loads((tmp_path / "out" / "mlm_head.json").read_text())
    assert set(reports) == {"head", "encoder"} and all(r["recall"]["masked_words"] > 0 for r in reports.values())
    parts = sorted((tmp_path / "out").glob("mlm-minilm-l6.tar.part-*"))
    (tmp_path / "joined.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "joined.tar") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    CandidateGenerator.from_pretrained(tmp_path / "x" / "mlm-minilm-l6", device="cpu")
