"""bitbert: fully binarized BERT (BiT, BiBERT, BiPFT) on stock Hugging Face models.

The public API, in the order a model goes through it:

    QuantConfig.from_preset(method, bits)   what to quantize and how ("bit", "1-1-1" = E-W-A bits)
    binarize(model, config)                 swap a stock model's modules for quantized ones, in place
    calibrate(model, batches)               set the quantizers' scales α from data
    summary(model, seq_len)                 parameters per bit width, size in MB, FLOPs
    save(model, path) / load(path)          config.json + model.safetensors, like save_pretrained
    export(model, path, tokenizer)          the packed 1-bit file for the CPU engine
    load_packed(path).predict(texts)        the bitwise CPU engine (numpy + numba, no torch)

The modules sit in folders by layer, each importing only the ones before it: `bitbert.core`
(config, file format, setting rules) -> `bitbert.quant` (quantized modules) -> `bitbert.tasks` ->
`bitbert.training` (e.g. `bitbert.training.distill.run_schedule`, `bitbert.training.finetune.finetune`,
`bitbert.training.pretraining.pretrain`, `bitbert.training.task_data.load_task_data`) ->
`bitbert.deploy` (packing, kernels, engine) -> `bitbert.cli`; docs/architecture.md maps them, and
`bitbert --help` is the command line. Old paths (`bitbert.distill`, `bitbert.engine`, ...) still import.

Importing the package is cheap: each name is imported from its module on first use (the packed
engine runs without torch), and `dir(bitbert)` / `help(bitbert)` list and document them all.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from . import _moved
from .core.config import ConfigError, QuantConfig
from .core.version import __version__  # noqa: F401 (public)

_moved.install()  # old module paths (bitbert.quantizers, bitbert.engine, ...) still import

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names resolve on first use
    from .deploy.engine import load_packed
    from .deploy.packing import export
    from .quant.accounting import summary
    from .quant.calibration import calibrate
    from .quant.convert import UnsupportedModelError, binarize
    from .quant.model_files import load, save

_MODULE_OF = {"binarize": "quant.convert", "UnsupportedModelError": "quant.convert", "calibrate": "quant.calibration",
              "summary": "quant.accounting", "save": "quant.model_files", "load": "quant.model_files",
              "export": "deploy.packing", "load_packed": "deploy.engine"}

__all__ = ["QuantConfig", "ConfigError", "binarize", "calibrate", "summary", "save", "load", "export", "load_packed",
           "UnsupportedModelError"]


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bitbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
