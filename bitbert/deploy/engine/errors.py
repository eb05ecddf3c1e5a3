"""The packed engine's own error (a file's format problems are `bitbert.deploy.packing.PackedFormatError`)."""


class EngineError(ValueError):
    """The packed model uses something the packed engine does not run (the message says what)."""
