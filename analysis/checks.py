"""Input checks that name the parameter, its value and the allowed range."""

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


class ParameterError(ValueError):
    """A parameter value outside its allowed range; the message names both."""


def _format_range(low: float, high: float, low_open: bool, high_open: bool, unit: str) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    suffix = f" {unit}" if unit else ""
    return f"{left}{low:g}, {high:g}{right}{suffix}"


def check_range(
    name: str,
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    unit: str = "",
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if finite and inside the range, else raise ParameterError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{name} = {value!r} is not a number; allowed range "
            f"{_format_range(low, high, low_open, high_open, unit)}"
        ) from None
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if not math.isfinite(number) or too_low or too_high:
        raise ParameterError(
            f"{name} = {number:g} is outside the allowed range "
            f"{_format_range(low, high, low_open, high_open, unit)}"
        )
    return number


def check_positive(name: str, value: float, unit: str = "") -> float:
    """Return ``value`` if it is finite and > 0, else raise ParameterError."""
    return check_range(name, value, 0.0, math.inf, unit, low_open=True, high_open=True)


def check_vector(name: str, value: Iterable[float], length: int = 3, unit: str = "") -> np.ndarray:
    """Return a finite float vector of the given length, else raise ParameterError."""
    array = np.asarray(value, dtype=float).ravel()
    if array.size != length:
        raise ParameterError(f"{name} needs {length} components, got {array.size}: {value!r}")
    if not np.all(np.isfinite(array)):
        suffix = f" {unit}" if unit else ""
        raise ParameterError(
            f"{name} = {array.tolist()} is not finite; every component must lie in "
            f"(-inf, inf){suffix}"
        )
    return array


def dataclass_from_mapping(cls: type, mapping: Mapping[str, Any], where: str) -> Any:
    """Build the dataclass ``cls`` from a (TOML) mapping; unknown names raise ParameterError.

    Nested mappings fill nested dataclass fields; lists become tuples (frozen dataclasses).
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ParameterError(
            f"unknown setting(s) {', '.join(where + '.' + u for u in unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, value in mapping.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, Mapping):
            values[name] = dataclass_from_mapping(hints[name], value, f"{where}.{name}")
        elif isinstance(value, list):
            values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            values[name] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise ParameterError(f"{where}: {error}") from None
