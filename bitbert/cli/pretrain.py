"""``bitbert pretrain``: BiPFT binary pretraining from the command line (thin over
`bitbert.training.pretraining`; every `PretrainConfig` field is an option ``--field-name``).

    bitbert pretrain --teacher MINILM_DIR --corpus corpus.txt.xz --out runs/bipft --max-tokens 100000000
    accelerate launch --num_processes 2 -m bitbert.cli pretrain ...     # data-parallel
"""
from __future__ import annotations

import json

from .common import add_config_options, config_from_args, is_main_process


def add_pretrain_commands(sub) -> None:
    """Add the ``pretrain`` subcommand to the subparsers object ``sub``."""
    from ..training.pretrain_config import PretrainConfig

    p = sub.add_parser("pretrain", help="BiPFT: pretrain a binary BERT (MLM/NSP + distillation from its FP teacher)")
    p.add_argument("--teacher", required=True, help="full-precision BERT checkpoint directory (the student's init)")
    p.add_argument("--corpus", required=True, nargs="+", help="text files (.txt, .xz, .gz, .bz2), one paragraph a line")
    p.add_argument("--out", required=True, help="run directory: model/, report.json, metrics.jsonl, checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out (else refused)")
    add_config_options(p.add_argument_group("pretraining settings (PretrainConfig)"), PretrainConfig)
    p.set_defaults(fn=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from ..training.pretrain_config import PretrainConfig
    from ..training.pretraining import pretrain
    from ..training.rundir import prepare_out

    config = config_from_args(args, PretrainConfig)  # a bad number fails before any work
    prepare_out(args.out, args.resume, args.overwrite)
    report = pretrain(args.teacher, args.corpus, args.out, config, resume=args.resume)
    if not is_main_process():
        return 0
    keys = ("finished", "steps", "total_steps", "tokens_seen", "tokens_per_s", "final", "model_dir")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    if not report["finished"]:
        print(f"stopped at step {report['steps']} of {report['total_steps']}; continue with --resume")
    return 0
