"""The package version: one value, read by the package root and written into packed files."""
__version__ = "0.1.0"
