"""A simulated Keithley 6221 current source driving one axis of the shield's coils.

It parses SCPI as the 6221 does: short or long mnemonics in any case, optional nodes, ``;``
chains in which a header without a leading colon continues the previous command's path, and
the IEEE-488.2 common commands. Errors go to a first-in first-out queue read by ``SYST:ERR?``
(``0,"No error"`` when empty) with the 6220/6221 Reference Manual's codes (Appendix B): unknown
headers -113, malformed parameters -1xx (command error, ESR bit 5), values out of range -222
(execution error, ESR bit 4).

The DC-source subset is simulated: level, range (a setting; auto-range follows the level),
compliance, output, error queue, status. With the output on, the coil current is the source level
unless ``|I|·R`` exceeds the compliance voltage, in which case it is limited to ``V_comp / R`` and
bit B3 (Compliance) of the measurement condition register is set (Reference Manual §11, read with
``STAT:MEAS:COND?``). With the output off the coil carries no current.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hotspin.analysis.checks import ParameterError, check_positive
from hotspin.simulators.instrument_base import SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab

MAX_CURRENT_A = 0.105
COMPLIANCE_SPAN_V = (0.1, 105.0)
# The 6221's DC source ranges in A; a range setting selects the smallest that holds it.
SOURCE_RANGES_A = (2e-9, 20e-9, 200e-9, 2e-6, 20e-6, 200e-6, 2e-3, 20e-3, 100e-3)
ERROR_QUEUE_LENGTH = 10  # as Keithley's SCPI instruments; the last slot reports the overflow

ESR_OPERATION_COMPLETE = 1
ESR_EXECUTION_ERROR = 16
ESR_COMMAND_ERROR = 32
ESR_DEVICE_ERROR = 8
MEAS_COMPLIANCE = 8  # measurement condition register bit B3


class _ScpiError(Exception):
    """A SCPI error: its code and message go to the error queue."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


# (code, message) of the errors this simulator reports (Reference Manual, Table B-1).
UNDEFINED_HEADER = (-113, "Undefined header")
MISSING_PARAMETER = (-109, "Missing parameter")
PARAMETER_NOT_ALLOWED = (-108, "Parameter not allowed")
NUMERIC_DATA_ERROR = (-120, "Numeric data error")
INVALID_CHARACTER_DATA = (-141, "Invalid character data")
OUT_OF_RANGE = (-222, "Parameter data out of range")


@dataclass(frozen=True)
class _Node:
    """One mnemonic of a header: ``CURRent`` answers to CURR and CURRENT."""

    long: str
    optional: bool

    @property
    def short(self) -> str:
        return "".join(c for c in self.long if c.isupper() or c.isdigit() or c == "*")

    def matches(self, token: str) -> bool:
        return token.upper() in (self.short, self.long.upper())


def _nodes(pattern: str) -> tuple[_Node, ...]:
    """Parse ``[:SOURce]:CURRent[:LEVel]`` into its nodes."""
    return tuple(
        _Node(name, optional=bool(bracket))
        for bracket, name in re.findall(r"(\[?):?([A-Za-z*]+)\]?", pattern)
    )


def _matches(nodes: tuple[_Node, ...], tokens: list[str]) -> bool:
    """Return True if ``tokens`` spell ``nodes`` (optional nodes may be left out)."""
    if not nodes:
        return not tokens
    head, rest = nodes[0], nodes[1:]
    if tokens and head.matches(tokens[0]) and _matches(rest, tokens[1:]):
        return True
    return head.optional and _matches(rest, tokens)


@dataclass(frozen=True)
class _Command:
    nodes: tuple[_Node, ...]
    setter: Callable[[str], None] | None
    getter: Callable[[], str] | None


class SimulatedKeithley6221(SimulatedInstrument):
    """Keithley 6221 on coil axis ``axis`` (0, 1, 2 = x, y, z) of ``lab``, LF framing."""

    input_terminator = b"\n"
    output_terminator = b"\n"
    default_port = 1394

    def __init__(
        self, lab: SimulatedLab, name: str, axis: int, coil_resistance_ohm: float = 10.0
    ) -> None:
        super().__init__(lab, name)
        if axis not in (0, 1, 2):
            raise ParameterError(f"axis = {axis!r} is not one of [0, 1, 2]")
        self.axis = axis
        self.coil_resistance_ohm = check_positive("coil_resistance_ohm", coil_resistance_ohm, "Ω")
        self._errors: deque[tuple[int, str]] = deque()
        self._esr = 0
        self._measurement_events = 0
        level = "[:SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]"
        table: list[tuple[str, Callable[[str], None] | None, Callable[[], str] | None]] = [
            ("*IDN", None, lambda: f"KEITHLEY INSTRUMENTS INC.,MODEL 6221,SIM000{axis},D04 /A02"),
            ("*OPC", self._set_operation_complete, lambda: "1"),
            ("*CLS", self._clear_status, None),
            ("*RST", self._reset, None),
            ("*ESR", None, self._read_esr),
            (level, self._set_level, lambda: _sci(self.level_A)),
            ("[:SOURce]:CURRent:COMPliance", self._set_compliance, lambda: _sci(self.compliance_V)),
            ("[:SOURce]:CURRent:RANGe", self._set_range, lambda: _sci(self.range_A)),
            (
                "[:SOURce]:CURRent:RANGe:AUTO",
                self._set_auto_range,
                lambda: str(int(self.auto_range)),
            ),
            (":OUTPut[:STATe]", self._set_output, lambda: str(int(self.output_on))),
            (":SYSTem:ERRor[:NEXT]", None, self._next_error),
            (":STATus:MEASurement:CONDition", None, self._measurement_condition),
            (":STATus:MEASurement[:EVENt]", None, self._read_measurement_events),
        ]
        self._commands = [_Command(_nodes(p), setter, getter) for p, setter, getter in table]
        with lab.lock:
            self._reset_settings()

    # --- framing and parsing --------------------------------------------------------------------
    def error_reply(self, command: bytes) -> bytes:
        """Run an invalid command before the real one: the error lands where the driver looks."""
        return self.handle(self.invalid_command) + self.handle(command)

    def handle(self, command: bytes) -> bytes:
        """Execute one message; reply with its queries' answers joined by ``;``."""
        replies = []
        path: list[str] = []
        for unit in command.decode("ascii", errors="replace").split(";"):
            unit = unit.strip()
            if not unit:
                continue
            try:
                reply, path = self._execute(unit, path)
            except _ScpiError as error:
                self._push_error(error.code, error.message)
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
        if header.startswith("*"):
            tokens, next_path = [header], path  # common commands leave the path alone
        else:
            tokens = header.removeprefix(":").split(":")
            if not header.startswith(":"):
                tokens = path + tokens
            next_path = tokens[:-1]
        command = next((c for c in self._commands if _matches(c.nodes, tokens)), None)
        if command is None or (command.getter if query else command.setter) is None:
            raise _ScpiError(*UNDEFINED_HEADER)
        if query:
            if parameter:
                raise _ScpiError(*PARAMETER_NOT_ALLOWED)
            return command.getter(), next_path
        with self.lab.lock:
            command.setter(parameter)
            self._drive_coil()
        return None, next_path

    @staticmethod
    def _no_parameter(parameter: str) -> None:
        if parameter:
            raise _ScpiError(*PARAMETER_NOT_ALLOWED)

    def _set_operation_complete(self, parameter: str) -> None:
        self._no_parameter(parameter)
        self._esr |= ESR_OPERATION_COMPLETE

    @staticmethod
    def _numeric(parameter: str, low: float, high: float, default: float) -> float:
        """Parse a numeric parameter (or MIN/MAX/DEF) and check it lies in [low, high]."""
        if not parameter:
            raise _ScpiError(*MISSING_PARAMETER)
        keyword = parameter.upper()
        named = {"MIN": low, "MINIMUM": low, "MAX": high, "MAXIMUM": high}
        named |= {"DEF": default, "DEFAULT": default}
        if keyword in named:
            return named[keyword]
        try:
            value = float(parameter)
        except ValueError:
            raise _ScpiError(*NUMERIC_DATA_ERROR) from None
        if not math.isfinite(value) or not low <= value <= high:
            raise _ScpiError(*OUT_OF_RANGE)
        return value

    @staticmethod
    def _boolean(parameter: str) -> bool:
        if not parameter:
            raise _ScpiError(*MISSING_PARAMETER)
        values = {"ON": True, "OFF": False, "1": True, "0": False}
        if parameter.upper() not in values:
            raise _ScpiError(*INVALID_CHARACTER_DATA)
        return values[parameter.upper()]

    # --- settings -------------------------------------------------------------------------------
    def _set_level(self, parameter: str) -> None:
        self.level_A = self._numeric(parameter, -MAX_CURRENT_A, MAX_CURRENT_A, 0.0)
        if self.auto_range:
            self.range_A = _range_for(self.level_A)

    def _set_compliance(self, parameter: str) -> None:
        self.compliance_V = self._numeric(parameter, *COMPLIANCE_SPAN_V, 10.0)

    def _set_range(self, parameter: str) -> None:
        self.range_A = _range_for(self._numeric(parameter, -MAX_CURRENT_A, MAX_CURRENT_A, 2e-3))
        self.auto_range = False

    def _set_auto_range(self, parameter: str) -> None:
        self.auto_range = self._boolean(parameter)
        if self.auto_range:
            self.range_A = _range_for(self.level_A)

    def _set_output(self, parameter: str) -> None:
        self.output_on = self._boolean(parameter)

    def _reset(self, parameter: str) -> None:
        self._no_parameter(parameter)
        self._reset_settings()

    def _reset_settings(self) -> None:
        """Set the *RST state: output off, 0 A, 10 V compliance, fixed 2 mA range."""
        self.level_A = 0.0
        self.compliance_V = 10.0
        self.range_A = 2e-3
        self.auto_range = False
        self.output_on = False
        self._drive_coil()

    # --- the coil -------------------------------------------------------------------------------
    @property
    def in_compliance(self) -> bool:
        """Return True if the load needs more than the compliance voltage for the level."""
        return self.output_on and abs(self.level_A) * self.coil_resistance_ohm > self.compliance_V

    def _drive_coil(self) -> None:
        """Put the delivered current into the lab's coil (called under lab.lock)."""
        current = 0.0
        if self.output_on:
            limit = self.compliance_V / self.coil_resistance_ohm
            current = max(-limit, min(limit, self.level_A))
        if self.in_compliance:
            self._measurement_events |= MEAS_COMPLIANCE
        self.lab.coils.currents_A[self.axis] = current

    # --- status and errors ----------------------------------------------------------------------
    def _push_error(self, code: int, message: str) -> None:
        self._esr |= ESR_COMMAND_ERROR if -199 <= code <= -100 else ESR_EXECUTION_ERROR
        if len(self._errors) < ERROR_QUEUE_LENGTH - 1:
            self._errors.append((code, message))
        elif len(self._errors) == ERROR_QUEUE_LENGTH - 1:
            self._errors.append((-350, "Queue overflow"))
            self._esr |= ESR_DEVICE_ERROR

    def _next_error(self) -> str:
        code, message = self._errors.popleft() if self._errors else (0, "No error")
        return f'{code},"{message}"'

    def _read_esr(self) -> str:
        value, self._esr = self._esr, 0
        return str(value)

    def _clear_status(self, parameter: str) -> None:
        self._no_parameter(parameter)
        self._errors.clear()
        self._esr = 0
        self._measurement_events = 0

    def _measurement_condition(self) -> str:
        return str(MEAS_COMPLIANCE if self.in_compliance else 0)

    def _read_measurement_events(self) -> str:
        value, self._measurement_events = self._measurement_events, 0
        return str(value)


def _range_for(current_A: float) -> float:
    """Return the smallest source range that holds ``current_A``."""
    return next((r for r in SOURCE_RANGES_A if abs(current_A) <= r), SOURCE_RANGES_A[-1])


def _sci(value: float) -> str:
    """Format a number as the 6221 does (``1.000000E-02``)."""
    return f"{value:.6E}"
