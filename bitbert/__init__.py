"""bitbert: fully binarized BERT (BiT, BiBERT, BiPFT) on stock Hugging Face models."""
from .calibration import calibrate
from .config import ConfigError, QuantConfig
from .convert import UnsupportedModelError, binarize
from .io import load, save
from .summary import summary

__all__ = ["QuantConfig", "ConfigError", "binarize", "calibrate", "summary", "save", "load",
           "UnsupportedModelError"]
__version__ = "0.1.0"
