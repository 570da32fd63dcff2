"""Bounds for numbers read from config, commands and lists, and a JSON reader that refuses NaN. Pure.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e400`` (infinite) as floats, and NaN
passes every ``<`` and ``>`` check, so a time of NaN never expires. Everything a gate reads
from outside goes through these checks.

Documented bounds:

- times (command ``issued_at``/``expires_at``, list ``iat``/``exp``): Unix seconds from
  ``MIN_TIME_S`` (2001-09-09) to ``MAX_TIME_S`` (2100-01-01);
- list versions: whole numbers from 1 to ``MAX_LIST_VERSION`` (10^12: room for a version
  per millisecond for 30 years, or Unix seconds, the tools' default, for 30,000 years),
  so a message cannot push a gate to a version no later list can pass.
"""

from __future__ import annotations

import json
import math
from typing import Any

MIN_TIME_S = 1_000_000_000
MAX_TIME_S = 4_102_444_800
MAX_LIST_VERSION = 10**12


def is_finite_number(value: Any) -> bool:
    """True for an int or float (never a bool) that is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def in_range(value: Any, low: float, high: float) -> bool:
    """True for a finite number within [low, high]."""
    return is_finite_number(value) and low <= value <= high


def is_time_s(value: Any) -> bool:
    """True for a finite Unix time in seconds within the documented bounds."""
    return in_range(value, MIN_TIME_S, MAX_TIME_S)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def loads_json_strict(data: str | bytes) -> Any:
    """``json.loads`` that refuses NaN, Infinity and overflowing numbers.

    Raises:
        ValueError: not JSON, a non-finite number, or nested too deeply to read.
    """
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as err:
        raise ValueError("JSON nested too deeply") from err
