"""`Linked`: a virtual instrument's property that is one driver attribute, read through its link.

Every read or write goes through the instrument's `ResilientLink` (reconnects, retries, specific
errors) under the virtual instrument's lock, which the GUI's poller and the procedures share.
A `part` names a method of the virtual instrument that picks the driver's channel (the Lake
Shore's input A or output 1); a `check` method refuses a value before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Linked:
    """A property read (and, with ``writable``, set) as ``driver.<attribute>`` over the link."""

    def __init__(
        self,
        attribute: str,
        convert: Callable[[Any], Any] = float,
        doc: str = "",
        *,
        part: str | None = None,
        writable: bool = False,
        check: str | None = None,
    ) -> None:
        self.attribute, self.convert, self.part = attribute, convert, part
        self.writable, self.check = writable, check
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _target(self, instrument: Any, driver: Any) -> Any:
        return getattr(instrument, self.part)(driver) if self.part else driver

    def __get__(self, instrument: Any, owner: type | None = None) -> Any:
        if instrument is None:
            return self
        with instrument.lock:
            return instrument.link.call(
                lambda d: self.convert(getattr(self._target(instrument, d), self.attribute))
            )

    def __set__(self, instrument: Any, value: Any) -> None:
        if not self.writable:
            raise AttributeError(f"{type(instrument).__name__}.{self.name} is read-only")
        if self.check is not None:
            getattr(instrument, self.check)(value)
        with instrument.lock:
            instrument.link.call(
                lambda d: setattr(self._target(instrument, d), self.attribute, self.convert(value))
            )


def read_all(instrument: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Return the present value of each named property of ``instrument``, by name."""
    with instrument.lock:
        return {name: getattr(instrument, name) for name in names}
