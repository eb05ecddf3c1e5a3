"""Old import paths: the modules that sat side by side in ``bitbert/`` before the layer folders.

``import bitbert.quantizers`` (or ``bitbert.engine.builder``, or a pickle that names
``bitbert.config.QuantConfig``) gives the very module object now at its new path, so old code and
old checkpoints keep working and a monkeypatch through either name patches the same module. The
table is the one place that knows the old names; nothing in the package imports through it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    **{m: f"core.{m}" for m in ("config", "validate", "atomic", "hub", "packed_schema")},
    **{m: f"quant.{m}" for m in ("quantizers", "layers", "attention", "estimators", "convert", "calibration",
                                 "accounting", "model_files", "schedule")},
    **{m: f"tasks.{m}" for m in ("metrics", "batching", "corpus", "label_map")},
    **{m: f"training.{m}" for m in ("losses", "train", "graphs", "rundir", "distill", "finetune", "augment",
                                    "candidates", "augmented", "mlm_head", "pretraining", "pretrain_config",
                                    "pretrain_data", "pretrain_metrics", "pretrain_objective", "default_job",
                                    "recipes", "task_data", "evaluation", "classifier")},
    **{m: f"deploy.{m}" for m in ("packing", "engine", "kernels", "bench", "ort_baseline", "peak", "shipped")},
    **{f"cli_{m}": f"cli.{m}" for m in ("common", "deploy", "pretrain", "augment")},
}
"""Old top-level module name -> its path under ``bitbert`` now (``bitbert.tasks`` and ``bitbert.cli``
became packages at the same name, re-exporting what they exported)."""


def new_name(fullname: str) -> str | None:
    """``bitbert.engine.builder`` -> ``bitbert.deploy.engine.builder``; None for a name that did not move."""
    parts = fullname.split(".")
    if len(parts) < 2 or parts[0] != __package__ or parts[1] not in MOVED:
        return None
    return ".".join([parts[0], MOVED[parts[1]], *parts[2:]])


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and loads it as the module at its new name (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None or importlib.util.find_spec(new) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(new_name(spec.name))
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # importing stamped the old name's spec on the module (already executed): give its own back
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Lets every old name import (called once, by ``bitbert/__init__``)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # ahead of the path finder, which would load a second copy
