"""Procedure parameters: pymeasure's Parameter types, with errors that name the parameter.

pymeasure's FloatParameter says "value is above the maximum" without naming the parameter or the
range, and lets NaN through (no comparison with NaN is true). Every value typed on the command
line or in the GUI goes through `parse_value`, which says which parameter, what value and what is
allowed, and refuses non-finite numbers; the Parameter objects stay pymeasure's, so Procedures,
the Worker and the GUI inputs use them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hotspin.analysis.checks import ParameterError
from pymeasure.experiment import (
    BooleanParameter,
    FloatParameter,
    IntegerParameter,
    ListParameter,
    Parameter,
    VectorParameter,
)


class BoundedVectorParameter(VectorParameter):
    """A pymeasure VectorParameter whose every component lies in [minimum, maximum]."""

    def __init__(
        self,
        name: str,
        length: int = 3,
        units: str | None = None,
        minimum: float = -math.inf,
        maximum: float = math.inf,
        **kwargs: Any,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(name, length=length, units=units, **kwargs)

    def convert(self, value: Any) -> list[float]:
        """Return the vector as floats, each finite and inside the bounds."""
        vector = super().convert(value)
        for component in vector:
            if not (math.isfinite(component) and self.minimum <= component <= self.maximum):
                raise ValueError(
                    f"component {component:g} outside [{self.minimum:g}, {self.maximum:g}]"
                )
        return vector


#: Bounds at or beyond this size are no limit a person needs to read (e.g. a seed's 2**63 - 1).
_UNBOUNDED = 2.0**53


def _interval(low: float, high: float, units: str) -> str:
    """Return '[low, high] units', or '≥ low' / '≤ high' / 'any' where a side is unbounded."""
    has_low, has_high = abs(low) < _UNBOUNDED, abs(high) < _UNBOUNDED
    if has_low and has_high:
        return f"[{low:g}, {high:g}]{units}"
    if has_low:
        return f"≥ {low:g}{units}"
    return f"≤ {high:g}{units}" if has_high else f"any{units}"


def range_text(parameter: Parameter) -> str:
    """Return what a parameter accepts, e.g. '[1, 1000]', '[0, 470] K' or 'one of [a, b]'."""
    units = f" {parameter.units}" if getattr(parameter, "units", None) else ""
    if isinstance(parameter, ListParameter):
        return f"one of {list(parameter.choices)}"
    if isinstance(parameter, BooleanParameter):
        return "true or false"
    if isinstance(parameter, VectorParameter):
        low = getattr(parameter, "minimum", -math.inf)
        high = getattr(parameter, "maximum", math.inf)
        return f"{parameter._length} × {_interval(low, high, units)}"
    return _interval(parameter.minimum, parameter.maximum, units)


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(f"{v:g}" if isinstance(v, float | int) else str(v) for v in value)
    return str(value)


def _vector(key: str, parameter: VectorParameter, value: Any) -> list[float]:
    """Return a vector's components as floats; refuse a wrong count or a non-number by name."""
    parts = value.strip().strip("[]").split(",") if isinstance(value, str) else list(value)
    if len(parts) != parameter._length:
        raise ParameterError(
            f"{key} = {_text(value)} has {len(parts)} component(s); it needs "
            f"{parameter._length}, comma-separated"
        )
    components = []
    for index, part in enumerate(parts):
        try:
            components.append(float(part.strip() if isinstance(part, str) else part))
        except (TypeError, ValueError):
            raise ParameterError(
                f"{key} = {_text(value)}: component {index + 1} ({str(part).strip()!r}) is not "
                "a number"
            ) from None
    return components


def parse_value(key: str, parameter: Parameter, value: Any) -> Any:
    """Return ``value`` converted by ``parameter``; raise ParameterError naming key and range."""
    if isinstance(parameter, VectorParameter):
        value = _vector(key, parameter, value)
    if isinstance(parameter, FloatParameter | IntegerParameter):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f"{key} = {value!r} is not a number; allowed range {range_text(parameter)}"
            ) from None
        if not math.isfinite(number):
            raise ParameterError(
                f"{key} = {number:g} is outside the allowed range {range_text(parameter)}"
            )
        if isinstance(parameter, IntegerParameter):
            if number != math.floor(number):
                raise ParameterError(
                    f"{key} = {value} must be an integer in {range_text(parameter)}"
                )
            value = int(number)  # "1e3" is 1000 (pymeasure's int("1e3") would refuse it)
    try:
        return parameter.convert(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{key} = {_text(value)} is outside the allowed range {range_text(parameter)}"
        ) from None


def check_station_maximum(
    key: str, parameter: Parameter, value: Any, limit: float, setting: str
) -> None:
    """Refuse a number above the station setting ``setting`` (= ``limit``), naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return  # not a number: parse_value says so
    if number > limit:
        units = f" {parameter.units}" if getattr(parameter, "units", None) else ""
        raise ParameterError(
            f"{key} = {number:g} is outside the allowed range [{parameter.minimum:g}, "
            f"{limit:g}]{units} ({setting} of the station)"
        )


def assign(
    parameters: Mapping[str, Parameter],
    assignments: Iterable[str],
    maxima: Mapping[str, tuple[float, str]] | None = None,
) -> dict[str, Any]:
    """Return every parameter's value: its default, overridden by NAME=VALUE assignments.

    ``maxima``, {name: (limit, station setting)}: the station's limits, checked first, so that
    a value above both them and the parameter's own range is refused with the tighter one.
    """
    values = {key: p.default for key, p in parameters.items()}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise ParameterError(f"--set takes NAME=VALUE, got {assignment!r}")
        if key not in parameters:
            raise ParameterError(
                f"unknown parameter {key!r}; known parameters: {', '.join(sorted(parameters))}"
            )
        if maxima and key in maxima:
            check_station_maximum(key, parameters[key], text.strip(), *maxima[key])
        values[key] = parse_value(key, parameters[key], text.strip())
    return values


def parameters_table(parameters: Mapping[str, Parameter]) -> str:
    """Return an aligned table: name, unit, allowed range, default, meaning."""
    rows = [("name", "unit", "allowed", "default", "meaning")]
    for key, p in parameters.items():
        default = "none" if p.default is None else _text(p.default)
        rows.append((key, getattr(p, "units", None) or "-", range_text(p), default, p.name))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    )
