"""The SCPI session layer the simulated SCPI instruments declare their command tables on.

One parser for every simulated instrument that speaks IEEE 488.2 / SCPI (the Keithley 6221, the
Red Pitaya's SCPI server) or the IEEE 488.2 subset with flat headers (the Lake Shore 336):

* headers: a pattern such as ``[:SOURce]:CURRent[:LEVel]`` answers to its short form (the capitals)
  and its long form, in any case, with the bracketed nodes optional (SCPI-99 vol. 1, command
  syntax); a header without a leading colon after a ``;`` continues the previous command's path,
  common commands (``*XXX``) leave the path alone (IEEE 488.2 compound headers, SCPI-99 vol. 1);
* queries: a header ending in ``?`` runs the command's query;
* the error queue: first in, first out, read by ``SYST:ERR?``; when full its last entry becomes
  ``-350,"Queue overflow"`` (SCPI-99 vol. 2, SYSTem:ERRor); instruments without a queue (the 336)
  only set the error's bit of the Standard Event Status Register;
* the status registers: the ESR with its enable (ESE), the status byte (STB) with the error/event
  queue bit (EAV, bit 2), the event summary (ESB, bit 5) and the master summary (MSS, bit 6)
  under the service request enable (SRE) (IEEE 488.2 §11);
* the IEEE 488.2 common commands ``*IDN? *RST *CLS *ESE *ESE? *ESR? *SRE *SRE? *STB? *OPC *OPC?
  *WAI *TST?`` (IEEE 488.2 §10). Nothing a simulated instrument does is overlapped, so ``*OPC``
  sets the operation-complete bit at once, ``*OPC?`` answers 1 and ``*WAI`` has nothing to wait
  for; the self-test ``*TST?`` passes (0).

An error sets its ESR bit by its class (IEEE 488.2 §11, SCPI-99 vol. 2 error list): -1xx command
error (bit 5, 32), -2xx execution error (bit 4, 16), -3xx and positive codes device-dependent
error (bit 3, 8), -4xx query error (bit 2, 4).

What instruments differ in is a class attribute of `ScpiInstrument` (each names its source where
it is set): whether each connection has its own status registers and error queue
(`status_per_connection`, as scpi-parser's one context per client), whether an error's queue
entry carries the failing program unit as device-dependent information after a ``;`` (SCPI-99
vol. 2 §21.8: ``-113,"Undefined header;ACQ:FOO"``, `error_info`), how a full queue records the
overflow (`overflow_replaces_last`), whether a common command keeps the compound path
(`common_commands_keep_path`) and whether a parameter left unread refuses the command or only
queues -108 after it ran and answered (`unread_parameter_after`). Headers may carry numeric
suffixes (``ACQ:SOUR#:GAIN``: SCPI-99 vol. 1 §6.2.5.2, the suffix is 1 when left out); a handler
reads them from `ScpiInstrument.numbers` and the header as sent from `ScpiInstrument.header`.
A query's answer is text or bytes (an IEEE 488.2 definite-length block goes out as it is).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hotspin.simulators.instrument_base import Session, SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab

# Standard Event Status Register bits (IEEE 488.2 §11).
ESR_OPERATION_COMPLETE = 1
ESR_QUERY_ERROR = 4
ESR_DEVICE_ERROR = 8
ESR_EXECUTION_ERROR = 16
ESR_COMMAND_ERROR = 32
ESR_POWER_ON = 128
# Status byte bits (IEEE 488.2 §11; SCPI-99 adds EAV as bit 2).
STB_ERROR_AVAILABLE = 4
STB_EVENT_SUMMARY = 32
STB_MASTER_SUMMARY = 64

# (code, message) of the SCPI errors the simulators report (SCPI-99 vol. 2 error list; the 6220/6221
# Reference Manual's Table B-1 lists the same codes, -363 and -350 read there).
COMMAND_ERROR = (-100, "Command error")
PARAMETER_NOT_ALLOWED = (-108, "Parameter not allowed")
MISSING_PARAMETER = (-109, "Missing parameter")
UNDEFINED_HEADER = (-113, "Undefined header")
NUMERIC_DATA_ERROR = (-120, "Numeric data error")
INVALID_CHARACTER_DATA = (-141, "Invalid character data")
EXECUTION_ERROR = (-200, "Execution error")
# SCPI-99's text for -222 is "Data out of range"; Keithley's SCPI instruments word it "Parameter
# data out of range". The page of the 622x's Table B-1 found (B-2: codes -430 to -224) stops
# before -222 and its continuation was not found, so the wording is not from a 6221 page: it is
# what drivers written against Keithley's 2400 and 2182A record receiving for -222 (observed
# sources, not a manual). Clients match on the code, which SCPI-99 fixes.
DATA_OUT_OF_RANGE = (-222, "Parameter data out of range")
QUEUE_OVERFLOW = (-350, "Queue overflow")
INPUT_BUFFER_OVERRUN = (-363, "Input buffer overrun")
NO_ERROR = (0, "No error")


class ScpiError(Exception):
    """A command failed: its code and message go to the error queue and set an ESR bit.

    ``info`` is the device-dependent information an instrument with `ScpiInstrument.error_info`
    appends after a ``;``; ``reply`` is what a failed query still sends (None: nothing).
    """

    def __init__(
        self, code: int, message: str, info: str = "", reply: str | bytes | None = None
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.info = info
        self.reply = reply


#: Headers an instrument remembers having looked up (beyond it, it starts again).
_FOUND_HEADERS = 4096


def esr_bit(code: int) -> int:
    """Return the Standard Event Status Register bit an error code sets."""
    if -199 <= code <= -100:
        return ESR_COMMAND_ERROR
    if -299 <= code <= -200:
        return ESR_EXECUTION_ERROR
    if -499 <= code <= -400:
        return ESR_QUERY_ERROR
    return ESR_DEVICE_ERROR  # -3xx and the instrument's own positive codes


@dataclass(frozen=True)
class _Node:
    """One mnemonic of a header: ``CURRent`` answers to CURR and CURRENT; ``SOURce#`` to SOUR2."""

    long: str
    optional: bool
    numbered: bool = False

    @property
    def short(self) -> str:
        return "".join(c for c in self.long if c.isupper() or c.isdigit() or c in "*_")

    def match(self, token: str) -> int | None:
        """Return the token's numeric suffix (1 when left out; 0 unnumbered), or None."""
        number = 0
        if self.numbered:
            stem = token.rstrip("0123456789")
            number = int(token[len(stem) :]) if len(stem) < len(token) else 1
            token = stem
        if len(token) <= len(self.long) and token.upper() in (self.short, self.long.upper()):
            return number
        return None


class Header:
    """A header pattern such as ``[:SOURce]:CURRent[:LEVel]``: its nodes, some optional."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.nodes = tuple(
            _Node(name, optional=bool(bracket), numbered=bool(number))
            for bracket, name, number in re.findall(r"(\[?):?([A-Za-z0-9*_]+)(#?)\]?", pattern)
        )

    def match(self, tokens: Sequence[str]) -> tuple[int, ...] | None:
        """Return the numeric suffixes if ``tokens`` spell this header, else None.

        Optional nodes may be left out; a numbered node left out or sent bare counts as 1.
        """
        return _match(self.nodes, tuple(tokens))


def _match(nodes: tuple[_Node, ...], tokens: tuple[str, ...]) -> tuple[int, ...] | None:
    if not nodes:
        return None if tokens else ()
    head, rest = nodes[0], nodes[1:]
    if tokens and (number := head.match(tokens[0])) is not None:
        numbers = _match(rest, tokens[1:])
        if numbers is not None:
            return (number, *numbers) if head.numbered else numbers
    if not head.optional:
        return None
    numbers = _match(rest, tokens)
    return None if numbers is None else (1, *numbers) if head.numbered else numbers


#: A command's setter takes the parameter text; its query takes the parameter text and answers
#: (text, or bytes sent as they are: a binary block).
Setter = Callable[[str], None]
Query = Callable[[str], str | bytes]


@dataclass(frozen=True)
class Command:
    """One entry of a command table: a header and what setting and querying it do."""

    header: Header
    setter: Setter | None
    query: Query | None


def without_parameter(answer: Callable[[], str]) -> Query:
    """Wrap a parameterless query: a parameter sent with it is error -108."""

    def query(parameter: str) -> str:
        if parameter:
            raise ScpiError(*PARAMETER_NOT_ALLOWED)
        return answer()

    return query


def numeric(parameter: str, low: float, high: float, default: float) -> float:
    """Parse a SCPI numeric parameter (or MIN/MAX/DEF) and check it lies in [low, high]."""
    if not parameter:
        raise ScpiError(*MISSING_PARAMETER)
    named = {"MIN": low, "MINIMUM": low, "MAX": high, "MAXIMUM": high}
    named |= {"DEF": default, "DEFAULT": default}
    if parameter.upper() in named:
        return named[parameter.upper()]
    try:
        value = float(parameter)
    except ValueError:
        raise ScpiError(*NUMERIC_DATA_ERROR) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ScpiError(*DATA_OUT_OF_RANGE)
    return value


def boolean(parameter: str) -> bool:
    """Parse a SCPI boolean parameter (ON, OFF, 1, 0)."""
    if not parameter:
        raise ScpiError(*MISSING_PARAMETER)
    values = {"ON": True, "OFF": False, "1": True, "0": False}
    if parameter.upper() not in values:
        raise ScpiError(*INVALID_CHARACTER_DATA)
    return values[parameter.upper()]


class ErrorQueue:
    """The SCPI error queue: first in, first out, its last slot reporting an overflow.

    With ``replace_last`` the queue holds ``length`` errors and a push into a full queue replaces
    the newest with -350 (SCPI-99 vol. 2 §21.8.2; scpi-parser's ``SCPI_ErrorAddInternal``);
    without it the last slot is kept for the -350 and a full queue takes ``length - 1`` errors.
    """

    def __init__(self, length: int, replace_last: bool = False) -> None:
        self.length = length
        self.replace_last = replace_last
        self._entries: deque[tuple[int, str]] = deque()

    def push(self, code: int, message: str) -> bool:
        """Queue an error; return False if the queue was full (the overflow entry is last)."""
        room = self.length if self.replace_last else self.length - 1
        if len(self._entries) < room:
            self._entries.append((code, message))
            return True
        if self.replace_last:
            self._entries[-1] = QUEUE_OVERFLOW
        elif len(self._entries) == self.length - 1:
            self._entries.append(QUEUE_OVERFLOW)
        return False

    def pop(self) -> tuple[int, str]:
        """Return and remove the oldest error, or (0, "No error")."""
        return self._entries.popleft() if self._entries else NO_ERROR

    def drain(self) -> list[tuple[int, str]]:
        """Return and remove every error, oldest first."""
        entries, self._entries = list(self._entries), deque()
        return entries

    def clear(self) -> None:
        """Forget every error (*CLS)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def format_error(error: tuple[int, str]) -> str:
    """Format an error queue entry as SCPI sends it: ``-113,"Undefined header"``.

    The message is string data: a quote inside it is doubled (IEEE 488.2 §7.7.5).
    """
    return f'{error[0]},"{error[1].replace(chr(34), chr(34) * 2)}"'


@dataclass
class ScpiStatus:
    """The status registers and error queue of one SCPI context (an instrument or a connection)."""

    errors: ErrorQueue
    esr: int = 0
    ese: int = 0
    sre: int = 0


class ScpiSession(Session):
    """A connection with its own status registers and error queue (`status_per_connection`)."""

    def __init__(self, instrument: ScpiInstrument) -> None:
        super().__init__(instrument)
        self.status = instrument.new_status()

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; run its commands against this connection's status."""
        with self.instrument.lock:  # re-entrant: the base class takes it again per command
            self.instrument.bind(self)
            return super().feed(data)


class ScpiInstrument(SimulatedInstrument):
    """A simulated instrument that parses IEEE 488.2 / SCPI messages against a command table.

    Subclasses call `declare` with their table, implement `identity` and `reset`, and may add
    status-byte bits through `summary_bits`.
    """

    #: Length of the error queue; 0 for an instrument that has none (errors only set ESR bits).
    error_queue_length: int = 0
    #: A push into a full queue replaces its newest entry with -350 (see `ErrorQueue`).
    overflow_replaces_last: bool = False
    #: How the instrument formats a status register in a reply (the 336 pads to three digits).
    register_format: str = "{:d}"
    #: The Standard Event Status Register at power-on (and on each new connection's context).
    esr_at_power_on: int = ESR_POWER_ON
    #: Each connection has its own status registers and error queue (`ScpiSession`).
    status_per_connection: bool = False
    #: An error's queue entry carries its device-dependent information after a ``;``.
    error_info: bool = False
    #: A common command keeps the compound path for the next unit (IEEE 488.2 §7.1.3.2); when
    #: False the unit after one starts from the root.
    common_commands_keep_path: bool = True
    #: A parameter sent to a command that takes none is read after the command ran: the reply
    #: still goes out and -108 is queued after it. When False, -108 refuses the command.
    unread_parameter_after: bool = False

    def __init__(self, lab: SimulatedLab, name: str) -> None:
        super().__init__(lab, name)
        #: The connection whose commands run now (`status_per_connection`; else None).
        self.session: ScpiSession | None = None
        self.status = self.new_status()
        #: The header of the command running now, as sent (with its ``?``), path included.
        self.header = ""
        #: The numeric suffixes of the command running now (1 for each one left out).
        self.numbers: tuple[int, ...] = ()
        self._commands: list[Command] = []
        # (tokens, query) → (command, numbers) of headers already looked up: a session sends the
        # same few headers over and over, and the table search (every pattern's optional nodes
        # tried) was a tenth of a procedure's CPU time on the simulated lab.
        self._found: dict[tuple[tuple[str, ...], bool], tuple[Command, tuple[int, ...]]] = {}
        register = self.register_format.format
        self.declare(
            [
                ("*IDN", None, self._common(self.identity)),
                ("*RST", self._common(self.reset), None),
                ("*CLS", self._common(self.clear_status), None),
                ("*ESE", self._set_register("ese"), self._common(lambda: register(self.ese))),
                ("*ESR", None, self._common(self._read_esr)),
                ("*SRE", self._set_register("sre"), self._common(lambda: register(self.sre))),
                ("*STB", None, self._common(lambda: register(self.status_byte()))),
                ("*OPC", self._common(self._operation_complete),
                 self._common(lambda: "1")),
                ("*WAI", self._common(lambda: None), None),
                ("*TST", None, self._common(lambda: "0")),
            ]
        )  # fmt: skip
        if self.status_per_connection:
            self.bind(self.open_session())  # the context of direct `handle` calls

    def declare(self, table: Sequence[tuple[str, Setter | None, Query | None]]) -> None:
        """Add commands: (header pattern, setter or None, query or None) each.

        A pattern declared again replaces the earlier entry (an instrument's own common command).
        """
        for pattern, setter, query in table:
            self._commands = [c for c in self._commands if c.header.pattern != pattern]
            self._commands.append(Command(Header(pattern), setter, query))
        self._found.clear()

    # --- the status context -----------------------------------------------------------------------
    def new_status(self) -> ScpiStatus:
        """Return a fresh status context: empty queue, power-on ESR, enables 0."""
        queue = ErrorQueue(max(self.error_queue_length, 1), self.overflow_replaces_last)
        return ScpiStatus(queue, esr=self.esr_at_power_on)

    def open_session(self) -> Session:
        """Return a new connection: with its own status context if `status_per_connection`."""
        return ScpiSession(self) if self.status_per_connection else Session(self)

    def bind(self, session: ScpiSession) -> None:
        """Run the next commands in ``session``'s status context (under `lock`)."""
        self.session = session
        self.status = session.status

    @property
    def errors(self) -> ErrorQueue:
        """The error queue of the present context."""
        return self.status.errors

    esr = property(
        lambda self: self.status.esr,
        lambda self, value: setattr(self.status, "esr", value),
        doc="The Standard Event Status Register of the present context.",
    )
    ese = property(
        lambda self: self.status.ese,
        lambda self, value: setattr(self.status, "ese", value),
        doc="The Standard Event Status Enable register of the present context.",
    )
    sre = property(
        lambda self: self.status.sre,
        lambda self, value: setattr(self.status, "sre", value),
        doc="The Service Request Enable register of the present context.",
    )

    # --- what subclasses define -----------------------------------------------------------------
    def identity(self) -> str:
        """Return the ``*IDN?`` reply."""
        raise NotImplementedError

    def reset(self) -> None:
        """Return the settings to their ``*RST`` state."""
        raise NotImplementedError

    def summary_bits(self) -> int:
        """Return the instrument's own status-byte summary bits (none by default)."""
        return 0

    def before_command(self) -> None:
        """Run before each message (the 336 integrates its oven up to now here)."""

    def error_available(self) -> bool:
        """Return True when the status byte's EAV bit is set: the error queue holds an entry."""
        return bool(self.error_queue_length and len(self.errors))

    # --- the session layer ----------------------------------------------------------------------
    def error_reply(self, command: bytes) -> bytes:
        """Run an invalid command before the real one: the error lands where the driver looks."""
        return self.handle(self.invalid_command) + self.handle(command)

    def overrun(self) -> bytes:
        """Report an input buffer overrun: -363 (6220/6221 Reference Manual, Table B-1)."""
        self.push_error(*INPUT_BUFFER_OVERRUN)
        return b""

    def handle(self, command: bytes) -> bytes:
        """Execute one message (``;``-separated units); reply with its answers joined by ``;``."""
        replies: list[bytes] = []
        path: list[str] = []
        with self.lab.lock:
            self.before_command()
            for unit in _units(command.decode("ascii", errors="replace")):
                try:
                    reply = self._execute(unit, path)
                except ScpiError as error:
                    info = f";{error.info}" if self.error_info and error.info else ""
                    self.push_error(error.code, error.message + info)
                    reply = error.reply
                if reply is not None:
                    replies.append(reply.encode("ascii") if isinstance(reply, str) else reply)
        if not replies:
            return b""
        return b";".join(replies) + self.output_terminator

    def _execute(self, unit: str, path: list[str]) -> str | bytes | None:
        """Run one program unit and return its reply; move ``path`` for the next unit.

        The path follows a header that was found, whether its command then succeeds or not; an
        undefined header leaves it alone (scpi-parser's ``SCPI_Parse``).
        """
        header, _, parameter = unit.partition(" ")
        parameter = parameter.strip()
        query = header.endswith("?")
        header = header.removesuffix("?")
        if header.lstrip(":").startswith("*"):
            tokens = [header.lstrip(":")]
            next_path = path if self.common_commands_keep_path else []
        else:
            tokens = header.removeprefix(":").split(":")
            if not header.startswith(":"):
                tokens = path + tokens
            next_path = tokens[:-1]
        key = (tuple(tokens), query)
        found = self._found.get(key)
        if found is None:
            for command in self._commands:
                numbers = command.header.match(tokens)
                if numbers is not None and (command.query if query else command.setter):
                    break
            else:
                raise ScpiError(*UNDEFINED_HEADER, info=unit)
            if len(self._found) >= _FOUND_HEADERS:  # a client sending ever new headers
                self._found.clear()
            self._found[key] = found = (command, numbers)
        command, numbers = found
        action = command.query if query else command.setter
        assert action is not None
        path[:] = next_path
        self.header = ":".join(tokens) + ("?" if query else "")
        self.numbers = numbers
        reply = action(parameter)
        return reply if query else None

    def push_error(self, code: int, message: str) -> None:
        """Record an error: its ESR bit, and its queue entry where there is a queue."""
        self.esr |= esr_bit(code)
        if self.error_queue_length and not self.errors.push(code, message):
            self.esr |= ESR_DEVICE_ERROR  # the queue overflowed (-350 is a -3xx error)

    def status_byte(self) -> int:
        """Return the status byte: EAV, ESB, MSS and the instrument's summary bits."""
        value = self.summary_bits()
        if self.error_available():
            value |= STB_ERROR_AVAILABLE
        if self.esr & self.ese:
            value |= STB_EVENT_SUMMARY
        if value & self.sre & ~STB_MASTER_SUMMARY:
            value |= STB_MASTER_SUMMARY
        return value

    def clear_status(self) -> None:
        """*CLS: clear the event registers and the error queue."""
        self.esr = 0
        self.errors.clear()

    def _read_esr(self) -> str:
        value, self.esr = self.esr, 0
        return self.register_format.format(value)

    def _operation_complete(self) -> None:
        self.esr |= ESR_OPERATION_COMPLETE

    def _common(self, action: Callable[[], str | bytes | None]) -> Callable[[str], Any]:
        """Wrap a command that takes no parameter: one sent with it is -108.

        With `unread_parameter_after` the command runs and answers first, then queues -108.
        """

        def run(parameter: str) -> str | bytes | None:
            if parameter and not self.unread_parameter_after:
                raise ScpiError(*PARAMETER_NOT_ALLOWED)
            result = action()
            if parameter:
                self.push_error(*PARAMETER_NOT_ALLOWED)
            return result

        return run

    def _set_register(self, name: str) -> Setter:
        def setter(parameter: str) -> None:
            value = numeric(parameter, 0, 255, 0)
            if value != int(value):
                raise ScpiError(*DATA_OUT_OF_RANGE)
            setattr(self, name, int(value))

        return setter


_UNIT = re.compile(r"""(?:[^;"']+|"[^"]*"|'[^']*')+""")
_PIECE = re.compile(r"""[^,"']+|"[^"]*"?|'[^']*'?|,""")


def split_arguments(text: str) -> list[str]:
    """Split a parameter list at the commas outside quoted strings (none for empty text)."""
    if not text.strip():
        return []
    arguments, current = [], ""
    for piece in _PIECE.findall(text):
        if piece == ",":
            arguments.append(current.strip())
            current = ""
        else:
            current += piece
    return [*arguments, current.strip()]


def _units(message: str) -> list[str]:
    """Split a message at the ``;`` outside quoted strings; drop empty units."""
    return [unit.strip() for unit in _UNIT.findall(message) if unit.strip()]
