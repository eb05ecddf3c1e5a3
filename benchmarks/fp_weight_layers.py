"""Probe: which encoder layers' binary weights cost a task. Runs `run_glue.py` with the layers named in
FP_LAYERS (0-based, comma-separated) keeping full-precision weights, or with WEIGHT_BITS=k (2-8)
uniform k-bit weights (per row, scale 2·mean|w|/sqrt(2^(k-1)-1), straight-through); everything else
as configured.

    FP_LAYERS=0,1 [WEIGHT_BITS=4] PYTHONPATH=. python benchmarks/fp_weight_layers.py --task mrpc ... --runs bit:1-1-32

A measurement tool only (the packed engine runs 1-bit weights only): it patches
`QuantConfig.layer_config`, the one place that decides a layer's precision, for this process (and,
for k bits, the layers it builds). A k-bit run's `final_fp32` is dropped: a saved model reloads
those layers in full precision.
"""
import math
import os

import torch

from bitbert.core.config import QuantConfig

try:
    FP_LAYERS = {int(i) for i in os.environ["FP_LAYERS"].split(",")}
except (KeyError, ValueError):
    raise SystemExit("error: set FP_LAYERS to the 0-based encoder layers that keep full-precision weights, e.g. 0,1")
try:
    WEIGHT_BITS = int(os.environ.get("WEIGHT_BITS", "32"))
    assert WEIGHT_BITS == 32 or 2 <= WEIGHT_BITS <= 8
except (ValueError, AssertionError):
    raise SystemExit("error: WEIGHT_BITS must be 2-8 (uniform k-bit weights) or 32 (full precision)")
MARK = f"probe-w{WEIGHT_BITS}"  # the layers' configs carry it (preset is informational) to their linears
_layer_config = QuantConfig.layer_config


def layer_config(self: QuantConfig, index: int) -> QuantConfig:
    config = _layer_config(self, index)
    if index not in FP_LAYERS or config.weight_bits == 32:
        return config
    return config.replace(weight_bits=32, preset=MARK if WEIGHT_BITS < 32 else config.preset)


def uniform_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` on 2^bits - 1 symmetric levels per output row; the gradient passes straight through."""
    qp = 2 ** (bits - 1) - 1
    scale = (2 * w.detach().abs().mean(dim=1, keepdim=True) / math.sqrt(qp)).clamp_min(1e-8)
    q = torch.clamp(torch.round(w / scale), -qp, qp) * scale
    return w + (q - w).detach()


def install_k_bit_weights() -> None:
    """The marked layers' linears become QuantLinears whose weights are `uniform_weight`."""
    from bitbert.quant import convert, layers

    swap, quantized = convert._swap_linear, layers.QuantLinear.quantized_weight

    def _swap_linear(parent, name, config, quantize, signed_input, inherit=False):
        swap(parent, name, config, quantize, signed_input, inherit)
        if quantize and config.preset == MARK:
            linear = getattr(parent, name)
            if not isinstance(linear, layers.QuantLinear):
                linear = layers.QuantLinear.from_linear(linear, config, signed_input)
                setattr(parent, name, linear)
            linear.probe_bits = WEIGHT_BITS

    def quantized_weight(self):
        bits = getattr(self, "probe_bits", 0)
        return uniform_weight(self.weight, bits) if bits else quantized(self)

    convert._swap_linear = _swap_linear
    layers.QuantLinear.quantized_weight = quantized_weight


def layers_text(layers: set[int]) -> str:
    """0-based layer indices as the docs count them: ``{0, 1}`` -> ``layers 1-2``, ``{0}`` -> ``layer 1``."""
    ones = sorted(i + 1 for i in layers)
    if len(ones) == 1:
        return f"layer {ones[0]}"
    if ones == list(range(ones[0], ones[-1] + 1)):
        return f"layers {ones[0]}-{ones[-1]}"
    return "layers " + ",".join(map(str, ones))


def mark(record: dict, command: str) -> dict:
    """A student record names this probe, its layers and its own command (run_glue.py records its own)."""
    at = "in full precision" if WEIGHT_BITS == 32 else f"at {WEIGHT_BITS} bits"
    what, base = f"weights of {layers_text(FP_LAYERS)} {at}", record.get("precision") or record["bits"]
    changes = dict(fp_weight_layers=sorted(FP_LAYERS), command=command,  # 1-1-1 (first 2 layers A4, weights ...)
                   precision=f"{base[:-1]}, {what})" if base.endswith(")") else f"{base} ({what})")
    if WEIGHT_BITS < 32:
        changes.update(probe_weight_bits=WEIGHT_BITS, final_fp32=None)
    return changes


if __name__ == "__main__":
    from glue_probe import run_glue

    QuantConfig.layer_config = layer_config
    if WEIGHT_BITS < 32:
        install_k_bit_weights()
    bits = f" WEIGHT_BITS={WEIGHT_BITS}" if WEIGHT_BITS < 32 else ""
    run_glue(f"FP_LAYERS={os.environ['FP_LAYERS']}{bits}", "fp_weight_layers.py", "fp_weight_layers", mark)
