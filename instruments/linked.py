"""`Linked`: a virtual instrument's property that is one driver attribute, read through its link.

Every read or write goes through the instrument's `ResilientLink` (reconnects, retries, specific
errors) under the virtual instrument's lock, which the GUI's poller and the procedures share.
A virtual instrument with several links (the polarimeter's digitiser and plate mount) names the
one a property uses with ``link``. A `part` names a method of the virtual instrument that picks
the driver's channel (the Lake Shore's input A or output 1, the Red Pitaya's input 1 or 2); a
`check` method refuses a value before anything is sent. A value is set by assigning the driver
attribute, or by calling the driver method `setter` (a move that waits, like the ELL14's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Linked:
    """A property read (and, with ``writable``, set) as ``driver.<attribute>`` over the link.

    ``convert`` turns the driver's value into the property's, and a value set into the driver's
    unless ``send`` is given for that.
    """

    def __init__(
        self,
        attribute: str,
        convert: Callable[[Any], Any] = float,
        doc: str = "",
        *,
        link: str = "link",
        part: str | None = None,
        writable: bool = False,
        check: str | None = None,
        setter: str | None = None,
        send: Callable[[Any], Any] | None = None,
    ) -> None:
        self.attribute, self.convert, self.link, self.part = attribute, convert, link, part
        self.writable, self.check = writable or setter is not None, check
        self.setter, self.send = setter, convert if send is None else send
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _target(self, instrument: Any, driver: Any) -> Any:
        return getattr(instrument, self.part)(driver) if self.part else driver

    def __get__(self, instrument: Any, owner: type | None = None) -> Any:
        if instrument is None:
            return self
        with instrument.lock:
            return getattr(instrument, self.link).call(
                lambda d: self.convert(getattr(self._target(instrument, d), self.attribute))
            )

    def __set__(self, instrument: Any, value: Any) -> None:
        if not self.writable:
            raise AttributeError(f"{type(instrument).__name__}.{self.name} is read-only")
        if self.check is not None:
            getattr(instrument, self.check)(value)
        sent = self.send(value)  # a value the driver cannot take fails here, before the link

        def operation(driver: Any) -> None:
            target = self._target(instrument, driver)
            if self.setter is None:
                setattr(target, self.attribute, sent)
            else:
                getattr(target, self.setter)(sent)

        with instrument.lock:
            getattr(instrument, self.link).call(operation)


def read_all(instrument: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Return the present value of each named property of ``instrument``, by name."""
    with instrument.lock:
        return {name: getattr(instrument, name) for name in names}
