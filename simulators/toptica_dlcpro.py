"""Simulated Toptica DLC pro: the DeCoP command line (TCP 1998) in front of the lab's laser.

It answers like the controller (see `instruments.toptica_dlcpro` for the protocol and sources):
a welcome text ending in the prompt, one reply per request line, each reply's lines followed by
the prompt ``"> "``. The parameters of ``laser1`` drive `SimulatedLab.laser`, whose physics maps
current, temperature and piezo voltage to optical frequency and power (mode hops included). The
monitoring line (command line + 1, TCP 1999 on the device) is `simulators.decop_monitoring`,
which reads the same parameters through `monitor_value`.

Framing. The welcome lines end in CR LF and the reply lines in LF: QMI's DLC pro driver
(QuTech-Delft/QMI ``qmi/instruments/toptica/dlc.py``) waits for ``"DeCoF Command Line\r\n> "``
after connecting and then takes a value as the reply up to its ``"\n"``; toptica-lasersdk accepts
either line end before the prompt.

Requests. ``(param-ref 'name)``, ``(param-set! 'name value)`` (answered with the status),
``(param-gsv 'name)`` (the set value, toptica-lasersdk ``Client.get_set_value``; here the value
a writable parameter was last set to, and the value itself for a read-only one),
``(param-disp 'name)`` (``name = value`` lines for the parameter or every parameter under a node,
the format of the DeCoF reference server's ``browse_visitor``, github.com/florianbehrens/DeCoF2;
the firmware's own layout is not public) and ``(exec 'command args...)``: ``change-ul <level>
"<password>"`` answers the user level in force (toptica-lasersdk ``Client.change_ul``: the
previous level when the password is wrong; levels 3 normal and 4 read-only need none, and no
password for 0-2 is known, so those keep the old level), ``system-summary`` answers text lines
and then ``()`` (an exec's last line is its return value; ``()`` for none, as InstrumentKit's
TopMode tests record). The user level is the controller's, not each connection's (a
simplification: the device keeps one per connection).

Errors. Every DeCoP error is a line ``Error: <code> <message>``. The codes are negative on the
device: a DLC pro answered ``Error: -7 lockpoint not found`` (toptica/python-lasersdk issue 3)
and InstrumentKit's Toptica utilities test for ``Error: -3``. Toptica publishes no table; the
magnitudes here follow the DeCoF reference server's ``error_codes`` (``include/decof/
exceptions.h``): -2 parse error, -3 access denied, -4 invalid parameter, -5 wrong type,
-6 invalid value, -7 unknown operation. No client depends on them: toptica-lasersdk checks only
that the line starts with "Error". A value outside a parameter's range is refused with the
``param-set!`` status -6 (the SDK treats any negative status as a refusal); the controller keeps
the old value.

The ``echo`` parameter (``dlcpro/v2_4_0.py``) is off, as on the real TCP command line; switched
on, each request line is sent back before its reply, as the serial port does.
"""

from __future__ import annotations

import math
import re
import shlex
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

PARSE_ERROR = (-2, "parse error")
ACCESS_DENIED = (-3, "access denied")
INVALID_PARAMETER = (-4, "invalid parameter")
WRONG_TYPE = (-5, "wrong type")
UNKNOWN_OPERATION = (-7, "unknown operation")
STATUS_INVALID_VALUE = -6
#: User levels (toptica-lasersdk ``decop.UserLevel``): 3 normal (after connecting), 4 read-only.
USER_LEVEL_NORMAL = 3
USER_LEVEL_READONLY = 4
#: The DL pro head's product name; the SDK's tree has ``laser1:product-name`` and ``:type``.
PRODUCT_NAME = "DL pro 795"

Value = bool | int | float | str

_REQUEST = re.compile(r"^\(\s*(?P<op>[^\s()']+)\s+'?(?P<name>[^\s()']+)\s*(?P<value>.*?)\s*\)$")


class DecopError(Exception):
    """A request the command line answers with an ``Error:`` line."""

    def __init__(self, error: tuple[int, str]) -> None:
        super().__init__(f"Error: {error[0]} {error[1]}")
        self.code, self.message = error


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
        self.user_level = USER_LEVEL_NORMAL
        self.system_label = "hotspin probe laser"
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
        """Return the welcome text (CR LF lines), which ends in the first prompt."""
        return (
            f"DLC pro (simulated by hotspin), firmware {self.firmware_version}\r\n"
            f"SN: {self.serial_number}\r\n\r\nDeCoF Command Line\r\n"
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
        if op == "exec":
            return self._exec(name, value_text)
        if op not in ("param-ref", "param-set!", "param-gsv", "param-disp"):
            raise DecopError(UNKNOWN_OPERATION)
        if (op == "param-set!") != bool(value_text):  # a value for param-set!, none otherwise
            raise DecopError(PARSE_ERROR)
        with self.lab.lock:
            self._follow_tec()
            if op == "param-disp":
                return self._display(name)
            parameter = self._parameter(name)
            if op == "param-set!":
                return str(self._set(parameter, _decode(value_text)))
            return _encode(parameter.read())  # the set value of a writable one is what it reads

    def monitor_value(self, name: str) -> str:
        """Return a parameter's value as the monitoring line sends it (DecopError if unknown)."""
        with self.lock, self.lab.lock:
            self._follow_tec()
            return _encode(self._parameter(name).read())

    def _parameter(self, name: str) -> _Parameter:
        parameter = self._parameters.get(name)
        if parameter is None:
            raise DecopError(INVALID_PARAMETER)
        return parameter

    def _display(self, name: str) -> str:
        """``param-disp``: ``name = value`` for the parameter, or each parameter under a node."""
        names = [n for n in self._parameters if n == name or n.startswith(f"{name}:")]
        if not names:
            raise DecopError(INVALID_PARAMETER)
        return "\n".join(f"{n} = {_encode(self._parameters[n].read())}" for n in names)

    def _exec(self, name: str, arguments: str) -> str:
        """Run a command: ``change-ul`` and ``system-summary`` (see the module doc)."""
        try:
            args = shlex.split(arguments)
        except ValueError:
            raise DecopError(PARSE_ERROR) from None
        if name == "change-ul":
            if len(args) not in (1, 2) or not args[0].lstrip("-").isdigit():
                raise DecopError(PARSE_ERROR)
            level = int(args[0])
            if level in (USER_LEVEL_NORMAL, USER_LEVEL_READONLY):
                self.user_level = level
            return str(self.user_level)  # a level that needs a password stays unchanged
        if name == "system-summary":
            if args:
                raise DecopError(PARSE_ERROR)
            return f"{self._summary()}\n()"
        if name in self._parameters:
            raise DecopError(UNKNOWN_OPERATION)  # a parameter is read or set, not executed
        raise DecopError(INVALID_PARAMETER)

    def _summary(self) -> str:
        with self.lab.lock:
            self._follow_tec()
            laser = self.lab.laser
            return "\n".join(
                [
                    f"System type: DLCpro, serial number {self.serial_number}",
                    f"Firmware: {self.firmware_version}",
                    f"laser1: {PRODUCT_NAME}, emission {'on' if self._emitting() else 'off'}",
                    f"laser1:dl:cc:current-act = {self._current_act_mA():.3f} mA",
                    f"laser1:dl:tc:temp-act = {laser.temperature_C:.3f} C",
                    f"laser1:dl:pc:voltage-act = {laser.piezo_V:.3f} V",
                    f"system-health: {self._health_text()}",
                ]
            )

    def _set(self, parameter: _Parameter, value: Value) -> int:
        """Write a value; return the status (0, or negative when the value is out of range)."""
        if parameter.write is None or self.user_level == USER_LEVEL_READONLY:
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
            "system-model": _Parameter(str, lambda: "DLC pro"),
            "system-label": _Parameter(
                str, lambda: self.system_label, lambda text: setattr(self, "system_label", text)
            ),
            "serial-number": _Parameter(str, lambda: self.serial_number),
            "fw-ver": _Parameter(str, lambda: self.firmware_version),
            "system-health": _Parameter(int, self._health),
            "system-health-txt": _Parameter(str, self._health_text),
            "uptime": _Parameter(int, lambda: int(self.lab.clock.now())),
            "ul": _Parameter(int, lambda: self.user_level),
            "laser1:product-name": _Parameter(str, lambda: PRODUCT_NAME),
            "laser1:type": _Parameter(str, lambda: "DL pro"),
            "laser1:emission": _Parameter(bool, self._emitting),
            "laser1:health": _Parameter(int, self._health),
            "laser1:health-txt": _Parameter(str, self._health_text),
        }

    def _health(self) -> int:
        """Return the health word: 0 when all is well, bit 1 (2) while the TEC is not settled.

        InstrumentKit's TopMode reads ``system-health`` 0 as healthy and bit 1 (value 2) as the
        temperature control's fault; the other bits are not modelled.
        """
        settled = abs(self.lab.laser.temperature_C - self._temp_set_C) < 0.01
        return 0 if settled else 2

    def _health_text(self) -> str:
        return "OK" if self._health() == 0 else "TEC not settled"

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
