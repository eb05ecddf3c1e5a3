"""What a distillation run does with quantization, beside what the model is (`QuantConfig`):
BiT's multi-distillation `Schedule` (the E-W-A stages, parsed once) and `QuantInit`, how each
stage's activation quantizers start. Torch-free: the CLI checks them before any work.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.config import ALPHA_INITS, ConfigError, QuantConfig, parse_bits
from ..core.validate import SettingError


def stage_config(method: str, bits: str, overrides: Mapping[str, Any] | None = None) -> QuantConfig:
    """The one way a trained model's `QuantConfig` is made: ``method``'s preset at ``bits`` with
    ``overrides`` (`bitbert.core.config.parse_quant_overrides`, or a pretraining config's fields)
    applied; raises `ConfigError` for an invalid combination."""
    return QuantConfig.from_preset(method, bits).replace(**dict(overrides or {}))


# Sentence-pair tasks: the first two encoder layers keep 4-bit activations (weights stay 1-bit).
# Those layers hold the heads that find a token of one text in the other; with 1-bit activations
# there they never form and a 1-1-1 student falls toward one class (pair control: 69.6% → 94.2-94.6%
# with this, benchmarks/results/pair_control.json). Single-sentence tasks stay fully binary.
PAIR_TASK_QUANT: Mapping[str, Any] = {"early_layers": 2, "early_act_bits": 4}


def task_overrides(sentence_pairs: bool, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `QuantConfig` overrides a task's run uses: `PAIR_TASK_QUANT` for sentence-pair tasks, then
    the user's ``overrides`` on top (``early_layers=0`` gives a pair task the fully binary model)."""
    return {**(PAIR_TASK_QUANT if sentence_pairs else {}), **dict(overrides or {})}


@dataclass(frozen=True)
class Schedule:
    """BiT Algorithm 1's stages, each an E-W-A precision (``("1-1-2", "1-1-1")``): each stage's
    student is the previous stage's model re-quantized. ``str(schedule)`` is ``"1-1-2,1-1-1"``."""

    stages: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise SettingError("schedule", "must list E-W-A stages, e.g. 32-32-32,1-1-2,1-1-1", "")
        for bits in self.stages:
            parse_bits(bits)  # a clear message naming the bad stage

    @classmethod
    def parse(cls, schedule: "str | Sequence[str] | Schedule") -> "Schedule":
        """``"1-1-2,1-1-1"`` (or a list of stages, or a Schedule) as a Schedule."""
        if isinstance(schedule, Schedule):
            return schedule
        stages = schedule.split(",") if isinstance(schedule, str) else list(schedule)
        try:
            return cls(tuple(s.strip() for s in stages if s.strip()))
        except SettingError:
            raise SettingError("schedule", "must list E-W-A stages, e.g. 32-32-32,1-1-2,1-1-1", schedule) from None

    def configs(self, method: str, overrides: Mapping[str, Any] | None = None) -> list[QuantConfig]:
        """Each stage's `QuantConfig` (`stage_config`)."""
        return [stage_config(method, bits, overrides) for bits in self.stages]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __str__(self) -> str:
        return ",".join(self.stages)


@dataclass(frozen=True)
class QuantInit:
    """How a stage's activation quantizers start: training policy, not part of the model (so not
    saved with it).

    Attributes:
        alpha_init: how :func:`bitbert.calibrate` sets a 1-bit α from data: ``optimal`` (BiT eq. 6 /
            8, the α that best fits the input) or ``wide`` (BiT's public code: 2·mean|x| signed,
            4·mean|x| unsigned; a wider straight-through window |x − β| ≤ α, so more gradient
            passes). Multi-bit α is LSQ's either way.
        inherit_quantizers: a stage after the first starts each activation site's α and β from
            the previous stage's quantizer there instead of fresh (β = 0, α calibrated). BiT's code
            ends up doing this when it loads the W1A2 checkpoint into the W1A1 model: α is set
            lazily only while it is still exactly 1, so the loaded α is kept.
    """

    alpha_init: str = "optimal"
    inherit_quantizers: bool = False

    def __post_init__(self) -> None:
        if self.alpha_init not in ALPHA_INITS:
            raise ConfigError(f"alpha_init={self.alpha_init!r} is not valid; choose one of {list(ALPHA_INITS)}")

    @property
    def is_default(self) -> bool:
        return self == QuantInit()
