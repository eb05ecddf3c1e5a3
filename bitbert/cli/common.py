"""What the command modules share (`app`, `pretrain`, `augment`, `deploy` in `bitbert.cli`), so
that none imports another: the main-process test and options generated from a config dataclass."""
from __future__ import annotations

import argparse
import dataclasses
import os


def is_main_process() -> bool:
    """False in every process but rank 0 under ``accelerate launch`` / ``torchrun``: one report, not N."""
    return int(os.environ.get("RANK", "0")) == 0


def add_config_options(group, config_class) -> None:
    """One option ``--field-name`` per field of the frozen dataclass ``config_class`` (help from the
    field's metadata), defaulting to None: `config_from_args` keeps the class's own defaults."""
    for f in dataclasses.fields(config_class):
        flag, help_ = "--" + f.name.replace("_", "-"), f"{f.metadata.get('help', '')} (default: {f.default})"
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            group.add_argument(flag, type=type(f.default), default=None, help=help_)


def config_from_args(args, config_class):
    """``config_class`` with the fields given on the command line (`add_config_options`)."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
                           if getattr(args, f.name) is not None})
