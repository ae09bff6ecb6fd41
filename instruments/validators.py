"""pymeasure validators whose errors name the parameter, its value and the allowed range.

pymeasure's own `strict_range` says "Value of 500 is not in range [0,400]" without saying which
setting; a physicist with six instruments open needs the name. These wrap the same checks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from hotspin.analysis.checks import ParameterError, check_range

Validator = Callable[[Any, Any], Any]


def named_range(name: str, unit: str = "") -> Validator:
    """Return a validator for `Instrument.control` that accepts values inside ``values``' range."""

    def validator(value: Any, values: Sequence[float]) -> Any:
        check_range(name, value, min(values), max(values), unit)
        return value  # unchanged, so an int stays an int in the command

    return validator


def named_choice(name: str) -> Validator:
    """Return a validator that accepts only the members of ``values`` (a list, tuple or dict)."""

    def validator(value: Any, values: Collection[Any]) -> Any:
        if value in values:
            return value
        raise ParameterError(f"{name} = {value!r} is not one of {sorted(values, key=_order)}")

    return validator


def _order(choice: Any) -> tuple[bool, float, str]:
    """Sort key: numbers in numeric order (1, 2, 4, … 1024), then everything else as text."""
    is_number = isinstance(choice, int | float) and not isinstance(choice, bool)
    return (not is_number, choice if is_number else 0.0, str(choice))
