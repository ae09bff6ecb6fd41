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
"""

from __future__ import annotations

import contextlib
import logging
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

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = (InstrumentTimeoutError, LinkLostError, GarbledReplyError, InstrumentCommandError)


class ResilientLink:
    """One driver, rebuilt on demand, with every exchange retried after a link fault."""

    def __init__(self, name: str, factory: Callable[[], Any], retries: int = 2) -> None:
        self.name = name
        self.factory = factory
        self.retries = retries
        self.driver: Any = factory()
        self.reconnections = 0
        self.faults_survived: list[str] = []

    def call(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(driver)``; on a link fault reconnect and run it again.

        Reconnecting is part of an attempt: a driver that cannot even be built (the instrument
        does not answer its greeting) counts as a failed attempt, not as a new kind of error.
        """
        for attempt in range(self.retries + 1):
            try:
                if self.driver is None:
                    self.driver = self.factory()
                    self.reconnections += 1
                return operation(self.driver)
            except ParameterError:
                raise  # refused before sending: repeating cannot help
            except (*RETRYABLE, ValueError, KeyError, IndexError) as error:
                # A reply that does not parse as what was asked for (a number, one of the
                # instrument's words) is garbled, whichever parser noticed.
                failure = (
                    error
                    if isinstance(error, InstrumentError)
                    else GarbledReplyError(self.name, f"reply could not be read: {error}")
                )
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
