"""The exceptions every driver raises: one family, so procedures can act on what went wrong."""

from collections.abc import Iterator
from contextlib import contextmanager

from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError


class InstrumentError(Exception):
    """Something went wrong talking to, or inside, an instrument."""

    def __init__(self, instrument: str, message: str) -> None:
        super().__init__(instrument, message)
        self.instrument = instrument
        self.message = message
        #: The VISA resource (or simulated connection) it happened on, once a link knows it.
        self.resource: str | None = None

    def __str__(self) -> str:
        where = f"{self.instrument} ({self.resource})" if self.resource else self.instrument
        return f"{where}: {self.message}"


class InstrumentCommandError(InstrumentError):
    """The instrument reported an error for a command (error queue, status byte, status code)."""

    def __init__(self, instrument: str, message: str, code: int | None = None) -> None:
        super().__init__(instrument, message)
        self.code = code


class InstrumentTimeoutError(InstrumentError):
    """The instrument did not answer in time."""


class LinkLostError(InstrumentError):
    """The connection to the instrument dropped."""


class GarbledReplyError(InstrumentError):
    """The instrument's answer could not be parsed as what the command returns."""


class InterlockError(InstrumentError):
    """A station limit or interlock refused an action before anything was sent."""


@contextmanager
def translated_io_errors(instrument: str) -> Iterator[None]:
    """Re-raise pyvisa and socket failures inside the block as this module's exceptions."""
    try:
        yield
    except VisaIOError as error:
        if error.error_code == StatusCode.error_timeout:
            raise InstrumentTimeoutError(instrument, "no answer before the timeout") from error
        if error.error_code == StatusCode.error_connection_lost:
            raise LinkLostError(instrument, str(error)) from error
        raise
    except ConnectionError as error:
        raise LinkLostError(instrument, str(error)) from error
