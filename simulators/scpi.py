"""The SCPI session layer the simulated SCPI instruments declare their command tables on.

One parser for every simulated instrument that speaks IEEE 488.2 / SCPI (the Keithley 6221) or
the IEEE 488.2 subset with flat headers (the Lake Shore 336):

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
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hotspin.simulators.instrument_base import SimulatedInstrument
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
# data out of range". The page of the 622x's Table B-1 that holds -222 was not read: the wording
# rests on Keithley's other reference manuals (an assumption for the 6221).
DATA_OUT_OF_RANGE = (-222, "Parameter data out of range")
QUEUE_OVERFLOW = (-350, "Queue overflow")
INPUT_BUFFER_OVERRUN = (-363, "Input buffer overrun")
NO_ERROR = (0, "No error")


class ScpiError(Exception):
    """A command failed: its code and message go to the error queue and set an ESR bit."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


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
    """One mnemonic of a header: ``CURRent`` answers to CURR and CURRENT."""

    long: str
    optional: bool

    @property
    def short(self) -> str:
        return "".join(c for c in self.long if c.isupper() or c.isdigit() or c == "*")

    def matches(self, token: str) -> bool:
        return len(token) <= len(self.long) and token.upper() in (self.short, self.long.upper())


class Header:
    """A header pattern such as ``[:SOURce]:CURRent[:LEVel]``: its nodes, some optional."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.nodes = tuple(
            _Node(name, optional=bool(bracket))
            for bracket, name in re.findall(r"(\[?):?([A-Za-z0-9*]+)\]?", pattern)
        )

    def matches(self, tokens: Sequence[str]) -> bool:
        """Return True if ``tokens`` spell this header (optional nodes may be left out)."""
        return _matches(self.nodes, tuple(tokens))


def _matches(nodes: tuple[_Node, ...], tokens: tuple[str, ...]) -> bool:
    if not nodes:
        return not tokens
    head, rest = nodes[0], nodes[1:]
    if tokens and head.matches(tokens[0]) and _matches(rest, tokens[1:]):
        return True
    return head.optional and _matches(rest, tokens)


#: A command's setter takes the parameter text; its query takes the parameter text and answers.
Setter = Callable[[str], None]
Query = Callable[[str], str]


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
    """The SCPI error queue: first in, first out, its last slot reporting an overflow."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._entries: deque[tuple[int, str]] = deque()

    def push(self, code: int, message: str) -> bool:
        """Queue an error; return False if the queue was full (the overflow entry is last)."""
        if len(self._entries) < self.length - 1:
            self._entries.append((code, message))
            return True
        if len(self._entries) == self.length - 1:
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
    """Format an error queue entry as SCPI sends it: ``-113,"Undefined header"``."""
    return f'{error[0]},"{error[1]}"'


class ScpiInstrument(SimulatedInstrument):
    """A simulated instrument that parses IEEE 488.2 / SCPI messages against a command table.

    Subclasses call `declare` with their table, implement `identity` and `reset`, and may add
    status-byte bits through `summary_bits`.
    """

    #: Length of the error queue; 0 for an instrument that has none (errors only set ESR bits).
    error_queue_length: int = 0
    #: How the instrument formats a status register in a reply (the 336 pads to three digits).
    register_format: str = "{:d}"

    def __init__(self, lab: SimulatedLab, name: str) -> None:
        super().__init__(lab, name)
        self.errors = ErrorQueue(max(self.error_queue_length, 1))
        self.esr = ESR_POWER_ON
        self.ese = 0
        self.sre = 0
        self._commands: list[Command] = []
        register = self.register_format.format
        self.declare(
            [
                ("*IDN", None, without_parameter(self.identity)),
                ("*RST", self._common(self.reset), None),
                ("*CLS", self._common(self.clear_status), None),
                ("*ESE", self._set_register("ese"), without_parameter(lambda: register(self.ese))),
                ("*ESR", None, without_parameter(self._read_esr)),
                ("*SRE", self._set_register("sre"), without_parameter(lambda: register(self.sre))),
                ("*STB", None, without_parameter(lambda: register(self.status_byte()))),
                ("*OPC", self._common(self._operation_complete), without_parameter(lambda: "1")),
                ("*WAI", self._common(lambda: None), None),
                ("*TST", None, without_parameter(lambda: "0")),
            ]
        )

    def declare(self, table: Sequence[tuple[str, Setter | None, Query | None]]) -> None:
        """Add commands: (header pattern, setter or None, query or None) each."""
        self._commands.extend(Command(Header(p), setter, query) for p, setter, query in table)

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
        replies = []
        path: list[str] = []
        with self.lab.lock:
            self.before_command()
            for unit in _units(command.decode("ascii", errors="replace")):
                try:
                    reply, path = self._execute(unit, path)
                except ScpiError as error:
                    self.push_error(error.code, error.message)
                    continue
                if reply is not None:
                    replies.append(reply)
        if not replies:
            return b""
        return ";".join(replies).encode("ascii") + self.output_terminator

    def _execute(self, unit: str, path: list[str]) -> tuple[str | None, list[str]]:
        """Run one program unit; return its reply and the path the next unit continues."""
        header, _, parameter = unit.partition(" ")
        parameter = parameter.strip()
        query = header.endswith("?")
        header = header.removesuffix("?")
        if header.lstrip(":").startswith("*"):
            tokens, next_path = [header.lstrip(":")], path  # common commands keep the path
        else:
            tokens = header.removeprefix(":").split(":")
            if not header.startswith(":"):
                tokens = path + tokens
            next_path = tokens[:-1]
        command = next((c for c in self._commands if c.header.matches(tokens)), None)
        action = None if command is None else command.query if query else command.setter
        if action is None:
            raise ScpiError(*UNDEFINED_HEADER)
        if query:
            return action(parameter), next_path
        action(parameter)
        return None, next_path

    def push_error(self, code: int, message: str) -> None:
        """Record an error: its ESR bit, and its queue entry where there is a queue."""
        self.esr |= esr_bit(code)
        if self.error_queue_length and not self.errors.push(code, message):
            self.esr |= ESR_DEVICE_ERROR  # the queue overflowed (-350 is a -3xx error)

    def status_byte(self) -> int:
        """Return the status byte: EAV, ESB, MSS and the instrument's summary bits."""
        value = self.summary_bits()
        if self.error_queue_length and len(self.errors):
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

    @staticmethod
    def _common(action: Callable[[], None]) -> Setter:
        def setter(parameter: str) -> None:
            if parameter:
                raise ScpiError(*PARAMETER_NOT_ALLOWED)
            action()

        return setter

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
