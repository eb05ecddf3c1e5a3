"""Save / load quantization-aware models: ``config.json`` (model config with the quant config
under ``"bitbert"``) + ``model.safetensors``. Nothing is ever unpickled; writes are atomic."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..core.config import QuantConfig
from .convert import binarize, quant_config_of

from ..core.atomic import atomic_write
from ..core.hub import from_hub_or_dir


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


def load(directory: str | Path, device: str | torch.device = "cpu", model_class=None,
         num_labels: int | None = None, problem_type: str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save` (or any HF checkpoint directory) with identical outputs.

    ``model_class`` (a transformers class or its name, e.g. ``"AutoModelForSequenceClassification"``)
    rebuilds another architecture on the saved encoder: a BiPFT model pretrained as
    ``BertForMaskedLM`` becomes a classifier of ``num_labels`` outputs (``problem_type`` as in
    transformers). Then every encoder and quantizer tensor is loaded strictly (anything missing
    is an error), the saved heads are dropped, and the new head starts fresh, as does the pooler
    when the saved model has none (binarized per the saved QuantConfig; its α needs calibrating).
    Without ``model_class`` the saved architecture is rebuilt and loaded strictly, as a whole.
    """
    from safetensors.torch import load_model
    from transformers import AutoConfig

    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: not a model directory")
    cfg = json.loads(cfg_path.read_text())
    quant = cfg.get("bitbert")
    head_kwargs = {k: v for k, v in (("num_labels", num_labels), ("problem_type", problem_type)) if v is not None}
    cls = _resolve_class(model_class) if model_class is not None else _model_class(cfg)
    if quant is None:  # a plain Hugging Face checkpoint
        return from_hub_or_dir(lambda d: cls.from_pretrained(d, dtype=torch.float32, **head_kwargs),
                               directory, "model").to(device)
    hf_config = from_hub_or_dir(lambda d: AutoConfig.from_pretrained(d, **head_kwargs), directory, "model")
    hf_config._attn_implementation = "eager"
    model = cls.from_config(hf_config) if cls.__name__.startswith("Auto") else cls(hf_config)
    binarize(model, QuantConfig.from_dict(quant))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    if type(model).__name__ in (cfg.get("architectures") or [type(model).__name__]):
        load_model(model, str(weights), strict=True, device=str(device))
    else:
        _load_encoder(model, weights, directory)
    return model.to(device).eval()


def _resolve_class(model_class):
    import transformers

    if isinstance(model_class, str):
        cls = getattr(transformers, model_class, None)
        if cls is None:
            raise ValueError(f"unknown model class {model_class!r}: not a transformers class")
        return cls
    return model_class


def _load_encoder(model: nn.Module, weights: Path, directory: Path) -> None:
    """Load the saved encoder (embeddings, layers, quantizers, estimators, pooler) into ``model``'s
    encoder strictly; only a pooler the saved model lacks may be missing (it stays fresh)."""
    from safetensors.torch import load_file

    from .convert import base_model

    state = load_file(str(weights))
    prefix = f"{model.base_model_prefix}."
    if any(k.startswith(prefix) for k in state):  # a saved task/pretraining model: its encoder
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    encoder = base_model(model)
    has_pooler = getattr(encoder, "pooler", None) is not None
    saved_pooler = any(k.startswith("pooler.") for k in state)
    if not has_pooler:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    fresh_pooler = has_pooler and not saved_pooler
    missing = [k for k in missing if not (fresh_pooler and k.startswith("pooler."))]
    if missing or unexpected:
        raise ValueError(f"{directory}: the saved encoder does not match {type(model).__name__}'s: "
                         f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
