"""An in-process pymeasure adapter: a real driver talks to a simulated instrument, no sockets.

It behaves like pyvisa on a raw socket, so a driver cannot tell the difference: `read` stops at the
last character of the read termination and strips the whole termination, `read_bytes(n)` returns
exactly n bytes, and a read with nothing to read raises pyvisa's timeout error. A connection the
simulated instrument dropped raises pyvisa's connection-lost error from then on.
"""

from __future__ import annotations

import warnings

from hotspin.simulators.instrument_base import ConnectionDropped, SimulatedInstrument
from hotspin.simulators.unsolicited import UnsolicitedSession
from pymeasure.adapters import Adapter
from pyvisa import constants
from pyvisa.errors import VisaIOError


class InProcessAdapter(Adapter):
    """A pymeasure `Adapter` connected directly to a `SimulatedInstrument` session."""

    def __init__(
        self,
        instrument: SimulatedInstrument,
        read_termination: str | None = None,
        write_termination: str | None = None,
        encoding: str = "ascii",
    ) -> None:
        super().__init__()
        self.instrument = instrument
        self.session = instrument.open_session()
        self.read_termination = (
            instrument.output_terminator.decode(encoding)
            if read_termination is None
            else read_termination
        )
        self.write_termination = (
            instrument.input_terminator.decode(encoding)
            if write_termination is None
            else write_termination
        )
        self.encoding = encoding
        self._dropped = False
        self._buffer = bytearray(self.session.greeting())

    def _write(self, command: str, **kwargs: object) -> None:
        self._write_bytes((command + self.write_termination).encode(self.encoding))

    def _write_bytes(self, content: bytes, **kwargs: object) -> None:
        self._check_link()
        try:
            self._buffer.extend(self.session.feed(bytes(content)))
        except ConnectionDropped:
            self._dropped = True
            raise VisaIOError(constants.StatusCode.error_connection_lost) from None

    def _check_link(self) -> None:
        if self._dropped:
            raise VisaIOError(constants.StatusCode.error_connection_lost)
        if isinstance(self.session, UnsolicitedSession):  # what it sent unprompted, by now
            self._buffer.extend(self.session.poll())

    def _read(self, **kwargs: object) -> str:
        self._check_link()
        termination = self.read_termination
        if not termination:
            message, self._buffer = bytes(self._buffer), bytearray()
            if not message:
                raise VisaIOError(constants.StatusCode.error_timeout)
            return message.decode(self.encoding)
        stop = self._buffer.find(termination[-1].encode(self.encoding))
        if stop < 0:
            raise VisaIOError(constants.StatusCode.error_timeout)
        message = bytes(self._buffer[: stop + 1]).decode(self.encoding)
        del self._buffer[: stop + 1]
        if not message.endswith(termination):
            warnings.warn("read string doesn't end with termination characters", stacklevel=2)
            return message
        return message[: -len(termination)]

    def _read_bytes(self, count: int, break_on_termchar: bool = False, **kwargs: object) -> bytes:
        self._check_link()
        if count < 0:
            data, self._buffer = bytes(self._buffer), bytearray()
            return data
        if break_on_termchar and self.read_termination:
            stop = self._buffer.find(self.read_termination[-1].encode(self.encoding))
            if 0 <= stop < count:
                count = stop + 1
        if len(self._buffer) < count:
            raise VisaIOError(constants.StatusCode.error_timeout)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def flush_read_buffer(self) -> None:
        """Discard everything the instrument sent that was not read."""
        self._buffer.clear()

    def __repr__(self) -> str:
        return f"<InProcessAdapter {self.instrument.name}>"
