"""Simulated Toptica DLC pro: the DeCoP command line (TCP 1998) in front of the lab's laser.

It answers like the controller (see `instruments.toptica_dlcpro` for the protocol and sources):
a welcome text ending in the prompt, one reply per request line, each reply's lines followed by
the prompt ``"> "``. The parameters of ``laser1`` drive `SimulatedLab.laser`, whose physics maps
current, temperature and piezo voltage to optical frequency and power (mode hops included).

Errors. Every DeCoP error is a line ``Error: <code> <message>``. Which numbers the DLC pro uses
is not in any source we could read (toptica-lasersdk only checks that the line starts with
"Error"); the codes and messages here are those of the DeCoF reference server by Florian
Behrens (github.com/florianbehrens/DeCoF2, ``include/decof/exceptions.h``):
2 parse error, 3 access denied, 4 invalid parameter, 5 wrong type, 7 unknown operation. A value
outside a parameter's range is refused with the ``param-set!`` status ``-6`` (the SDK treats any
negative status as a refusal); the controller keeps the old value.

The ``echo`` parameter (``dlcpro/v2_4_0.py``) is off, as on the real TCP command line; switched
on, each request line is sent back before its reply, as the serial port does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from hotspin.simulators.instrument_base import SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab

PROMPT = b"> "
#: The diode's TEC settles with roughly this time constant (a simple first-order stand-in).
TEC_TIME_CONSTANT_S = 5.0
#: Span of the DL pro piezo driver, V.
PIEZO_RANGE_V = (-1.0, 140.0)
#: Span the head's TEC accepts (``temp-set-min``/``temp-set-max``), °C.
TEC_RANGE_C = (15.0, 35.0)

PARSE_ERROR = (2, "Parse error")
ACCESS_DENIED = (3, "Access denied")
INVALID_PARAMETER = (4, "Invalid parameter")
WRONG_TYPE = (5, "Wrong type")
UNKNOWN_OPERATION = (7, "Unknown operation")
STATUS_INVALID_VALUE = -6

Value = bool | int | float | str

_REQUEST = re.compile(r"^\(\s*(?P<op>[^\s()']+)\s+'?(?P<name>[^\s()']+)\s*(?P<value>.*?)\s*\)$")


class DecopError(Exception):
    """A request the command line answers with an ``Error:`` line."""

    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(f"Error: {error[0]} {error[1]}")


@dataclass(frozen=True)
class _Parameter:
    """One node of the parameter tree: its type, how to read it and, if writable, to write it."""

    kind: type
    read: Callable[[], Value]
    write: Callable[[Value], None] | None = None
    span: Callable[[], tuple[float, float]] | None = None


def _decode(text: str) -> Value:
    """Decode a DeCoP value: #t/#f, a quoted string or a number."""
    if text in ("#t", "#T", "#f", "#F"):
        return text in ("#t", "#T")
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise DecopError(PARSE_ERROR) from None


def _encode(value: Value) -> str:
    """Encode a value as the controller prints it."""
    if isinstance(value, bool):
        return "#t" if value else "#f"
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, int):
        return str(value)
    return f'"{value}"'


class SimulatedDLCpro(SimulatedInstrument):
    """A DLC pro with one DL pro head (``laser1``) driving `SimulatedLab.laser`."""

    input_terminator = b"\n"
    output_terminator = b"\n"
    default_port = 1998

    def __init__(
        self,
        lab: SimulatedLab,
        name: str = "dlcpro",
        serial_number: str = "SIM-000001",
        firmware_version: str = "2.4.0",
    ) -> None:
        super().__init__(lab, name)
        self.serial_number = serial_number
        self.firmware_version = firmware_version
        #: The front-panel key switch; locked, it stops emission (set it in a test).
        self.frontkey_locked = False
        self.echo = False
        self.emission_button_enabled = True
        laser = lab.laser
        with lab.lock:
            self._current_set_mA = laser.current_A * 1e3
            self._current_clip_mA = laser.config.max_current_A * 1e3
            self._temp_set_C = laser.temperature_C
            self._piezo_set_V = laser.piezo_V
            self._piezo_enabled = True
            self._cc_enabled = laser.emission_enabled
        self._tec_time_s = lab.clock.now()
        self._parameters = self._build_tree()

    def greeting(self) -> bytes:
        """Return the welcome text, which ends in the first prompt."""
        return (
            f"DLC pro (simulated by hotspin), firmware {self.firmware_version}\n"
            f"SN: {self.serial_number}\n\nDeCoF Command Line\n"
        ).encode() + PROMPT

    def handle(self, command: bytes) -> bytes:
        """Evaluate one request line; return the reply lines and the prompt."""
        line = command.decode("utf-8", "replace").strip()
        echo = f"{line}\n" if self.echo else ""
        if not line:
            return echo.encode() + PROMPT
        try:
            reply = self._evaluate(line)
        except DecopError as error:
            reply = str(error)
        return f"{echo}{reply}\n".encode() + PROMPT

    # --- the command language -------------------------------------------------------------------
    def _evaluate(self, line: str) -> str:
        if line.count("(") != line.count(")") or line.count('"') % 2:
            raise DecopError(PARSE_ERROR)
        match = _REQUEST.match(line)
        if match is None:
            raise DecopError(PARSE_ERROR)
        op, name, value_text = match["op"].lower(), match["name"], match["value"]
        if op not in ("param-ref", "param-set!", "exec"):
            raise DecopError(UNKNOWN_OPERATION)
        parameter = self._parameters.get(name)
        if parameter is None or op == "exec":
            raise DecopError(INVALID_PARAMETER)  # this controller has no commands to exec
        with self.lab.lock:
            self._follow_tec()
            if op == "param-ref":
                if value_text:
                    raise DecopError(PARSE_ERROR)
                return _encode(parameter.read())
            if not value_text:
                raise DecopError(PARSE_ERROR)
            return str(self._set(parameter, _decode(value_text)))

    def _set(self, parameter: _Parameter, value: Value) -> int:
        """Write a value; return the status (0, or negative when the value is out of range)."""
        if parameter.write is None:
            raise DecopError(ACCESS_DENIED)
        if (
            parameter.kind is float
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            value = float(value)
        elif not isinstance(value, parameter.kind):
            raise DecopError(WRONG_TYPE)
        if parameter.span is not None:
            low, high = parameter.span()
            if not low <= value <= high:
                return STATUS_INVALID_VALUE
        parameter.write(value)
        return 0

    # --- the laser ------------------------------------------------------------------------------
    def _build_tree(self) -> dict[str, _Parameter]:
        laser = self.lab.laser
        clip_limit_mA = laser.config.max_current_A * 1e3
        return {
            "laser1:dl:cc:current-set": _Parameter(
                float,
                lambda: self._current_set_mA,
                self._write_current,
                lambda: (0.0, self._current_clip_mA),
            ),
            "laser1:dl:cc:current-act": _Parameter(float, self._current_act_mA),
            "laser1:dl:cc:current-clip": _Parameter(
                float, lambda: self._current_clip_mA, self._write_clip, lambda: (0.0, clip_limit_mA)
            ),
            "laser1:dl:cc:current-clip-limit": _Parameter(float, lambda: clip_limit_mA),
            "laser1:dl:cc:enabled": _Parameter(bool, lambda: self._cc_enabled, self._write_enabled),
            "laser1:dl:cc:emission": _Parameter(bool, self._emitting),
            "laser1:dl:tc:temp-set": _Parameter(
                float, lambda: self._temp_set_C, self._write_temp_set, lambda: TEC_RANGE_C
            ),
            "laser1:dl:tc:temp-act": _Parameter(float, lambda: laser.temperature_C),
            "laser1:dl:tc:temp-set-min": _Parameter(float, lambda: TEC_RANGE_C[0]),
            "laser1:dl:tc:temp-set-max": _Parameter(float, lambda: TEC_RANGE_C[1]),
            "laser1:dl:tc:ready": _Parameter(
                bool, lambda: abs(laser.temperature_C - self._temp_set_C) < 0.01
            ),
            "laser1:dl:pc:voltage-set": _Parameter(
                float, lambda: self._piezo_set_V, self._write_piezo, lambda: PIEZO_RANGE_V
            ),
            "laser1:dl:pc:voltage-act": _Parameter(float, lambda: laser.piezo_V),
            "laser1:dl:pc:voltage-min": _Parameter(float, lambda: PIEZO_RANGE_V[0]),
            "laser1:dl:pc:voltage-max": _Parameter(float, lambda: PIEZO_RANGE_V[1]),
            "laser1:dl:pc:enabled": _Parameter(
                bool, lambda: self._piezo_enabled, self._write_piezo_enabled
            ),
            "emission": _Parameter(bool, self._emitting),
            "interlock-open": _Parameter(bool, lambda: not laser.interlock_closed),
            "frontkey-locked": _Parameter(bool, lambda: self.frontkey_locked),
            "emission-button-enabled": _Parameter(
                bool,
                lambda: self.emission_button_enabled,
                lambda on: setattr(self, "emission_button_enabled", on),
            ),
            "echo": _Parameter(bool, lambda: self.echo, lambda on: setattr(self, "echo", on)),
            "system-type": _Parameter(str, lambda: "DLCpro"),
            "serial-number": _Parameter(str, lambda: self.serial_number),
            "fw-ver": _Parameter(str, lambda: self.firmware_version),
        }

    def _emitting(self) -> bool:
        """Return whether current flows: driver on, interlock closed, key unlocked."""
        laser = self.lab.laser
        return laser.emission_enabled and laser.interlock_closed

    def _current_act_mA(self) -> float:
        return self.lab.laser.current_A * 1e3 if self._emitting() else 0.0

    def _write_current(self, current_mA: float) -> None:
        self._current_set_mA = current_mA
        self.lab.laser.current_A = current_mA * 1e-3

    def _write_clip(self, clip_mA: float) -> None:
        # Lowering the clip below the setpoint pulls the setpoint down with it.
        self._current_clip_mA = clip_mA
        if self._current_set_mA > clip_mA:
            self._write_current(clip_mA)

    def _write_enabled(self, on: bool) -> None:
        self._cc_enabled = on
        self._apply_emission()

    def _apply_emission(self) -> None:
        self.lab.laser.emission_enabled = self._cc_enabled and not self.frontkey_locked

    def _write_temp_set(self, temperature_C: float) -> None:
        self._temp_set_C = temperature_C

    def _write_piezo(self, voltage_V: float) -> None:
        self._piezo_set_V = voltage_V
        self._apply_piezo()

    def _write_piezo_enabled(self, on: bool) -> None:
        self._piezo_enabled = on
        self._apply_piezo()

    def _apply_piezo(self) -> None:
        self.lab.laser.piezo_V = self._piezo_set_V if self._piezo_enabled else 0.0

    def _follow_tec(self) -> None:
        """Bring the diode temperature up to the clock: first-order approach to the setpoint."""
        now = self.lab.clock.now()
        elapsed, self._tec_time_s = now - self._tec_time_s, now
        laser = self.lab.laser
        relax = 1.0 - math.exp(-max(elapsed, 0.0) / TEC_TIME_CONSTANT_S)
        laser.temperature_C += (self._temp_set_C - laser.temperature_C) * relax
        self._apply_emission()  # the key switch may have been turned since the last request
