"""bitbert: fully binarized BERT (BiT, BiBERT, BiPFT) on stock Hugging Face models.

Names are imported lazily: the packed engine (`bitbert.load_packed`, `bitbert.engine`) runs with
numpy, numba and tokenizers only, so importing the package must not import torch.
"""
from importlib import import_module

from .config import ConfigError, QuantConfig

_LAZY = {"calibrate": "calibration", "binarize": "convert", "UnsupportedModelError": "convert", "load": "io",
         "save": "io", "summary": "accounting", "export": "packing", "load_packed": "engine"}

__all__ = ["QuantConfig", "ConfigError", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bitbert' has no attribute {name!r}")
