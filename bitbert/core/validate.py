"""Numbers checked at the door: the rules a setting must satisfy, shared by the configs' own
``__post_init__`` checks and the library functions that take a plain number.

A broken number never reaches training: ``lr=nan`` would give a NaN model that still "finishes",
``epochs=inf`` a schedule that never ends, ``seed=-1`` an error deep in NumPy. Each rule raises
`SettingError`, which names the setting; the command line shows it as ``argument --the-setting``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

from .config import ConfigError

__all__ = ["SettingError", "finite", "integer", "one_of", "SEED_MAX"]

SEED_MAX = 2**32 - 1  # NumPy's generators take seeds in [0, 2**32); torch's any 64-bit value


class SettingError(ConfigError):
    """An invalid value of the setting ``name`` (a config field or function argument; the CLI's
    ``--name-with-dashes``); ``problem`` says what a valid value is."""

    def __init__(self, name: str, problem: str, value: Any) -> None:
        self.name, self.problem, self.value = name, problem, value
        super().__init__(f"{name} {self.detail}")

    @property
    def detail(self) -> str:
        return self.problem if self.value is None else f"{self.problem}, got {self.value!r}"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def finite(name: str, value: Any, low: float | None = None, *, above: bool = False,
           high: float | None = None, below: bool = False) -> float:
    """``value`` as a float; it must be a finite number >= ``low`` (> with ``above``) and <= ``high``
    (< with ``below``)."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if below else '<='} {high:g}")
    problem = "must be a finite number" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(name, problem, value)
    v = float(value)
    if not math.isfinite(v) or (low is not None and (v <= low if above else v < low)) or (
            high is not None and (v >= high if below else v > high)):
        raise SettingError(name, problem, value)
    return v


def integer(name: str, value: Any, low: int = 0, high: int | None = None) -> int:
    """``value``, an int in [``low``, ``high``]."""
    problem = f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        raise SettingError(name, problem, value)
    return int(value)


def one_of(name: str, value: Any, valid: Collection[str]) -> str:
    if value not in valid:
        raise SettingError(name, f"must be one of {', '.join(map(str, valid))}", value)
    return value
