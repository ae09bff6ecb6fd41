"""The exceptions every driver raises: one family, so procedures can act on what went wrong."""


class InstrumentError(Exception):
    """Something went wrong talking to, or inside, an instrument."""

    def __init__(self, instrument: str, message: str) -> None:
        super().__init__(f"{instrument}: {message}")
        self.instrument = instrument


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
