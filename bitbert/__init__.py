"""bitbert: fully binarized BERT (BiT, BiBERT, BiPFT) on stock Hugging Face models."""
from .calibration import calibrate
from .config import ConfigError, QuantConfig
from .convert import UnsupportedModelError, binarize
from .io import load, save
from .summary import summary

__all__ = ["QuantConfig", "ConfigError", "binarize", "calibrate", "summary", "save", "load",
           "UnsupportedModelError", "export", "load_packed"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The packed export / engine load numba on first use, not on `import bitbert`.
    if name == "export":
        from .packing import export

        return export
    if name == "load_packed":
        from .engine import load_packed

        return load_packed
    raise AttributeError(f"module 'bitbert' has no attribute {name!r}")
