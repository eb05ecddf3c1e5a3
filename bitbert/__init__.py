"""bitbert: fully binarized BERT (BiT, BiBERT, BiPFT) on stock Hugging Face models.

The public API, in the order a model goes through it:

    QuantConfig.from_preset(method, bits)   what to quantize and how ("bit", "1-1-1" = E-W-A bits)
    binarize(model, config)                 swap a stock model's modules for quantized ones, in place
    calibrate(model, batches)               set the quantizers' scales α from data
    summary(model, seq_len)                 parameters per bit width, size in MB, FLOPs
    save(model, path) / load(path)          config.json + model.safetensors, like save_pretrained
    export(model, path, tokenizer)          the packed 1-bit file for the CPU engine
    load_packed(path).predict(texts)        the bitwise CPU engine (numpy + numba, no torch)

Training (`bitbert.distill.run_schedule`, `bitbert.finetune.finetune`, `bitbert.pretraining.pretrain`)
and task data (`bitbert.task_data.load_task_data`) live in their modules; docs/architecture.md maps
them; `bitbert --help` is the command line.

Importing the package is cheap: each name is imported from its module on first use (the packed
engine runs without torch), and `dir(bitbert)` / `help(bitbert)` list and document them all.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .config import ConfigError, QuantConfig

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names resolve on first use
    from .accounting import summary
    from .calibration import calibrate
    from .convert import UnsupportedModelError, binarize
    from .engine import load_packed
    from .model_files import load, save
    from .packing import export

_MODULE_OF = {"binarize": "convert", "UnsupportedModelError": "convert", "calibrate": "calibration",
              "summary": "accounting", "save": "io", "load": "io", "export": "packing", "load_packed": "engine"}

__all__ = ["QuantConfig", "ConfigError", "binarize", "calibrate", "summary", "save", "load", "export", "load_packed",
           "UnsupportedModelError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bitbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
