"""`summary`: larq-style accounting of parameters by bit width, storage size and operations.

Conventions (those of BiBERT/BiT Table 1, which give BERT-base 418 MB / 22.5 GFLOPs in fp32):
- Sizes are in MB of 2**20 bytes. Each parameter is stored at its bit width; a binarized tensor
  also stores its scales (one per tensor, or per row) in fp32. The mean used for centring is folded
  into the signs and costs nothing at inference.
- FLOPs at batch 1 and ``seq_len`` tokens: a full-precision multiply-accumulate (MAC) is 2 FLOPs;
  a MAC between a b_w-bit and a b_a-bit operand costs b_w·b_a/64 of that (64 one-bit MACs per
  64-bit XNOR/AND + popcount word). Matrix products (linears, QKᵀ, attention·V, BiPFT estimators)
  plus LayerNorm and softmax at 5 FLOPs per element; embedding lookups, biases and residual adds
  are not counted.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.config import AttentionMode
from .convert import base_model
from .layers import QuantEmbedding, QuantLinear
from .quantizers import ActQuantizer

MB = 2**20
ELEMENTWISE_FLOPS = 5


@dataclass
class LayerRow:
    name: str
    params_by_bits: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    binary_macs: float = 0.0  # MACs weighted by b_w·b_a/64, i.e. FP-equivalent
    fp_macs: float = 0.0
    elementwise_flops: float = 0.0
    fp32_macs: float = 0.0

    @property
    def size_mb(self) -> float:
        return sum(b * n for b, n in self.params_by_bits.items()) / 8 / MB

    @property
    def gflops(self) -> float:
        return (2 * (self.binary_macs + self.fp_macs) + self.elementwise_flops) / 1e9


@dataclass
class Summary:
    """Per-layer and total accounting; ``str(summary)`` is the printed table."""

    rows: list[LayerRow]
    seq_len: int
    fp32_size_mb: float
    fp32_gflops: float

    @property
    def params_by_bits(self) -> dict[int, int]:
        total: dict[int, int] = defaultdict(int)
        for r in self.rows:
            for b, n in r.params_by_bits.items():
                total[b] += n
        return dict(sorted(total.items()))

    @property
    def size_mb(self) -> float:
        return sum(r.size_mb for r in self.rows)

    @property
    def gflops(self) -> float:
        return sum(r.gflops for r in self.rows)

    def as_dict(self) -> dict:
        return {"seq_len": self.seq_len, "size_mb": self.size_mb, "fp32_size_mb": self.fp32_size_mb,
                "gflops": self.gflops, "fp32_gflops": self.fp32_gflops,
                "params_by_bits": {str(k): v for k, v in self.params_by_bits.items()},
                "layers": [{"name": r.name, "params_by_bits": {str(k): v for k, v in sorted(r.params_by_bits.items())},
                            "size_mb": r.size_mb, "gflops": r.gflops} for r in self.rows]}

    def __str__(self) -> str:
        widths = sorted(self.params_by_bits)
        head = ["layer", *[f"{b}-bit params" for b in widths], "size MB", "GFLOPs"]
        lines = [[r.name, *[f"{r.params_by_bits.get(b, 0):,}" for b in widths], f"{r.size_mb:.3f}", f"{r.gflops:.4f}"]
                 for r in self.rows]
        lines.append(["total", *[f"{self.params_by_bits.get(b, 0):,}" for b in widths], f"{self.size_mb:.2f}",
                      f"{self.gflops:.3f}"])
        cols = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, cols)))
        rule = "-" * (sum(cols) + 2 * (len(cols) - 1))
        out = [fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1]),
               f"seq_len={self.seq_len}: {self.size_mb:.2f} MB vs {self.fp32_size_mb:.2f} MB fp32 "
               f"({self.fp32_size_mb / max(self.size_mb, 1e-9):.1f}x smaller), {self.gflops:.3f} vs "
               f"{self.fp32_gflops:.3f} GFLOPs ({self.fp32_gflops / max(self.gflops, 1e-12):.1f}x fewer)"]
        return "\n".join(out)


def _group(name: str) -> str:
    parts = name.split(".")
    if "layer" in parts:
        i = parts.index("layer")
        return ".".join(parts[i : i + 2])
    for key in ("embeddings", "pooler"):
        if key in parts:
            return key
    return parts[0] if parts[0] not in ("bert", "roberta") else parts[1]


def max_positions(config) -> int:
    """Longest sequence the position embeddings allow (RoBERTa reserves padding_idx + 1 of them)."""
    offset = config.pad_token_id + 1 if config.model_type == "roberta" else 0
    return config.max_position_embeddings - offset


def _act_bits(module: nn.Module) -> int:
    q = getattr(module, "act_quant", None)
    return q.bits if q is not None else 32


@torch.no_grad()
def summary(model: nn.Module, seq_len: int = 128) -> Summary:
    """Parameters by bit width, size and FLOPs of ``model`` (see the module docstring)."""
    from ..core.validate import integer

    integer("seq_len", seq_len, 1)
    base = base_model(model)
    limit = max_positions(model.config)
    if seq_len > limit:
        raise ValueError(f"seq_len {seq_len} exceeds the model's maximum of {limit} positions")
    rows: dict[str, LayerRow] = {}
    row = lambda name: rows.setdefault(_group(name), LayerRow(_group(name)))
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            r = row(f"{mname}.{pname}")
            bits = 32
            if pname == "weight" and isinstance(module, QuantLinear) and module.weight_bits == 1:
                bits = 1
                r.params_by_bits[32] += p.shape[0] if module.per_row else 1
            elif pname == "weight" and isinstance(module, QuantEmbedding) and module.bits == 1:
                bits = 1
                r.params_by_bits[32] += p.shape[0]
            r.params_by_bits[bits] += p.numel()

    # Linear MACs measured on a real forward (exact for any head, e.g. the pooler sees one token).
    handles = []
    for mname, module in model.named_modules():
        if isinstance(module, nn.Linear):
            def hook(mod, args, out, name=mname):
                r = row(name)
                macs = args[0].numel() // mod.in_features * mod.in_features * mod.out_features
                wb = mod.weight_bits if isinstance(mod, QuantLinear) else 32
                ab = _act_bits(mod)
                r.fp32_macs += macs
                if wb < 32 and ab < 32:
                    r.binary_macs += macs * wb * ab / 64
                else:
                    r.fp_macs += macs
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids = torch.full((1, seq_len), 5, dtype=torch.long, device=device)
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    cfg = model.config
    hidden = cfg.hidden_size
    n_ln = 1 + 2 * len(base.encoder.layer)
    row("embeddings").elementwise_flops += ELEMENTWISE_FLOPS * seq_len * hidden
    for i, layer in enumerate(base.encoder.layer):
        r = row(f"encoder.layer.{i}")
        sa = layer.attention.self
        binary = getattr(sa, "bitbert", None)
        products = seq_len * seq_len * hidden  # QKᵀ and attention·V each
        r.fp32_macs += 2 * products
        mode = AttentionMode() if binary is None else binary.mode  # no BinaryAttention: float attention
        act, probs = mode.qkv_bits, mode.map_bits
        for a, b in ((act, act), (probs, act)):
            if a < 32 and b < 32:
                r.binary_macs += products * a * b / 64
            else:
                r.fp_macs += products
        if binary is not None and binary.residual is not None:
            r.fp_macs += binary.residual.num_macs(seq_len)
        softmax = mode.softmax
        r.elementwise_flops += ELEMENTWISE_FLOPS * (2 * seq_len * hidden + softmax * cfg.num_attention_heads * seq_len**2)
    # The fp32 reference is the model's own weights: quantizer α/β do not exist there.
    quant_params = {id(p) for m in model.modules() if isinstance(m, ActQuantizer) for p in m.parameters()}
    fp32_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if id(p) not in quant_params)
    fp32_flops = sum(2 * r.fp32_macs for r in rows.values()) + ELEMENTWISE_FLOPS * (
        n_ln * seq_len * hidden + len(base.encoder.layer) * cfg.num_attention_heads * seq_len**2)
    order = lambda r: (0 if r.name == "embeddings" else 1 if r.name.startswith("layer") else 2,
                       int(r.name.split(".")[1]) if r.name.startswith("layer.") else 0)
    return Summary(sorted(rows.values(), key=order), seq_len, fp32_params * 4 / MB, fp32_flops / 1e9)
