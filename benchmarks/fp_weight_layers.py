"""Probe: which encoder layers' binary weights cost a task. Runs `run_glue.py` with the layers named in
FP_LAYERS (0-based, comma-separated) keeping full-precision weights; everything else as configured.

    FP_LAYERS=0,1 PYTHONPATH=. python benchmarks/fp_weight_layers.py --task mrpc ... --runs bit:1-1-32

A measurement tool only (the packed engine runs 1-bit weights only): it patches
`QuantConfig.layer_config`, the one place that decides a layer's precision, for this process.
"""
import os
import runpy
import sys
from pathlib import Path

from bitbert.core.config import QuantConfig

try:
    FP_LAYERS = {int(i) for i in os.environ["FP_LAYERS"].split(",")}
except (KeyError, ValueError):
    raise SystemExit("error: set FP_LAYERS to the 0-based encoder layers that keep full-precision weights, e.g. 0,1")
_layer_config = QuantConfig.layer_config


def layer_config(self: QuantConfig, index: int) -> QuantConfig:
    config = _layer_config(self, index)
    return config.replace(weight_bits=32) if index in FP_LAYERS and config.weight_bits < 32 else config


def layers_text(layers: set[int]) -> str:
    """0-based layer indices as the docs count them: ``{0, 1}`` -> ``layers 1-2``, ``{0}`` -> ``layer 1``."""
    ones = sorted(i + 1 for i in layers)
    if len(ones) == 1:
        return f"layer {ones[0]}"
    if ones == list(range(ones[0], ones[-1] + 1)):
        return f"layers {ones[0]}-{ones[-1]}"
    return "layers " + ",".join(map(str, ones))


def mark_records(records_file: Path, command: str) -> None:
    """The run's records name this probe, its layers and its own command (run_glue.py records its own)."""
    import json

    if not records_file.is_file():
        return
    records = json.loads(records_file.read_text())
    for r in records:
        if r["method"] != "fp" and "fp_weight_layers" not in r:
            r.update(fp_weight_layers=sorted(FP_LAYERS), command=command,
                     precision=f"{r['bits']} (weights of {layers_text(FP_LAYERS)} in full precision)")
    records_file.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    import shlex

    args = sys.argv[1:]
    command = f"FP_LAYERS={os.environ['FP_LAYERS']} python benchmarks/fp_weight_layers.py " + " ".join(map(shlex.quote, args))
    QuantConfig.layer_config = layer_config
    sys.argv = [str(Path(__file__).with_name("run_glue.py"))] + args
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        out, task = args[args.index("--out") + 1], args[args.index("--task") + 1]
        mark_records(Path(out) / f"{task}.json", command)
