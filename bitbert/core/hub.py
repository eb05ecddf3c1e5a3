"""Loading through transformers' ``from_pretrained`` with one clear error for a folder or Hub id
that is not there (`from_hub_or_dir`). Torch-free."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "merges.txt", "vocab.json")


def from_hub_or_dir(load: Callable[[str], T], source: str | Path, what: str,
                    needs: tuple[str, ...] = ("config.json",)) -> T:
    """``load(source)``, a transformers ``from_pretrained``, with one clear `FileNotFoundError` that
    names ``what`` and ``source`` instead of transformers' errors: a local folder holding none of
    ``needs``, or a missing folder, which transformers tries as a Hub id ("Repo id must be ...")."""
    folder = Path(source)
    if folder.is_dir() and not any((folder / name).is_file() for name in needs):
        raise FileNotFoundError(f"{what} {source}: the folder holds none of {', '.join(needs)}")
    try:
        return load(str(source))
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if folder.exists():
            raise FileNotFoundError(f"{what} {source}: cannot be loaded from this folder: {reason}") from None
        raise FileNotFoundError(f"{what} {source}: no such folder, and not loadable as a Hugging Face Hub id "
                                f"(is the Hub reachable, is the id right?): {reason}") from None
