"""A QNLI-style sentence-pair task from a SQuAD v1.1 file, for measuring pair tasks where only SQuAD dev exists.

QNLI (GLUE) asks whether a sentence of a Wikipedia paragraph answers a question; it was built from SQuAD
train, which is not available here. This builds the same kind of task from any SQuAD v1.1 file:
- for each question, the positive is the sentence of its paragraph that holds the first answer span
  (``entailment``); questions whose answer crosses a sentence boundary are dropped;
- the negative is the paragraph's other sentence with the most words in common with the question,
  among those that contain none of the question's answers (``not_entailment``). The most-overlapping
  sentence is the hard case that makes the task a comparison of the two texts, not a topic match;
- articles, not questions, are split between train and dev (every ``dev_every``-th article in file
  order goes to dev), so no paragraph is seen in both.
The output is a GLUE QNLI folder (``train.tsv``/``dev.tsv``: index, question, sentence, label) that
``--task qnli --data-dir OUT`` reads. It is balanced by construction; it is not GLUE's QNLI and its
numbers are not comparable with the papers' QNLI column.

    python benchmarks/squad_pairs.py ../shared/data/squad/dev-v1.1.json .devdata/glue/QNLI
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# a sentence ends at . ! or ? (and any closing quotes or brackets) followed by space and a capital,
# digit or opening quote; good enough for encyclopedic prose. A wrong split ("Dr. Smith") drops the
# question whose answer it cuts, or makes a fragment a candidate negative
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"\w+")
HEADER = ("index", "question", "sentence", "label")


class SquadFormatError(ValueError):
    """The SQuAD file is not what this reads; the message names the file and the entry."""


@dataclass(frozen=True)
class Pair:
    question: str
    sentence: str
    label: str  # "entailment" | "not_entailment", QNLI's labels


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences of ``text``, trailing spaces excluded."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.start() + len(m.group().rstrip())
        spans.append((start, end))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _clean(text: str) -> str:
    return " ".join(text.split())  # tabs and newlines would break the TSV (read with QUOTE_NONE)


def question_pairs(context: str, question: str, answers: list[tuple[int, str]]) -> list[Pair]:
    """The positive and the hard negative for one question, or [] when either cannot be had."""
    spans = sentence_spans(context)
    start, text = answers[0]
    holding = [(a, b) for a, b in spans if a <= start and start + len(text) <= b]
    if not holding:
        return []  # the answer crosses a sentence boundary
    positive = holding[0]
    answer_texts = {t.lower() for _, t in answers if t.strip()}
    q_words = _words(question)
    negatives = [(a, b) for a, b in spans if (a, b) != positive
                 and not any(t in context[a:b].lower() for t in answer_texts)]
    if not negatives:
        return []
    # most shared words first; ties go to the earlier sentence (max keeps the first maximum)
    negative = max(negatives, key=lambda s: len(q_words & _words(context[s[0]:s[1]])))
    q = _clean(question)
    return [Pair(q, _clean(context[positive[0]:positive[1]]), "entailment"),
            Pair(q, _clean(context[negative[0]:negative[1]]), "not_entailment")]


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise SquadFormatError(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise SquadFormatError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _answers(qa: dict, where: str, context: str) -> list[tuple[int, str]]:
    out = []
    for k, ans in enumerate(_field(qa, "answers", list, where)):
        w = f"{where}.answers[{k}]"
        start, text = _field(ans, "answer_start", int, w), _field(ans, "text", str, w)
        if not 0 <= start <= len(context) - len(text):
            raise SquadFormatError(f"{w}: answer_start {start} with a {len(text)}-character answer "
                                   f"lies outside its {len(context)}-character context")
        out.append((start, text))
    if not out:
        raise SquadFormatError(f"{where}: no answers (SQuAD v2 unanswerable questions are not supported)")
    return out


def articles_pairs(squad: Any, source: str) -> Iterator[tuple[int, list[Pair]]]:
    """(article index, its pairs) for each article of a parsed SQuAD v1.1 document."""
    for i, article in enumerate(_field(squad, "data", list, source)):
        pairs: list[Pair] = []
        for j, para in enumerate(_field(article, "paragraphs", list, f"{source}: data[{i}]")):
            where = f"{source}: data[{i}].paragraphs[{j}]"
            context = _field(para, "context", str, where)
            for k, qa in enumerate(_field(para, "qas", list, where)):
                w = f"{where}.qas[{k}]"
                pairs += question_pairs(context, _field(qa, "question", str, w), _answers(qa, w, context))
        yield i, pairs


def _overlap(question: str, sentence: str) -> float:
    q = _words(question)
    return len(q & _words(sentence)) / max(1, len(q))


def overlap_baseline(train: list[Pair], dev: list[Pair]) -> dict[str, float]:
    """What word matching alone gets: answer ``entailment`` when at least a threshold share of the
    question's words are in the sentence, the threshold fit on ``train``. A student that compares the
    two texts must beat it, not just chance (50%)."""
    def accuracy(pairs: list[Pair], t: float) -> float:
        return 100.0 * sum((_overlap(p.question, p.sentence) >= t) == (p.label == "entailment") for p in pairs) / len(pairs)
    scored = sorted((_overlap(p.question, p.sentence), p.label == "entailment") for p in train)
    # sweep the thresholds upwards: rows below one are answered "not_entailment"
    right, best, threshold, k = sum(y for _, y in scored), -1, 0.0, 0
    for t in sorted({x for x, _ in scored}):
        while k < len(scored) and scored[k][0] < t:
            right += -1 if scored[k][1] else 1
            k += 1
        if right > best:
            best, threshold = right, t
    return {"threshold": threshold, "train_accuracy": accuracy(train, threshold), "dev_accuracy": accuracy(dev, threshold)}


def build(squad_path: Path, out_dir: Path, dev_every: int = 5, force: bool = False) -> dict[str, Any]:
    """Write ``out_dir``/train.tsv and dev.tsv; returns the row counts and the word-overlap baseline."""
    if dev_every < 2:
        raise ValueError(f"--dev-every must be >= 2 (every N-th article goes to dev), got {dev_every}")
    targets = {name: out_dir / f"{name}.tsv" for name in ("train", "dev")}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --force to replace them")
    try:
        squad = json.loads(squad_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{squad_path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SquadFormatError(f"{squad_path}: not a JSON file ({e})") from None
    rows: dict[str, list[Pair]] = {"train": [], "dev": []}
    for i, pairs in articles_pairs(squad, str(squad_path)):
        rows["dev" if i % dev_every == dev_every - 1 else "train"] += pairs
    if not rows["train"] or not rows["dev"]:
        raise SquadFormatError(f"{squad_path}: too few articles or answerable questions for a train and a "
                               f"dev split (train {len(rows['train'])}, dev {len(rows['dev'])} rows)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in targets.items():
        lines = ["\t".join(HEADER)] + [f"{n}\t{p.question}\t{p.sentence}\t{p.label}"
                                        for n, p in enumerate(rows[name])]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {**{name: len(r) for name, r in rows.items()}, "overlap_baseline": overlap_baseline(rows["train"], rows["dev"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("squad", type=Path, help="a SQuAD v1.1 JSON file")
    ap.add_argument("out", type=Path, help="folder for train.tsv and dev.tsv (GLUE QNLI columns)")
    ap.add_argument("--dev-every", type=int, default=5, help="every N-th article goes to dev (5: a fifth)")
    ap.add_argument("--force", action="store_true", help="replace train.tsv/dev.tsv already in OUT")
    ap.add_argument("--record", type=Path, default=None,
                    help="also write the counts and the word-overlap baseline here as JSON (the results tables read it)")
    args = ap.parse_args(argv)
    try:
        counts = build(args.squad, args.out, args.dev_every, args.force)
    except (SquadFormatError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.record is not None:
        command = " ".join(["python benchmarks/squad_pairs.py", *(argv if argv is not None else sys.argv[1:])])
        args.record.write_text(json.dumps({"command": command, "dev_every": args.dev_every, **counts}, indent=1) + "\n")
    base = counts["overlap_baseline"]
    print(f"{args.out}: train {counts['train']} rows, dev {counts['dev']} rows (half entailment); word overlap "
          f">= {base['threshold']:.3f} of the question answers {base['dev_accuracy']:.1f}% of dev right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
