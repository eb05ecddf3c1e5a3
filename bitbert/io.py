"""Save / load quantization-aware models: ``config.json`` (model config with the quant config
under ``"bitbert"``) + ``model.safetensors``. Nothing is ever unpickled; writes are atomic."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .config import QuantConfig
from .convert import binarize, quant_config_of

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "merges.txt", "vocab.json")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path`` and rename it into place, so a crash
    never leaves a half-written file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(model: nn.Module, directory: str | Path, tokenizer=None) -> Path:
    """Write ``model`` (converted or not) to ``directory``; tokenizer files too when given."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg["architectures"] = [type(model).__name__]
    cfg["bitbert"] = quant_config_of(model).to_dict()
    cfg.pop("_attn_implementation_autoset", None)
    atomic_write(directory / "model.safetensors", lambda p: save_model(model, str(p)))
    atomic_write(directory / "config.json", lambda p: p.write_text(json.dumps(cfg, indent=2, sort_keys=True)))
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            for name in os.listdir(tmp):
                shutil.copy(Path(tmp) / name, directory / name)
    return directory


def _model_class(cfg: dict):
    import transformers

    archs = cfg.get("architectures") or []
    for arch in archs:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if archs:
        raise ValueError(f"unknown architecture {archs} in config.json")
    return transformers.AutoModel


def load(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save` (or any HF checkpoint directory) with identical outputs."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: not a model directory")
    cfg = json.loads(cfg_path.read_text())
    quant = cfg.get("bitbert")
    if quant is None:  # a plain Hugging Face checkpoint
        return _model_class(cfg).from_pretrained(directory, dtype=torch.float32).to(device)
    hf_config = AutoConfig.from_pretrained(directory)
    hf_config._attn_implementation = "eager"
    cls = _model_class(cfg)
    model = cls(hf_config) if cls.__name__ != "AutoModel" else cls.from_config(hf_config)
    binarize(model, QuantConfig.from_dict(quant))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    load_model(model, str(weights), strict=True, device=str(device))
    return model.to(device).eval()
