"""`QuantConfig`: the one frozen object that says how a model is binarized.

Bits are written E-W-A (embedding-weight-activation) as in the papers: ``1-1-1`` is a fully binary
model, ``1-1-2`` binary weights with 2-bit activations, ``32-32-32`` full precision.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

EMBED_BITS = (1, 32)
WEIGHT_BITS = (1, 32)
ACT_BITS = (1, 2, 4, 8, 32)
METHODS = ("bit", "bibert", "baseline")  # the binarization methods one can distill or pretrain with
PRESETS = (*METHODS, "fp")
ATTENTION_PROBS = ("softmax", "softmax_elastic", "softmax_sign", "bool")
ACT_QUANTIZERS = ("elastic", "sign")
FFN_ACTS = ("keep", "relu", "gelu")
SIGNEDNESS = ("signed", "unsigned")
WEIGHT_SCALES = ("tensor", "row")
EMBEDDINGS = ("word", "position", "token_type")
ALPHA_INITS = ("optimal", "wide")  # bitbert.quant.schedule.QuantInit.alpha_init
# Training settings that QuantConfig once carried (and config.json files written then still hold):
# bitbert.quant.schedule.QuantInit owns them now.
TRAINING_FIELDS = ("alpha_init", "inherit_quantizers")


def levels(bits: int, signed: bool) -> tuple[int, int]:
    """Integer levels (Qn, Qp) of a b-bit activation quantizer (LSQ); 1-bit signed is ±1 instead
    (`bitbert.quant.quantizers.ElasticSign`). Here, torch-free, because the packed engine needs them too."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


class ConfigError(ValueError):
    """An invalid quantization setting; the message lists what is valid."""


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise `ConfigError` with the message of the first ``(ok, message)`` that is not ok."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def parse_bits(bits: str) -> tuple[int, int, int]:
    """Parse an E-W-A string such as ``"1-1-2"`` into (embedding, weight, activation) bits."""
    parts = str(bits).strip().split("-")
    try:
        e, w, a = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"bits must look like E-W-A, e.g. 1-1-1 or 1-1-2; got {bits!r}") from None
    for name, value, valid in (("embedding", e, EMBED_BITS), ("weight", w, WEIGHT_BITS),
                               ("activation", a, ACT_BITS)):
        if value not in valid:
            raise ConfigError(f"{name} bits {value} in {bits!r} not supported; valid: {list(valid)}")
    return e, w, a


@dataclass(frozen=True)
class AttentionMode:
    """How every self-attention of a quantized model runs: `QuantConfig.attention`, the one place
    that decides it for the PyTorch side (the packed engine's is `bitbert.deploy.engine.attention.
    attention_for`, from the file's record). `bitbert.quant.convert` asks it whether a layer gets
    bitbert's attention, `bitbert.quant.attention.BinaryAttention` builds its quantizers and map from it,
    `bitbert.quant.accounting` counts the attention products at its precisions.

    Attributes:
        map: the attention map (`QuantConfig.attention_probs`): ``softmax`` kept in full precision,
            ``softmax_elastic`` (softmax then {0, α}, BiT), ``softmax_sign`` (softmax then ±1) or
            ``bool`` (BiBERT's 1[score ≥ 0], no softmax).
        qkv_bits: bits of the quantized Q, K, V (32: float).
        act_bits: the model's activation bits (the map's quantizer uses them).
        act_quantizer: ``elastic`` or ``sign``: the Q, K, V quantizers' kind.
        residual_rank: BiPFT's low-rank residual estimators (0 = none).
    """

    map: str = "softmax"
    qkv_bits: int = 32
    act_bits: int = 32
    act_quantizer: str = "elastic"
    residual_rank: int = 0

    def __post_init__(self) -> None:
        if self.map not in ATTENTION_PROBS:
            raise ConfigError(f"attention map {self.map!r} is not valid; choose one of {list(ATTENTION_PROBS)}")

    @property
    def replaced(self) -> bool:
        """bitbert's attention replaces the model's own (any quantized activation, map or estimator);
        otherwise the layer keeps its stock attention."""
        return self.act_bits < 32 or self.map != "softmax" or self.residual_rank > 0

    @property
    def softmax(self) -> bool:
        """The map starts from a softmax of the scores (all but ``bool``)."""
        return self.map != "bool"

    @property
    def quantized_map(self) -> bool:
        """The map entering ·V is not the float softmax: masked keys must be zeroed explicitly."""
        return self.map != "softmax"

    @property
    def elastic_map(self) -> bool:
        """The map is quantized by a learned elastic quantizer (BiT's {0, α})."""
        return self.map == "softmax_elastic"

    @property
    def map_bits(self) -> int:
        """Bits of the map's values entering the product with V: 32 for the float softmax, the
        activation bits for the elastic quantizer, 1 for the sign and bool maps."""
        if self.map == "softmax":
            return 32
        return self.act_bits if self.elastic_map else 1


@dataclass(frozen=True)
class QuantConfig:
    """How every quantization site of a BERT-family encoder is treated.

    Attributes:
        embed_bits, weight_bits, act_bits: E-W-A precision.
        weight_centering: subtract the mean before sign (BiT §3.2); False is BWN (BinaryBERT).
        weight_scale: ``tensor`` (one mean|W| per linear, BiT) or ``row`` (per output row, BiBERT).
            Embeddings are always scaled per row (one scale per token vector).
        act_quantizer: ``elastic`` (BiT: learned scale α and threshold β) or ``sign`` (plain sign,
            clipped straight-through gradient, no scale: BiBERT and the baseline). Multi-bit
            activations always use the elastic (LSQ) quantizer.
        binarize_qkv: binarize the Q, K, V projections' outputs (signed) before the attention products.
        attention_probs: ``softmax`` (kept in full precision), ``softmax_elastic`` (softmax, then the
            unsigned elastic binarizer to {0, α}: BiT), ``softmax_sign`` (softmax then ±1 sign: the
            naive baseline), ``bool`` (BiBERT Bi-Attention: 1[QKᵀ/√d + mask ≥ 0], no softmax).
        ffn_act: ``keep`` the model's activation, or replace it by ``relu`` / ``gelu``.
        ffn2_input: ``unsigned`` ({0, α}, for ReLU outputs: BiT) or ``signed`` (BiPFT).
        binarize_pooler: quantize the pooler dense layer (BiT does).
        binarize_classifier: quantize task heads (never done by the papers).
        embeddings: which embedding tables are quantized at ``embed_bits``.
        residual_rank: BiPFT low-rank estimators of the binarization residual in attention (0 = off).
        early_layers, early_act_bits: the first ``early_layers`` encoder layers run their activations
            at ``early_act_bits`` instead of ``act_bits`` (weights stay 1-bit: the file does not grow).
            Why: those layers hold the heads that find a token of one text in the other; 1-bit
            activations there erase them and sentence-pair tasks fall to one class
            (benchmarks/results/pair_control.json). `layer_config` is the one place that applies it.
        preset: the preset this config came from (informational).
    """

    embed_bits: int = 32
    weight_bits: int = 32
    act_bits: int = 32
    weight_centering: bool = True
    weight_scale: str = "tensor"
    act_quantizer: str = "elastic"
    binarize_qkv: bool = False
    attention_probs: str = "softmax"
    ffn_act: str = "keep"
    ffn2_input: str = "signed"
    binarize_pooler: bool = False
    binarize_classifier: bool = False
    embeddings: tuple[str, ...] = ("word",)
    residual_rank: int = 0
    early_layers: int = 0
    early_act_bits: int = 32
    preset: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "embeddings", tuple(self.embeddings))
        parse_bits(self.bits)
        for field, valid in (("weight_scale", WEIGHT_SCALES), ("act_quantizer", ACT_QUANTIZERS),
                             ("attention_probs", ATTENTION_PROBS), ("ffn_act", FFN_ACTS),
                             ("ffn2_input", SIGNEDNESS)):
            if getattr(self, field) not in valid:
                raise ConfigError(f"{field}={getattr(self, field)!r} is not valid; choose one of {list(valid)}")
        bad = [e for e in self.embeddings if e not in EMBEDDINGS]
        if bad:
            raise ConfigError(f"unknown embeddings {bad}; valid: {list(EMBEDDINGS)}")
        if self.ffn2_input == "unsigned" and self.ffn_act != "relu" and self.act_bits < 32:
            raise ConfigError("ffn2_input='unsigned' needs non-negative FFN outputs: set ffn_act='relu' "
                              "or ffn2_input='signed'")
        if self.act_bits == 32 and (self.binarize_qkv or self.attention_probs in ("softmax_elastic", "softmax_sign")):
            raise ConfigError("binarize_qkv / quantized attention probabilities need act_bits < 32")
        if not isinstance(self.residual_rank, int) or self.residual_rank < 0:
            raise ConfigError(f"residual_rank must be an int >= 0, got {self.residual_rank!r}")
        if not isinstance(self.early_layers, int) or isinstance(self.early_layers, bool) or self.early_layers < 0:
            raise ConfigError(f"early_layers must be an int >= 0, got {self.early_layers!r}")
        if self.early_act_bits not in ACT_BITS:
            raise ConfigError(f"early_act_bits={self.early_act_bits!r} is not valid; choose one of {list(ACT_BITS)}")

    @property
    def bits(self) -> str:
        return f"{self.embed_bits}-{self.weight_bits}-{self.act_bits}"

    @property
    def attention(self) -> AttentionMode:
        """How the self-attentions run: the one decision of it (`AttentionMode`)."""
        return AttentionMode(self.attention_probs, self.act_bits if self.binarize_qkv else 32, self.act_bits,
                             self.act_quantizer, self.residual_rank)

    @property
    def label(self) -> str:
        """E-W-A bits with the wider first layers, if any: ``1-1-1 (first 2 layers A4)``."""
        if not self.widens_early_layers:
            return self.bits
        return f"{self.bits} (first {self.early_layers} layers A{self.early_act_bits})"

    @property
    def widens_early_layers(self) -> bool:
        """Some first layers run wider activations than the rest (`layer_config`)."""
        return self.early_layers > 0 and self.early_act_bits > self.act_bits

    def layer_config(self, index: int) -> "QuantConfig":
        """The config encoder layer ``index`` (0-based) is converted with: this one, or for the first
        ``early_layers`` layers the same method at ``early_act_bits`` activations (full precision: the
        layer's own float attention). The one decision of per-layer precision: `bitbert.quant.convert`
        builds each layer from it and `bitbert.quant.accounting` counts the modules it built."""
        if index >= self.early_layers or not self.widens_early_layers:
            return self
        if self.early_act_bits == 32:
            return self.replace(act_bits=32, binarize_qkv=False, attention_probs="softmax", ffn2_input="signed")
        return self.replace(act_bits=self.early_act_bits)

    @property
    def is_identity(self) -> bool:
        """True when converting with this config leaves the model's function unchanged."""
        return self.bits == "32-32-32" and not self.attention.replaced and self.ffn_act == "keep"

    @classmethod
    def from_preset(cls, name: str, bits: str = "1-1-1") -> "QuantConfig":
        """A named method at a given E-W-A precision.

        ``bit``: BiT (centred BWN, elastic binarizers, softmax + {0, α} attention, ReLU FFN with
        unsigned FFN2 input, binarized pooler). ``bibert``: BiBERT (row-wise centred weights, sign
        activations, bool Bi-Attention, GELU kept). ``baseline``: BinaryBERT-style (BWN without
        centring, ±1 sign activations everywhere including attention probabilities). ``fp``: full
        precision. Any preset at ``32-32-32`` is the identity conversion; override fields with
        ``dataclasses.replace`` (e.g. ``ffn_act="relu"`` for a full-precision ReLU stage).
        """
        key = str(name).lower()
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid presets: {list(PRESETS)}")
        e, w, a = parse_bits(bits)
        if key == "fp" or (e, w, a) == (32, 32, 32):
            if key == "fp" and (e, w, a) != (32, 32, 32) and bits != "1-1-1":
                raise ConfigError(f"preset 'fp' is full precision; bits must be 32-32-32, got {bits!r}")
            return cls(preset=key)
        quant_acts = a < 32
        common: dict[str, Any] = dict(embed_bits=e, weight_bits=w, act_bits=a, preset=key)
        if key == "bit":
            return cls(**common, weight_centering=True, weight_scale="tensor", act_quantizer="elastic",
                       binarize_qkv=quant_acts, attention_probs="softmax_elastic" if quant_acts else "softmax",
                       ffn_act="relu", ffn2_input="unsigned" if quant_acts else "signed",
                       binarize_pooler=True)
        if key == "bibert":
            return cls(**common, weight_centering=True, weight_scale="row", act_quantizer="sign",
                       binarize_qkv=quant_acts, attention_probs="bool" if quant_acts else "softmax",
                       ffn_act="keep", ffn2_input="signed", binarize_pooler=True)
        return cls(**common, weight_centering=False, weight_scale="tensor", act_quantizer="sign",
                   binarize_qkv=quant_acts, attention_probs="softmax_sign" if quant_acts else "softmax",
                   ffn_act="keep", ffn2_input="signed", binarize_pooler=True)

    def replace(self, **changes: Any) -> "QuantConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["embeddings"] = list(self.embeddings)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        """The config a `to_dict` wrote. Training settings that older versions saved with the model
        (`TRAINING_FIELDS`, now `bitbert.quant.schedule.QuantInit`) are dropped: they never changed
        what the model computes."""
        data = {k: v for k, v in data.items() if k not in TRAINING_FIELDS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown QuantConfig fields {unknown}; valid: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# what a schedule's E-W-A string (or the preset) already decides; not overridable field by field
SCHEDULE_FIELDS = ("embed_bits", "weight_bits", "act_bits", "preset")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_quant_overrides(text: str | None, **shortcuts: Any) -> dict[str, Any]:
    """``"key=value,key=value"`` (e.g. ``"binarize_pooler=false,attention_probs=softmax"``) as typed
    `QuantConfig` field changes, applied to every stage's preset config. Booleans take true/false,
    ``embeddings`` takes tables joined by ``+`` (``word+position``). Bits come from the schedule,
    never from here. ``shortcuts`` are dedicated CLI flags (``residual_rank=1``); those left at a
    falsy value are not given, and one that contradicts ``text`` is an error. Unknown keys and
    untypeable values raise `ConfigError`; whether a combination is valid is checked when it is
    applied (`QuantConfig.__post_init__`)."""
    changes = _parse_quant_text(text)
    for key, value in shortcuts.items():
        if not value:
            continue
        if key in changes and changes[key] != value:
            raise ConfigError(f"--quant sets {key}={changes[key]!r} but its own flag says {value!r}")
        changes[key] = value
    return changes


def _parse_quant_text(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    fields = {f.name: f for f in dataclasses.fields(QuantConfig) if f.name not in SCHEDULE_FIELDS}
    changes: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in fields:
            hint = " (bits come from --schedule)" if key in SCHEDULE_FIELDS else \
                f" ({key} is a training setting: --{key.replace('_', '-')})" if key in TRAINING_FIELDS else ""
            raise ConfigError(f"--quant: {item.strip()!r} is not key=value with key in {sorted(fields)}{hint}")
        default = fields[key].default
        if isinstance(default, bool):
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"--quant: {key} needs true or false, got {value!r}")
            changes[key] = value.lower() in _TRUE
        elif isinstance(default, int):
            try:
                changes[key] = int(value)
            except ValueError:
                raise ConfigError(f"--quant: {key} needs an integer, got {value!r}") from None
        elif isinstance(default, tuple):
            changes[key] = tuple(v.strip() for v in value.split("+") if v.strip())
        else:
            changes[key] = value
    return changes


@dataclass(frozen=True)
class AugmentConfig:
    """How `bitbert.training.augment` extends a training set for distillation; ``copies=0`` leaves it as it is.

    Attributes:
        copies: perturbed versions per example and text (TinyBERT: 20 for SST-2 and QNLI, 30 for
            CoLA, MRPC, RTE and STS-B, 10 for MNLI and QQP); a pair task's copy perturbs one of its
            texts. A version that happened to change no word is dropped, so the set grows by at
            most ``copies`` times per text.
        replace_prob: chance that each single-piece word is replaced (TinyBERT: 0.4).
        neighbours: how many candidates a replacement is drawn from (TinyBERT's M: 15): nearest
            words in memory, masked-LM candidates or nearest words in `bitbert.training.augmented`.
        seed: the draws are deterministic given it.
    """

    copies: int = 0
    replace_prob: float = 0.4
    neighbours: int = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.copies, int) or self.copies < 0:
            raise ConfigError(f"augment copies must be an integer >= 0, got {self.copies!r}")
        if not 0 < self.replace_prob <= 1:
            raise ConfigError(f"augment replace_prob must be in (0, 1], got {self.replace_prob!r}")
        if not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ConfigError(f"augment neighbours must be an integer >= 1, got {self.neighbours!r}")
