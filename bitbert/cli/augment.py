"""``bitbert augment`` (write a TinyBERT-style augmented training file) and ``bitbert mlm-head``
(train the masked-LM head its candidates come from), thin over `bitbert.training.augmented` and
`bitbert.training.mlm_head`.

    bitbert mlm-head --model MINILM_DIR --corpus english.txt.xz --out runs/mlm-minilm
    bitbert augment --task sst2 --data-dir glue/SST-2 --mlm runs/mlm-minilm/model --out sst2_aug.tsv
    bitbert distill --teacher TEACHER --task sst2 --data-dir glue/SST-2 --augmented-file sst2_aug.tsv
"""
from __future__ import annotations

import json


def add_augment_commands(sub) -> None:
    """Add the ``augment`` and ``mlm-head`` subcommands to the subparsers object ``sub``."""
    from ..core.config import AugmentConfig
    from ..training.mlm_head import MLMHeadConfig
    from .common import add_config_options

    a = sub.add_parser("augment", help="write an augmented training file (TinyBERT: masked-LM + embedding "
                                       "neighbour word swaps), for distill --augmented-file")
    g = a.add_argument_group("input (a GLUE task's training split, or a custom training file)")
    g.add_argument("--task", default=None, help="GLUE task name (sets the default --copies)")
    g.add_argument("--data-dir", default=None, help="glue_data task folder holding train.tsv")
    g.add_argument("--train-file", default=None, help="custom task: .tsv/.csv/.jsonl training file")
    g.add_argument("--text-columns", nargs="+", default=None, help="custom task: one or two text columns")
    g.add_argument("--label-column", default="label")
    g.add_argument("--regression", action="store_true", help="custom task: the label is a real number")
    g.add_argument("--max-train-examples", type=int, default=0,
                   help="augment the same subsample distill --max-train-examples takes (0 = all)")
    m = a.add_mutually_exclusive_group(required=True)
    m.add_argument("--mlm", default=None, help="masked-LM directory (bitbert mlm-head's model/, or any HF BERT/RoBERTa "
                                               "masked LM): its candidates for single-piece words")
    m.add_argument("--embeddings", default=None, help="any model directory: embedding-neighbour candidates only")
    a.add_argument("--out", required=True, help="augmented file to write (.tsv or .jsonl)")
    a.add_argument("--copies", type=int, default=None,
                   help="draws per example and text (default TinyBERT's: 30 CoLA/MRPC/RTE/STS-B, 20 SST-2/QNLI, 10 MNLI/QQP, 30 else)")
    a.add_argument("--prob", type=float, default=AugmentConfig.replace_prob, help="chance each word is replaced")
    a.add_argument("--candidates", type=int, default=AugmentConfig.neighbours, help="candidates per word (TinyBERT's M)")
    a.add_argument("--seed", type=int, default=42)
    a.add_argument("--batch-size", type=int, default=256, help="masked copies per forward")
    a.add_argument("--chunk-size", type=int, default=1000, help="examples per resumable part and progress line")
    a.add_argument("--max-length", type=int, default=128, help="tokens of context the masked LM sees")
    a.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    a.set_defaults(fn=cmd_augment)

    h = sub.add_parser("mlm-head", help="train a masked-LM head for a BERT encoder without one (augment's candidates)")
    h.add_argument("--model", required=True, help="BERT encoder directory (e.g. MiniLM-L6)")
    h.add_argument("--corpus", required=True, nargs="+", help="text files (.txt, .xz, .gz, .bz2), one paragraph a line")
    h.add_argument("--out", required=True, help="run directory: model/, recall.json, report.json, checkpoint.pt")
    h.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    h.add_argument("--overwrite", action="store_true", help="replace the run already in --out (else refused)")
    add_config_options(h.add_argument_group("settings (MLMHeadConfig)"), MLMHeadConfig)
    h.set_defaults(fn=cmd_mlm_head)


def _examples(args):
    """The training examples to augment and their task spec."""
    from ..tasks.specs import DataError, get_task, load_custom, load_glue
    from ..training.task_data import subsample

    if args.train_file:
        if not args.text_columns:
            raise DataError("a custom task needs --text-columns (one or two column names)")
        spec, examples = load_custom(args.train_file, args.text_columns, args.label_column, regression=args.regression)
    elif args.task and args.data_dir:
        spec = get_task(args.task)
        examples = load_glue(spec, args.data_dir, "train")
    else:
        raise DataError("give --task and --data-dir (a GLUE task) or --train-file and --text-columns (a custom task)")
    if args.max_train_examples:
        examples = subsample(examples, args.max_train_examples, args.seed)  # the sample distill takes with --seed
    return spec, examples


def cmd_augment(args) -> int:
    from ..core.config import AugmentConfig
    from ..training.augmented import default_copies, write_augmented
    from ..training.candidates import CandidateGenerator

    spec, examples = _examples(args)
    copies = args.copies if args.copies is not None else default_copies(spec.name)
    cfg = AugmentConfig(copies, args.prob, args.candidates, args.seed)
    mode, path = ("mlm", args.mlm) if args.mlm else ("embedding", args.embeddings)
    generator = CandidateGenerator.from_pretrained(path, mode, top_m=args.candidates, max_length=args.max_length,
                                                   batch_size=args.batch_size, device=args.device)
    record = write_augmented(examples, spec, generator, args.out, cfg, chunk_size=args.chunk_size)
    print(json.dumps({k: record[k] for k in ("file", "rows", "originals", "copies", "examples_per_s_this_run")}, indent=2))
    return 0


def cmd_mlm_head(args) -> int:
    from ..training.mlm_head import MLMHeadConfig, train_mlm_head
    from .common import config_from_args

    from ..training.rundir import prepare_out

    config = config_from_args(args, MLMHeadConfig)  # a bad number fails before any work
    prepare_out(args.out, args.resume, args.overwrite)
    report = train_mlm_head(args.model, args.corpus, args.out, config, resume=args.resume)
    print(json.dumps({k: report.get(k) for k in ("steps", "total_steps", "stopped_by", "wall_s", "model_dir", "recall")},
                     indent=2))
    if report["model_dir"] is None:
        print(f"stopped at step {report['steps']} of {report['total_steps']}; continue with --resume")
    return 0
