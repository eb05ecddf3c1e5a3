"""``bitbert export`` / ``predict`` / ``bench``: the packed 1-bit file and its CPU engine from the
command line (thin over `bitbert.deploy.packing`, `bitbert.deploy.engine` and `bitbert.deploy.bench`).

    bitbert export student/model model.bitbert            # a bitbert.save directory -> packed file
    bitbert predict model.bitbert "a gripping film" "dull"  # JSON lines {"text", "label", "scores"}
    bitbert predict model.bitbert --input texts.jsonl       # {"text": ..., "text_b": ...} per line
    bitbert bench                                           # engine vs PyTorch / ONNX Runtime FP32, int8
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("bitbert")


def add_deploy_commands(sub) -> None:
    """Add the ``export``, ``predict`` and ``bench`` subcommands to the subparsers object ``sub``."""
    e = sub.add_parser("export", help="write a bitbert.save directory as a packed 1-bit file")
    e.add_argument("model_dir", help="directory written by bitbert.save (tokenizer files are embedded if present)")
    e.add_argument("out", help="packed file to write, e.g. model.bitbert")
    e.add_argument("--float-dtype", default="float32", choices=["float32", "float16"],
                   help="storage of the non-binary tensors (float16: smaller, no longer bit-exact)")
    e.set_defaults(fn=cmd_export)

    p = sub.add_parser("predict", help="classify texts with a packed model on the CPU (JSON lines out)")
    p.add_argument("model", nargs="?", default=None,
                   help="packed file (bitbert export, or OUT/student.bitbert of bitbert distill), a folder holding one, "
                        "or a bitbert.save model directory (packed on the fly); omitted: the shipped 1-bit SST-2 model")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--input", default=None, help="file: one text per line, or JSONL with 'text' (and 'text_b')")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores idle at each call)")
    p.add_argument("--sha256", default=None, help="refuse the file unless its SHA-256 is this (as export printed)")
    p.set_defaults(fn=cmd_predict)

    b = sub.add_parser("bench", help="packed engine vs PyTorch and ONNX Runtime FP32 / dynamic int8; GEMM vs popcount peak")
    b.add_argument("--model", default=None, help="packed file (default: a random model of --shape, BiT at --bits)")
    b.add_argument("--bits", default="1-1-1", help="E-W-A bits of the random model without --model (1-1-1, 1-1-2, ...)")
    b.add_argument("--quant", default=None, help="QuantConfig overrides of the random model without --model, e.g. "
                   "early_layers=2,early_act_bits=4 (what sentence-pair students use)")
    b.add_argument("--shape", default="bert-base", help="model shape without --model: bert-base, minilm-l6, tiny")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    b.add_argument("--seq-len", type=int, default=128)
    b.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and all)")
    b.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (the median is reported)")
    b.add_argument("--no-torch", action="store_true", help="skip the PyTorch and ONNX Runtime baselines")
    b.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime FP32 / int8 baselines")
    b.add_argument("--out", default=None, help="also write the full record as JSON here (default: the table on stdout only)")
    b.set_defaults(fn=cmd_bench)


def read_texts(path: str | Path) -> list:
    """Texts from a file: JSONL objects with "text" (and optional "text_b": a pair), or plain lines."""
    from ..tasks.specs import DataError

    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror or e}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path, raw.count(b"\n", 0, e.start) + 1) from None
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines or not lines[0][1].lstrip().startswith("{"):
        return [ln for _, ln in lines]
    texts = []
    for n, line in lines:
        try:
            row = json.loads(line)
            texts.append((row["text"], row["text_b"]) if row.get("text_b") is not None else row["text"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise DataError("expected a JSON object with a 'text' field", path, n) from None
    return texts


def cmd_export(args) -> int:
    from ..deploy.packing import export, file_sha256
    from ..quant.model_files import load

    tokenizer = Path(args.model_dir) / "tokenizer.json"
    if not tokenizer.is_file():
        log.warning("%s has no tokenizer.json: the packed file will run logits() on ids but not predict()",
                    args.model_dir)
        tokenizer = None
    path = export(load(args.model_dir), args.out, tokenizer=tokenizer, float_dtype=args.float_dtype)
    print(json.dumps({"out": str(path), "bytes": path.stat().st_size, "tokenizer": tokenizer is not None,
                      "sha256": file_sha256(path)}))
    return 0


def cmd_predict(args) -> int:
    import tempfile

    from ..core.validate import SettingError, integer
    from ..deploy.engine import load_packed
    from ..deploy.shipped import SHIPPED_SHA256, looks_like_model, shipped_model

    integer("batch_size", args.batch_size, 1)
    model, sha256, words = args.model, args.sha256, list(args.texts)
    if model is None or not looks_like_model(model):  # `bitbert predict "text"`: the shipped model
        words = ([model] if model is not None else []) + words
        model, sha256 = shipped_model(), sha256 or SHIPPED_SHA256 or None
    texts = words + (read_texts(args.input) if args.input else [])
    if not texts:
        raise SettingError("input", "is missing: give texts as arguments or --input FILE", None)
    with tempfile.TemporaryDirectory() as tmp:
        engine = load_packed(packed_model(model, Path(tmp)), threads=args.threads, sha256=sha256)
    for text, result in zip(texts, engine.predict(texts, batch_size=args.batch_size)):
        echo = {"text": text[0], "text_b": text[1]} if isinstance(text, tuple) else {"text": text}
        scores = ({"value": round(result["scores"][0], 4)} if result["label"] is None
                  else {name: round(p, 4) for name, p in zip(engine.spec.labels, result["scores"])})
        print(json.dumps({**echo, "label": result["label"], "scores": scores}, ensure_ascii=False))
    return 0


def packed_model(path: str | Path, tmp: Path) -> Path:
    """The packed file ``path`` names: the file itself, the one ``.bitbert`` file in a folder (a
    distill run's), or a bitbert.save model directory exported into ``tmp``. Anything else is an
    error that says what was expected."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder; expected a packed file written by bitbert export "
                                "(or bitbert distill's OUT/student.bitbert)")
    packed = sorted(path.glob("*.bitbert"))
    if len(packed) == 1:
        return packed[0]
    if len(packed) > 1:
        raise ValueError(f"{path} holds several packed files ({', '.join(p.name for p in packed)}): name one")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        from ..deploy.packing import export
        from ..quant.model_files import load

        tokenizer = path / "tokenizer.json"
        log.info("%s is a model directory: packing it for the engine (bitbert export %s FILE keeps the file)", path, path)
        return export(load(path), tmp / "model.bitbert", tokenizer=tokenizer if tokenizer.is_file() else None)
    raise FileNotFoundError(f"{path} is a folder without a packed .bitbert file or a bitbert.save model "
                            "(config.json + model.safetensors); give the file written by bitbert export, "
                            "or bitbert distill's OUT folder (it holds student.bitbert)")


def cmd_bench(args) -> int:
    from ..core.config import ConfigError, parse_quant_overrides
    from ..deploy.bench import run_bench

    if args.quant and args.model:
        raise ConfigError("--quant sets up the random model; a packed file (--model) already has its own")
    result = run_bench(model=args.model, shape=args.shape, batch_sizes=args.batch_sizes, seq_len=args.seq_len,
                       threads=args.threads, repeats=args.repeats, torch_baselines=not args.no_torch,
                       ort_baselines=not args.no_ort, out=args.out,
                       bits=args.bits, quant_overrides=parse_quant_overrides(args.quant))
    print(result["table"])
    return 0
