"""Named, typed, range-checked settings given as NAME=VALUE on the command line."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.checks import ParameterError, check_range


@dataclass(frozen=True)
class Setting:
    """One settable quantity: its unit, allowed range, default and meaning."""

    name: str
    unit: str
    low: float
    high: float
    default: Any
    help: str
    components: int = 1
    integer: bool = False
    low_open: bool = False

    def parse(self, text: str) -> Any:
        """Return the value of ``text`` for this setting, or raise ParameterError naming it."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != self.components:
            raise ParameterError(
                f"{self.name} needs {self.components} comma-separated value(s), got {text!r}"
            )
        values = []
        for part in parts:
            try:
                number = float(part)
            except ValueError:
                raise ParameterError(
                    f"{self.name} = {part!r} is not a number; allowed range {self.range_text()}"
                ) from None
            if self.integer and number != math.floor(number):
                raise ParameterError(f"{self.name} = {part} must be an integer")
            check_range(self.name, number, self.low, self.high, self.unit, low_open=self.low_open)
            values.append(int(number) if self.integer else number)
        return values[0] if self.components == 1 else tuple(values)

    def range_text(self) -> str:
        """Return the allowed range as text, e.g. '[250, 700] K'."""
        left = "(" if self.low_open else "["
        unit = f" {self.unit}" if self.unit else ""
        return f"{left}{self.low:g}, {self.high:g}]{unit}"

    def default_text(self) -> str:
        """Return the default as it would be typed."""
        if isinstance(self.default, tuple):
            return ",".join(f"{v:g}" for v in self.default)
        return "none" if self.default is None else f"{self.default:g}"


def parse_assignments(assignments: Iterable[str], settings: Sequence[Setting]) -> dict[str, Any]:
    """Return every setting's value: its default, overridden by NAME=VALUE assignments."""
    known = {s.name: s for s in settings}
    values = {s.name: s.default for s in settings}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep:
            raise ParameterError(f"--set takes NAME=VALUE, got {assignment!r}")
        if name not in known:
            raise ParameterError(
                f"unknown setting {name!r}; known settings: {', '.join(sorted(known))}"
            )
        values[name] = known[name].parse(text)
    return values


def format_settings_table(settings: Sequence[Setting]) -> str:
    """Return an aligned table of name, unit, allowed range, default and meaning."""
    rows = [("name", "unit", "range", "default", "meaning")]
    rows += [(s.name, s.unit or "-", s.range_text(), s.default_text(), s.help) for s in settings]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    return "\n".join(lines)
