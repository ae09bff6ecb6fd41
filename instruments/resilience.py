"""Surviving link faults: reconnect and retry what is safe to repeat, never hang.

`ResilientLink` owns one driver and the recipe to build it again. Every use of the driver goes
through `call`: a timeout, a dropped connection, a garbled reply or an error the instrument
reports is answered by closing the connection, opening a fresh one and trying again, up to
`retries` times; then the last error is raised, as the specific `InstrumentError` it was.

Repeating is safe because everything the virtual instruments send is idempotent: queries, and
settings of absolute values (a setpoint, a current, a plate angle, a decimation); a digitiser
record is simply taken again. Relative moves are never sent through a link. Each attempt is
bounded by the driver's timeout, so a stalled instrument costs (retries + 1) timeouts, not a hang.

The virtual instruments name every exchange explicitly, `link.call(lambda d: d.input_A.kelvin)`,
so that after a reconnection the same code speaks to the new driver.

Nothing below a link may hang. pyvisa-py 0.8.1's raw-socket session discards unread input in
`TCPIPSocketSession.clear` (pyvisa_py/tcpip.py, lines 1307-1312) by receiving until the socket
has been silent for 0.1 s; a socket the peer has closed is always readable and `recv` returns
b"" at once, so on a closed connection that loop never ends (nor on a peer that never stops
sending). pymeasure's `VISAAdapter.flush_read_buffer` reaches it through `flush`, and drivers
flush after a read that timed out, which is exactly what a closed connection produces. Every
driver a link builds therefore has that session's `clear` replaced by `bounded_clear`, which
stops at the link's timeout and reports a closed socket as a lost connection. The session's
`read` (lines 1168-1257) meets the same socket the same way: `select` returns at once, `recv`
gives b"", and it loops, busy, until the timeout passes, then reports a timeout. So the
session's socket is wrapped (`_ClosedIsLost`) so that `recv` at the end of the stream raises
connection lost: a dropped connection is named as one at once instead of costing a whole
timeout of CPU (0.4 s of a 0.6 s timeout, measured) and being reported as no answer. Failures that
arrive as raw `OSError`s or VISA status codes become `LinkLostError`/`InstrumentTimeoutError`
naming the instrument and its resource, never only a Python class.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
import types
from collections.abc import Callable
from typing import Any, TypeVar

from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import (
    GarbledReplyError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    LinkLostError,
)
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = (InstrumentTimeoutError, LinkLostError, GarbledReplyError, InstrumentCommandError)
#: How long `bounded_clear` discards input when the session has no timeout, in s.
DEFAULT_CLEAR_TIMEOUT_S = 2.0
_DRAIN_QUIET_S = 0.1  # silence that ends the discarding, as pyvisa-py's own clear waits


def bounded_clear(session: Any) -> StatusCode:
    """Discard a raw-socket session's unread input, for at most its timeout; never hang.

    Replaces pyvisa-py's `TCPIPSocketSession.clear` on one session (see the module notes): the
    input is received and dropped until the socket is quiet for 0.1 s or the session's timeout
    has passed; a socket the peer closed raises `VisaIOError` (connection lost).
    """
    session._pending_buffer.clear()
    connection: socket.socket = session.interface
    timeout_s = DEFAULT_CLEAR_TIMEOUT_S if session.timeout is None else session.timeout
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([connection], [], [], min(_DRAIN_QUIET_S, remaining))
        if not readable:
            break
        if not connection.recv(4096):
            raise VisaIOError(StatusCode.error_connection_lost)
    return StatusCode.success


class _ClosedIsLost:
    """A raw-socket session's socket whose `recv` at the end of the stream (the peer closed the
    connection) raises connection lost instead of returning b""; everything else is the socket's.
    """

    __slots__ = ("_socket",)

    def __init__(self, connection: socket.socket) -> None:
        self._socket = connection

    def recv(self, size: int) -> bytes:
        """Return what the socket received; raise `VisaIOError` when the peer has closed it."""
        data = self._socket.recv(size)
        if not data and size > 0:
            raise VisaIOError(StatusCode.error_connection_lost)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def bound_session_clear(driver: Any) -> None:
    """Give the driver's pyvisa-py raw-socket session the bounded `clear` and a socket whose end
    is a lost connection (other sessions unchanged)."""
    connection = getattr(getattr(driver, "adapter", None), "connection", None)
    visalib = getattr(connection, "visalib", None)
    sessions = getattr(visalib, "sessions", None)
    if not isinstance(sessions, dict):
        return  # not a pyvisa-py resource (an in-process adapter, another VISA library)
    from pyvisa_py.tcpip import TCPIPSocketSession

    session = sessions.get(connection.session)
    if isinstance(session, TCPIPSocketSession):
        session.clear = types.MethodType(bounded_clear, session)
        if isinstance(session.interface, socket.socket):
            session.interface = _ClosedIsLost(session.interface)


def link_failure(instrument: str, error: BaseException) -> InstrumentError | None:
    """Return the `InstrumentError` a raw transport failure means, or None if it is none."""
    if isinstance(error, VisaIOError):
        if error.error_code == StatusCode.error_timeout:
            return InstrumentTimeoutError(instrument, "no answer before the timeout")
        if error.error_code == StatusCode.error_connection_lost:
            return LinkLostError(instrument, "connection lost (the peer closed it)")
        return LinkLostError(instrument, f"link failed ({error.description})")
    if isinstance(error, socket.timeout | TimeoutError):
        return InstrumentTimeoutError(instrument, "no answer before the timeout")
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        return LinkLostError(instrument, f"connection lost ({reason})")
    return None


class ResilientLink:
    """One driver, rebuilt on demand, with every exchange retried after a link fault."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Any],
        retries: int = 2,
        resource: str | None = None,
    ) -> None:
        """``name``: the instrument's role; ``resource``: where it is connected, for messages."""
        self.name = name
        self.factory = factory
        self.retries = retries
        self.resource = resource
        self.reconnections = 0
        self.faults_survived: list[str] = []
        self.driver: Any = None
        try:
            self.driver = self._build()
        except Exception as error:
            failure = self._named(error)
            if failure is error:
                raise
            raise failure from error

    def _build(self) -> Any:
        driver = self.factory()
        bound_session_clear(driver)
        return driver

    @property
    def instrument(self) -> str:
        """Return the instrument's name as its driver gives it (the role before it is built)."""
        name = getattr(self.driver, "name", None)
        return name if isinstance(name, str) and name else self.name

    def _named(self, error: BaseException) -> BaseException:
        """Return ``error`` as an `InstrumentError` naming the instrument and its resource."""
        failure = error if isinstance(error, InstrumentError) else link_failure(self.name, error)
        if failure is None:
            return error
        if failure.resource is None:
            failure.resource = self.resource
        return failure

    def call(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(driver)``; on a link fault reconnect and run it again.

        Reconnecting is part of an attempt: a driver that cannot even be built (the instrument
        does not answer its greeting) counts as a failed attempt, not as a new kind of error.
        """
        for attempt in range(self.retries + 1):
            try:
                if self.driver is None:
                    self.driver = self._build()
                    self.reconnections += 1
                return operation(self.driver)
            except ParameterError:
                raise  # refused before sending: repeating cannot help
            except (*RETRYABLE, VisaIOError, OSError, ValueError, KeyError, IndexError) as error:
                # A reply that does not parse as what was asked for (a number, one of the
                # instrument's words) is garbled, whichever parser noticed.
                failure = link_failure(self.instrument, error) or (
                    error
                    if isinstance(error, InstrumentError)
                    else GarbledReplyError(self.instrument, f"reply could not be read: {error}")
                )
                failure = self._named(failure)
                self.disconnect()
                if attempt == self.retries:
                    raise failure from error
                log.warning("%s: %s; reconnecting (attempt %d)", self.name, failure, attempt + 1)
                self.faults_survived.append(type(failure).__name__)
        raise AssertionError("unreachable")

    def disconnect(self) -> None:
        """Close the connection; the next call builds the driver again on a fresh one."""
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.adapter.close()
        self.driver = None

    def close(self) -> None:
        """Close the connection for good."""
        self.disconnect()
