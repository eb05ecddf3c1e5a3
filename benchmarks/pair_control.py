"""The sentence-pair control: can a binary student compare two texts?

    python benchmarks/pair_control.py --model DIR --sentences SST-2/train.tsv --out runs/pairs \
        --variant identity --train 2000 --runs 'bit:1-1-32' 'bit:1-1-2,1-1-1' [--quant ...] [--loss ...]

Pairs are built from single sentences: ``identity`` labels (s, s) 1 and (s, another sentence) 0;
``edit`` labels (s, s) 1 and (s, s with one word swapped for another sentence's word) 0, so the
student must compare the segments token by token. ``overlap`` is a regression (like STS-B): (s, s with
k of its n words swapped for other sentences' words, k uniform in 0..n) scores 1 - k/n, Pearson and
Spearman on dev. A full-precision teacher learns either to ~100%;
a student that cannot compare segments sits at 50%. Fine-tunes the teacher once (reused by every
run in ``--out``), distills each ``method:schedule`` run, and writes one JSON record per run to
``OUT/records/VARIANT-TAG.json`` (best-on-dev and final-step accuracy, settings, wall time). Resumable.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from bitbert.core.atomic import atomic_write  # noqa: E402
from bitbert.core.config import parse_quant_overrides  # noqa: E402
from bitbert.pipeline import load_classifier, load_task_data  # noqa: E402
import bitbert  # noqa: E402
from bitbert.training.distill import method_losses, run_schedule, stage_configs  # noqa: E402
from bitbert.training.finetune import finetune  # noqa: E402
from bitbert.training.train import TrainConfig  # noqa: E402
from bitbert.quant.schedule import task_overrides  # noqa: E402

VARIANTS = ("identity", "edit", "overlap")
REGRESSION = ("overlap",)


def read_sentences(path: Path) -> list[str]:
    """The ``sentence`` column of a GLUE-style TSV (SST-2), de-duplicated, order kept."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if "sentence" not in (rows.fieldnames or []):
            raise SystemExit(f"{path}: no 'sentence' column (columns: {rows.fieldnames})")
        seen: dict[str, None] = {}
        for row in rows:
            s = (row["sentence"] or "").strip()
            if len(s.split()) >= 4:  # a one-word edit of a 1-3 word sentence is often another sentence
                seen.setdefault(s, None)
    return list(seen)


def make_pairs(sentences: list[str], variant: str, n: int, seed: int) -> list[tuple[str, str, int | str]]:
    """``n`` balanced (a, b, label) pairs: label 1 when b is a itself, 0 otherwise; for ``overlap`` the
    share of a's words b keeps (module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if len(sentences) < 2:
        raise ValueError("need at least two sentences to build pairs")
    rng = random.Random(seed)
    pairs: list[tuple[str, str, int | str]] = []
    for i in range(n):
        a = rng.choice(sentences)
        if variant == "overlap":
            pairs.append(_overlap_pair(a, sentences, rng))
            continue
        if i % 2 == 0:
            pairs.append((a, a, 1))
            continue
        other = rng.choice(sentences)
        while other == a:
            other = rng.choice(sentences)
        if variant == "identity":
            pairs.append((a, other, 0))
            continue
        words = a.split()
        j = rng.randrange(len(words))
        new = rng.choice([w for w in other.split() if w != words[j]] or ["something"])
        pairs.append((a, " ".join(words[:j] + [new] + words[j + 1:]), 0))
    rng.shuffle(pairs)
    return pairs


def _overlap_pair(a: str, sentences: list[str], rng: random.Random) -> tuple[str, str, str]:
    """(a, a with k of its n words replaced by words of other sentences, 1 - k/n), k uniform in 0..n."""
    words = a.split()
    k = rng.randint(0, len(words))
    for j in rng.sample(range(len(words)), k):
        other = rng.choice(sentences).split()
        words[j] = rng.choice([w for w in other if w != words[j]] or ["something"])
    return a, " ".join(words), f"{1 - k / len(a.split()):.3f}"


def write_pairs(path: Path, pairs: list[tuple[str, str, int | str]]) -> None:
    def write(p: Path) -> None:
        with p.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
            w.writerow(["sentence1", "sentence2", "label"])
            w.writerows(pairs)
    atomic_write(path, write)


def build_data(sentences_file: Path, out: Path, variant: str, n_train: int, n_dev: int, seed: int) -> tuple[Path, Path]:
    """Train and dev files from disjoint sentence pools (dev never shows a training sentence)."""
    sentences = read_sentences(sentences_file)
    random.Random(seed).shuffle(sentences)
    cut = len(sentences) * 4 // 5
    train, dev = out / f"{variant}-train.tsv", out / f"{variant}-dev.tsv"
    if not train.is_file():
        write_pairs(train, make_pairs(sentences[:cut], variant, n_train, seed))
    if not dev.is_file():
        write_pairs(dev, make_pairs(sentences[cut:], variant, n_dev, seed + 1))
    return train, dev


@torch.no_grad()
def duplicate_heads(model: torch.nn.Module, tokenizer, dev_file: Path, max_pairs: int = 96,
                    max_length: int = 128) -> list[float]:
    """Per layer, the largest share of attention any head gives from a token of the second text to the
    same token of the first, over the identical pairs of ``dev_file`` (the duplicate-token heads a
    teacher compares the two texts with). Uniform attention over n tokens gives about 1/n."""
    with dev_file.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                if float(r["label"]) == 1 and r["sentence1"] == r["sentence2"]]
    rows = [r for r in rows if 2 * len(tokenizer.tokenize(r["sentence1"])) + 3 <= max_length][:max_pairs]
    if not rows:
        raise ValueError(f"{dev_file}: no identical pair fits {max_length} tokens")
    enc = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True,
                    return_tensors="pt")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        maps = model(**{k: v.to(device) for k, v in enc.items()}, output_attentions=True).attentions
    finally:
        model.train(was_training)
    lengths = enc["attention_mask"].sum(1).tolist()
    out = []
    for att in maps:  # (batch, heads, seq, seq)
        per_pair = []
        for i, n in enumerate(lengths):
            a = (n - 3) // 2  # [CLS] a [SEP] a [SEP]
            j = torch.arange(a)
            per_pair.append(att[i, :, a + 2 + j, 1 + j].float().mean(-1).cpu())
        out.append(round(torch.stack(per_pair).mean(0).max().item(), 3))
    return out


def hardware() -> str:
    import platform

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="pretrained base model directory (the teacher's start)")
    ap.add_argument("--sentences", required=True, type=Path, help="SST-2 style TSV with a 'sentence' column")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--variant", choices=VARIANTS, default="identity")
    ap.add_argument("--train", type=int, default=2000, help="training pairs")
    ap.add_argument("--dev", type=int, default=500, help="dev pairs")
    ap.add_argument("--runs", nargs="*", default=["bit:1-1-32"], help="method:schedule runs (none: the teacher only)")
    ap.add_argument("--name", default="", help="tag of this variant of the runs (its own folder)")
    ap.add_argument("--quant", default=None, help="QuantConfig overrides for every stage")
    ap.add_argument("--loss", default=None, help="loss weight overrides")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--teacher-epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--quant-lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--eval-every", type=int, default=0)
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    train_file, dev_file = build_data(args.sentences, args.out, args.variant, args.train, args.dev, 1234)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = load_task_data("pairs", tokenizer, args.max_length, train_file=train_file, dev_file=dev_file,
                          text_columns=["sentence1", "sentence2"], label_column="label",
                          regression=args.variant in REGRESSION)
    base = TrainConfig(batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                       eval_every=args.eval_every, log_every=10**9)
    teacher_dir = args.out / f"{args.variant}-teacher"
    if not (teacher_dir / "model" / "model.safetensors").is_file():
        t0 = time.time()
        model = load_classifier(args.model, data.spec)
        rep = finetune(model, data, base.replace(epochs=args.teacher_epochs, lr=5e-5), teacher_dir, tokenizer,
                       resume=True)
        print(f"teacher: {rep.best} ({time.time() - t0:.0f} s)", flush=True)
    teacher_report = json.loads((teacher_dir / "report.json").read_text())
    from bitbert import io

    overrides = parse_quant_overrides(args.quant)
    teacher_heads = duplicate_heads(io.load(teacher_dir / "model"), tokenizer, dev_file, max_length=args.max_length)
    print(f"teacher's duplicate-token heads (largest share per layer): {teacher_heads}", flush=True)
    for run in args.runs:
        method, _, schedule = run.partition(":")
        teacher = io.load(teacher_dir / "model")
        losses = method_losses(method).with_overrides(args.loss)
        cfg = base.replace(epochs=args.epochs, lr=args.lr, quant_lr=args.quant_lr)
        tag = f"{args.name or 'default'}-{method}-{schedule.replace(',', '_')}-s{args.seed}"
        t0 = time.time()
        res = run_schedule(teacher, data, method, schedule, cfg, args.out / args.variant / tag, tokenizer,
                           losses=losses, quant_overrides=overrides, resume=True)
        last = [s for s in res.stages if s.report is not None][-1].report
        start = io.load(teacher_dir / "model")  # the first stage's student before training
        bitbert.binarize(start, stage_configs(method, schedule, task_overrides(data.spec.is_pair, overrides))[0])
        bitbert.calibrate(start, data.calibration_batches(args.batch_size))
        measure = lambda m: duplicate_heads(m, tokenizer, dev_file, max_length=args.max_length)  # noqa: E731
        heads = {"teacher": teacher_heads, "student_at_start": measure(start), "student": measure(res.student)}
        record = {"benchmark": "pair_control", "variant": args.variant, "name": args.name or "default",
                  "method": method, "schedule": schedule, "seed": args.seed, "epochs": args.epochs,
                  "lr": args.lr, "batch_size": args.batch_size, "train_pairs": args.train, "dev_pairs": args.dev,
                  "quant": args.quant or "", "quant_overrides": task_overrides(data.spec.is_pair, overrides),
                  "loss": args.loss or "",
                  "teacher_best": teacher_report["best"], "best": last.best, "final": last.final,
                  "stages": [s.to_dict() for s in res.stages], "duplicate_heads": heads,
                  "wall_s": round(time.time() - t0, 1),
                  "hardware": hardware(), "torch": torch.__version__,
                  "command": "python benchmarks/pair_control.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
        path = args.out / "records" / f"{args.variant}-{tag}.json"  # one file per run: runs go in parallel
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda p: p.write_text(json.dumps(record, indent=1)))
        shown = ("variant", "name", "method", "schedule", "seed", "best", "final", "duplicate_heads")
        print(json.dumps({k: record[k] for k in shown}), flush=True)


if __name__ == "__main__":
    main()
