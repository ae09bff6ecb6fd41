"""A simulated Lake Shore 336 that heats the simulated cell with its own PID loop.

It answers the 336's command set through the shared session layer (`hotspin.simulators.scpi`): a
message ends at its line feed, the carriage return before it optional; replies end in CR LF; ``;``
chains one message's commands (a ``:`` before a header, as Lake Shore's own client joins commands,
is accepted) and their replies are joined by ``;``. The IEEE-488.2 common commands are there (*IDN?
*RST *CLS *ESE *ESE? *ESR? *SRE *SRE? *STB? *OPC *OPC? *WAI *TST?). As on the real one, an unknown
command or a malformed one gets no reply and sets the command-error bit (32) of the Standard Event
Status Register; a value the 336 cannot take sets the execution-error bit (16); there is no error
queue (336 manual, remote operation: status system). Zone mode runs the zone table (``ZONE``);
monitor-out and warm-up output modes are not simulated: selecting them is an execution error here.
``INTYPE``, ``INCRV``, ``INNAME`` and ``CRVHDR?`` describe the sensors below; ``CRVHDR?`` knows the
standard curves the inputs use (1 DT-670, 6 PT-100, 7 PT-1000) and refuses the others (execution
error) instead of inventing their headers.

What it is connected to:

* input A: a Pt100 on the cell, reading ``lab`` 's cell temperature; input B: a Pt100 at the
  oven's ambient temperature; inputs C and D: no sensor (reading status 1 = invalid reading,
  readings 0);
* output 1: a current-mode heater driving the oven (``lab.heater_control`` is this controller),
  power = I² R with I = output % · I_max · range factor, R the oven's heater resistance and
  I_max from ``HTRSET``. The ranges are decades of power — low 1 %, medium 10 %, high 100 %, as
  the 331's RANGE command spells out (0.5, 5, 50 W) — so the current factors are 10^-1, 10^-0.5
  and 1. Outputs 2–4 run their control law but drive nothing.

Control law (Lake Shore 335 manual §2.7 and §4.5.1.7; the 336 shares it): output % =
P·[e + (1/T_I)∫e dt + T_D de/dt] plus the manual output, e = setpoint − reading in K, with the
integral time T_I = 1000 / I s and the derivative time T_D = D % of T_I / 4. The output is
clamped to 0–100 % and the integral stops growing while the output is clamped, so a warm-up
from room temperature does not overshoot. The manual does not say how the 336 limits its
integral; this conditional integration is the textbook anti-windup (Åström & Murray, Feedback
Systems, §10.4) — a modelling choice, not documented 336 behaviour. The loop runs every 0.1 s
of simulated time. The factory PID values P 50, I 20, D 0 hold the default oven (τ = 300 s,
50 Ω heater at 1 A full scale) at 450 K within millikelvin.
``SETP?`` returns the target setpoint; ``RAMPST?`` tells whether the loop's setpoint is still
ramping towards it.

TLIMIT: when any input's reading exceeds its limit, every control output's range is set to off
(336 manual, TLIMIT); ``HTRST?`` is not involved — it reports only open load (1) and short (2) of
the heater, latched until queried. Disconnect or short the heater with `heater_connection` to
see those.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.scpi import (
    COMMAND_ERROR,
    ESR_COMMAND_ERROR,
    EXECUTION_ERROR,
    ScpiError,
    ScpiInstrument,
    split_arguments,
)

# Power decades per range step: the current scales by √10 per step (range 0 = off).
RANGE_CURRENT_FACTOR = {0: 0.0, 1: 0.1, 2: 10**-0.5, 3: 1.0}
# HTRSET max-current presets in A; 0 = user specified. Lake Shore's python-driver (model_336.py
# get_heater_setup) lists 0.707, 1.0, 1.141, 2.0: 1.141 is √2 A with two digits swapped (the
# presets are 0.5, 1, 2 and 4 W per ohm: 1.414 A is 50 W into 25 Ω, output 2's full scale).
MAX_CURRENT_PRESETS_A = {1: 0.707, 2: 1.0, 3: 1.414, 4: 2.0}
HEATER_RESISTANCE_OHM = {1: 25.0, 2: 50.0}  # HTRSET resistance codes
MAX_POWER_W = {1: 100.0, 2: 50.0}  # full scale of the current outputs 1 and 2
# Setpoints and limits the simulator takes, in K (the driver refuses far less).
TEMPERATURE_SPAN_K = (0.0, 2000.0)
INPUTS = ("A", "B", "C", "D")
OUTPUTS = (1, 2, 3, 4)
PT100_CURVE_K = (30.0, 800.0)  # Lake Shore's PT-100 standard curve

SIMULATED_MODES = (0, 1, 2, 3)  # off, closed-loop PID, zone, open loop
ZONES = 10  # zones per output (336 manual, ZONE)
# INTYPE sensor types (336 manual, INTYPE): 0 disabled, 1 diode, 2 platinum RTD, 3 NTC RTD,
# 4 thermocouple, 5 capacitance; units 1 K, 2 °C, 3 sensor.
SENSOR_TYPES = range(6)
# Standard curve headers (336 manual, Table of standard curves; CRVHDR? reply fields: name,
# serial number, format 1 mV/K 2 V/K 3 Ω/K 4 log Ω/K, limit in K, coefficient 1 negative
# 2 positive). Only the curves the simulated sensors use and the factory default are kept.
STANDARD_CURVES = {
    1: ("DT-670", "STANDARD", 2, 500.0, 1),
    6: ("PT-100", "STANDARD", 3, 800.0, 2),
    7: ("PT-1000", "STANDARD", 3, 800.0, 2),
}
# The 336 manual does not give the input buffer size; 4 KiB holds every message a client sends
# (a chain of all four outputs' settings is under 200 bytes).
INPUT_BUFFER_BYTES = 4096


class _CommandError(ScpiError):
    """The 336 could not parse the command (sets ESR bit 5)."""

    def __init__(self, detail: object) -> None:
        super().__init__(*COMMAND_ERROR)
        self.detail = detail


class _ExecutionError(ScpiError):
    """The 336 parsed the command but cannot do it (sets ESR bit 4)."""

    def __init__(self, detail: object) -> None:
        super().__init__(*EXECUTION_ERROR)
        self.detail = detail


def pt100_resistance_ohm(temperature_K: float) -> float:
    """Return a Pt100's resistance (IEC 60751 Callendar–Van Dusen) at ``temperature_K``."""
    t = temperature_K - 273.15
    a, b, c = 3.9083e-3, -5.775e-7, -4.183e-12
    cubic = c * (t - 100.0) * t**3 if t < 0 else 0.0
    return 100.0 * (1.0 + a * t + b * t * t + cubic)


def _number(value: float) -> str:
    """Format a reading as the 336 does: sign and fixed digits (``+450.000``)."""
    return f"{value:+08.3f}"


@dataclass
class LoopSettings:
    """What a zone sets on its control loop: PID, manual output in % and heater range."""

    p: float = 50.0
    i: float = 20.0
    d: float = 0.0
    manual_output: float = 0.0
    range: int = 0


@dataclass
class Zone(LoopSettings):
    """One zone of an output's zone table (336 manual, zone settings and ZONE): the loop settings
    used while the setpoint lies at or below ``upper_K`` (and above the previous zone's bound)."""

    upper_K: float = 0.0
    control_input: int = 0  # 0: keep the loop's input
    ramp_rate_K_per_min: float = 0.0

    def reply(self) -> str:
        """Return the ``ZONE?`` reply fields."""
        return (
            f"{self.upper_K:+.3f},{self.p:+.1f},{self.i:+.1f},{self.d:+.0f},"
            f"{self.manual_output:+.2f},{self.range},{self.control_input},"
            f"{self.ramp_rate_K_per_min:+.1f}"
        )


@dataclass
class ControlOutput(LoopSettings):
    """One control loop and its output, updated every control interval."""

    mode: int = 0
    control_input: int = 0
    powerup_enable: int = 0
    setpoint_K: float = 0.0
    ramp_setpoint_K: float = 0.0  # the setpoint the loop uses now (moves while ramping)
    ramp_enabled: int = 0
    ramp_rate_K_per_min: float = 10.0
    output_percent: float = 0.0
    zones: list[Zone] = field(default_factory=lambda: [Zone() for _ in range(ZONES)])
    _integral: float = 0.0
    _last_error: float | None = None

    @property
    def ramping(self) -> bool:
        """Return True while the loop's setpoint is still moving towards the target."""
        return self.ramp_enabled == 1 and self.ramp_setpoint_K != self.setpoint_K

    def set_setpoint(self, setpoint_K: float) -> None:
        """Set the target; with the ramp on, the loop's setpoint moves to it at the ramp rate."""
        self.setpoint_K = setpoint_K
        if not self.ramp_enabled or self.ramp_rate_K_per_min == 0:
            self.ramp_setpoint_K = setpoint_K

    def set_ramp(self, enabled: int, rate_K_per_min: float) -> None:
        """Switch the ramp; the rate 0 means infinitely fast."""
        self.ramp_enabled, self.ramp_rate_K_per_min = enabled, rate_K_per_min
        if not enabled or rate_K_per_min == 0:
            self.ramp_setpoint_K = self.setpoint_K

    def apply_zone(self) -> None:
        """In zone mode, take the settings of the zone the setpoint lies in (336 manual, zone
        settings: the first zone whose upper bound is at or above the setpoint; above all, the
        last)."""
        if self.mode != 2:
            return
        zone = next((z for z in self.zones if self.setpoint_K <= z.upper_K), self.zones[-1])
        for setting in fields(LoopSettings):
            setattr(self, setting.name, getattr(zone, setting.name))
        if zone.control_input:
            self.control_input = zone.control_input
        if self.ramp_enabled:
            self.ramp_rate_K_per_min = zone.ramp_rate_K_per_min

    def step(self, reading_K: float | None, interval_s: float) -> float:
        """Advance the ramp and the control law by ``interval_s``; return the output in %."""
        self.apply_zone()
        if self.ramping:
            step = self.ramp_rate_K_per_min / 60.0 * interval_s
            gap = self.setpoint_K - self.ramp_setpoint_K
            self.ramp_setpoint_K += math.copysign(min(step, abs(gap)), gap)
        if self.range == 0 or self.mode == 0:
            self._integral, self._last_error = 0.0, None
            self.output_percent = 0.0
        elif self.mode == 3:
            self.output_percent = self.manual_output
        elif reading_K is None:  # no valid control reading: the loop cannot act
            self._integral, self._last_error = 0.0, None
            self.output_percent = 0.0
        else:
            self.output_percent = self._pid(self.ramp_setpoint_K - reading_K, interval_s)
        return self.output_percent

    def _pid(self, error_K: float, interval_s: float) -> float:
        """Return the clamped PID output for this interval's error (Lake Shore's form)."""
        integral_time_s = 1000.0 / self.i
        derivative_time_s = self.d / 100.0 * integral_time_s / 4.0
        slope = 0.0 if self._last_error is None else (error_K - self._last_error) / interval_s
        self._last_error = error_K
        base = self.manual_output + self.p * (error_K + derivative_time_s * slope)
        grown = self._integral + self.p * error_K * interval_s / integral_time_s
        unclamped = base + grown
        # Anti-windup: while the output is clamped, the integral may only move it back inside.
        winding_up = unclamped > 100.0 and grown > self._integral
        winding_down = unclamped < 0.0 and grown < self._integral
        if not (winding_up or winding_down):
            self._integral = grown
        return min(100.0, max(0.0, base + self._integral))


Setter = Callable[[list[str]], None]
Getter = Callable[[list[str]], str]


def _listed(handler: Callable[[list[str]], Any] | None) -> Callable[[str], Any] | None:
    """Give a handler of comma-separated arguments the parameter text the session layer sends."""
    if handler is None:
        return None
    return lambda text: handler(split_arguments(text))


def _default_outputs() -> dict[int, ControlOutput]:
    return {
        1: ControlOutput(mode=1, control_input=1),
        2: ControlOutput(mode=0, control_input=2),
        3: ControlOutput(),
        4: ControlOutput(),
    }


class SimulatedLakeShore336(ScpiInstrument):
    """Lake Shore 336 on the cell oven: input A on the cell, output 1 on its heater."""

    # The 336 ends a message at its line feed, the carriage return before it is optional; it ends
    # every reply with CR LF (336 manual, remote operation: message terminators). Lake Shore's own
    # client sends LF alone (python-driver generic_instrument.py, _tcp_command).
    input_terminator = b"\r\n"
    output_terminator = b"\r\n"
    terminator_prefix_optional = True
    input_buffer_bytes = INPUT_BUFFER_BYTES
    default_port = 7777
    register_format = "{:03d}"  # *ESR?, *ESE?, *STB?, *SRE?: "Format: nnn" (336 manual)

    def __init__(self, lab: SimulatedLab, name: str = "lakeshore336") -> None:
        super().__init__(lab, name)
        table: list[tuple[str, Setter | None, Getter | None]] = [
            ("KRDG", None, lambda args: self._reading(args, lambda kelvin: kelvin)),
            ("CRDG", None, lambda args: self._reading(args, lambda kelvin: kelvin - 273.15)),
            ("SRDG", None, lambda args: self._reading(args, pt100_resistance_ohm)),
            ("RDGST", None, self._reading_status),
            ("INTYPE", self._set_input_type, self._get_input_type),
            ("INCRV", self._set_input_curve, self._get_input_curve),
            # INNAME? pads the name to its 15 characters, as CRVHDR? pads a curve's name (QCoDeS's
            # driver expects 15 characters back: an observed source, the manual gives the width).
            ("INNAME", self._set_input_name,
             lambda args: f"{self.input_names[self._input(args)]:<15}"),
            ("CRVHDR", None, self._curve_header),
            ("TLIMIT", self._set_tlimit,
             lambda args: _number(self.temperature_limits_K[self._input(args)])),
            ("SETP", self._set_setpoint, lambda args: _number(self._output(args).setpoint_K)),
            ("RAMP", self._set_ramp, self._get_ramp),
            ("RAMPST", None, lambda args: str(int(self._output(args).ramping))),
            ("RANGE", self._set_range, lambda args: str(self._output(args).range)),
            # HTR? of the voltage outputs 3 and 4 answers their output in % as for 1 and 2:
            # the 336 manual lists HTR? for 1 and 2 only; QCoDeS's own 336 simulation
            # (qcodes/instrument/sims/lakeshore_model336.yaml) answers HTR? 3 and 4, and its
            # driver asks them in every snapshot (an observed source, not the manual).
            ("HTR", None, lambda args: f"{self._output(args).output_percent:+.2f}"),
            ("MOUT", self._set_manual_output,
             lambda args: f"{self._output(args).manual_output:+.2f}"),
            ("PID", self._set_pid, self._get_pid),
            ("OUTMODE", self._set_output_mode, self._get_output_mode),
            ("ZONE", self._set_zone, self._get_zone),
            ("HTRSET", self._set_heater_setup, self._get_heater_setup),
            ("HTRST", None, self._read_heater_status),
        ]  # fmt: skip
        self.declare([(header, _listed(set_), _listed(get)) for header, set_, get in table])
        #: The physical heater circuit on output 1: "ok", "open" or "short" (a bench action).
        self.heater_connection = "ok"
        self._heater_fault = 0
        with lab.lock:
            lab.update()  # the time before this controller was installed ran without it
            self._power_up()
            lab.heater_control = self._control

    # --- the session layer's hooks ----------------------------------------------------------
    def identity(self) -> str:
        """Return the ``*IDN?`` reply: LSCI,MODEL336,<serial>/<option serial>,<firmware>."""
        return "LSCI,MODEL336,SIM0001/#######,2.9"

    def reset(self) -> None:
        """*RST: the power-up settings."""
        self._power_up()

    def before_command(self) -> None:
        """Settings change from now on: integrate the oven up to now under the old ones."""
        self.lab.update()

    def overrun(self) -> bytes:
        """A message longer than the input buffer is dropped as an invalid command.

        The 336 has no error queue and its manual neither sizes the buffer nor describes an
        overrun. The bit set is the one the manual's Standard Event Status Register gives for a
        command the 336 cannot interpret (bit 5, Command Error): the nearest documented
        behaviour, chosen for that reason; what a real 336 does with such a line is not known.
        """
        self.esr |= ESR_COMMAND_ERROR
        return b""

    # --- argument parsing -----------------------------------------------------------------------
    @staticmethod
    def _count(args: list[str], n: int) -> None:
        if len(args) != n:
            raise _CommandError(f"expected {n} arguments, got {len(args)}")

    @staticmethod
    def _float(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _CommandError(text) from None
        if not math.isfinite(value):
            raise _CommandError(text)
        return value

    def _int(self, text: str, allowed: range | tuple[int, ...]) -> int:
        value = self._float(text)
        if value != int(value) or int(value) not in allowed:
            raise _ExecutionError(text)
        return int(value)

    def _bounded(self, text: str, low: float, high: float) -> float:
        value = self._float(text)
        if not low <= value <= high:
            raise _ExecutionError(text)
        return value

    def _input(self, args: list[str]) -> str:
        if not args or args[0].upper() not in INPUTS:
            raise _ExecutionError(args)
        return args[0].upper()

    def _output(self, args: list[str]) -> ControlOutput:
        if not args:
            raise _CommandError("output missing")
        return self.outputs[self._int(args[0], OUTPUTS)]

    # --- inputs ---------------------------------------------------------------------------------
    def _readings_K(self, cell_K: float) -> dict[str, float | None]:
        """Return each input's temperature in K, or None for an input without a sensor."""
        return {"A": cell_K, "B": self.lab.config.oven.ambient_K, "C": None, "D": None}

    @staticmethod
    def _status_bits(reading_K: float | None) -> int:
        if reading_K is None:
            return 1
        low, high = PT100_CURVE_K
        return 16 if reading_K < low else 32 if reading_K > high else 0

    def _reading(self, args: list[str], convert: Callable[[float], float]) -> str:
        readings = self._readings_K(self.lab.oven.temperature_K)
        if args == ["0"]:
            names = list(INPUTS)
        else:
            self._count(args, 1)
            names = [self._input(args)]
        values = []
        for name in names:
            kelvin = readings[name]
            valid = kelvin is not None and self._status_bits(kelvin) == 0
            values.append(_number(convert(kelvin) if valid else 0.0))
        return ",".join(values)

    def _reading_status(self, args: list[str]) -> str:
        self._count(args, 1)
        readings = self._readings_K(self.lab.oven.temperature_K)
        return f"{self._status_bits(readings[self._input(args)]):03d}"

    def _set_input_type(self, args: list[str]) -> None:
        """INTYPE <input>,<type>,<autorange>,<range>,<compensation>,<units> (336 manual)."""
        self._count(args, 6)
        name = self._input(args)
        sensor_type = self._int(args[1], SENSOR_TYPES)
        autorange = self._int(args[2], (0, 1))
        input_range = self._int(args[3], range(9))  # NTC RTD has ranges 0-8, the widest list
        compensation = self._int(args[4], (0, 1))
        units = self._int(args[5], (1, 2, 3))
        self.input_types[name] = (sensor_type, autorange, input_range, compensation, units)

    def _get_input_type(self, args: list[str]) -> str:
        self._count(args, 1)
        return ",".join(str(v) for v in self.input_types[self._input(args)])

    def _set_input_curve(self, args: list[str]) -> None:
        self._count(args, 2)
        self.input_curves[self._input(args)] = self._int(args[1], range(60))

    def _get_input_curve(self, args: list[str]) -> str:
        """INCRV? reply: the curve number, two digits (Lake Shore 331/336 manuals: nn)."""
        self._count(args, 1)
        return f"{self.input_curves[self._input(args)]:02d}"

    def _set_input_name(self, args: list[str]) -> None:
        """INNAME <input>,"<name>": at most 15 characters, the quotes optional."""
        self._count(args, 2)
        name = args[1].strip().strip('"').rstrip()
        if len(name) > 15:
            raise _ExecutionError(args[1])
        self.input_names[self._input(args)] = name

    def _curve_header(self, args: list[str]) -> str:
        """CRVHDR? <curve>: name, serial number, format, limit in K, coefficient."""
        self._count(args, 1)
        number = self._int(args[0], range(1, 60))
        if number not in STANDARD_CURVES:
            raise _ExecutionError(args[0])  # a curve this simulator does not hold
        name, serial, data_format, limit_K, coefficient = STANDARD_CURVES[number]
        return f"{name:<15},{serial:<10},{data_format},{limit_K:+.3f},{coefficient}"

    def _set_tlimit(self, args: list[str]) -> None:
        self._count(args, 2)
        self.temperature_limits_K[self._input(args)] = self._bounded(args[1], *TEMPERATURE_SPAN_K)

    # --- outputs --------------------------------------------------------------------------------
    def _set_setpoint(self, args: list[str]) -> None:
        self._count(args, 2)
        self._output(args).set_setpoint(self._bounded(args[1], *TEMPERATURE_SPAN_K))

    def _set_ramp(self, args: list[str]) -> None:
        self._count(args, 3)
        output = self._output(args)
        enabled = self._int(args[1], (0, 1))
        rate = self._float(args[2])
        if rate != 0 and not 0.1 <= rate <= 100.0:
            raise _ExecutionError(args[2])
        output.set_ramp(enabled, rate)

    def _get_ramp(self, args: list[str]) -> str:
        output = self._output(args)
        return f"{output.ramp_enabled},{output.ramp_rate_K_per_min:+.1f}"

    def _set_range(self, args: list[str]) -> None:
        self._count(args, 2)
        number = self._int(args[0], (1, 2, 3, 4))
        # Voltage outputs 3 and 4 are only off or on.
        self.outputs[number].range = self._int(args[1], (0, 1, 2, 3) if number <= 2 else (0, 1))

    def _set_manual_output(self, args: list[str]) -> None:
        self._count(args, 2)
        self._output(args).manual_output = self._bounded(args[1], 0.0, 100.0)

    def _set_pid(self, args: list[str]) -> None:
        self._count(args, 4)
        output = self._output(args)
        output.p = self._bounded(args[1], 0.1, 1000.0)
        output.i = self._bounded(args[2], 0.1, 1000.0)
        output.d = self._bounded(args[3], 0.0, 200.0)

    def _get_pid(self, args: list[str]) -> str:
        output = self._output(args)
        return f"{output.p:+.1f},{output.i:+.1f},{output.d:+.0f}"

    def _set_output_mode(self, args: list[str]) -> None:
        self._count(args, 4)
        output = self._output(args)
        output.mode = self._int(args[1], SIMULATED_MODES)
        output.control_input = self._int(args[2], range(len(INPUTS) + 1))
        output.powerup_enable = self._int(args[3], (0, 1))

    def _get_output_mode(self, args: list[str]) -> str:
        output = self._output(args)
        return f"{output.mode},{output.control_input},{output.powerup_enable}"

    def _set_zone(self, args: list[str]) -> None:
        """ZONE <output>,<zone>,<upper>,<P>,<I>,<D>,<mout>,<range>,<input>,<rate> (336 manual)."""
        self._count(args, 10)
        number = self._int(args[0], (1, 2, 3, 4))
        zone = self._int(args[1], range(1, ZONES + 1))
        rate = self._bounded(args[9], 0.0, 100.0)
        self.outputs[number].zones[zone - 1] = Zone(
            upper_K=self._bounded(args[2], *TEMPERATURE_SPAN_K),
            p=self._bounded(args[3], 0.1, 1000.0),
            i=self._bounded(args[4], 0.1, 1000.0),
            d=self._bounded(args[5], 0.0, 200.0),
            manual_output=self._bounded(args[6], 0.0, 100.0),
            range=self._int(args[7], (0, 1, 2, 3) if number <= 2 else (0, 1)),
            control_input=self._int(args[8], range(len(INPUTS) + 1)),
            ramp_rate_K_per_min=rate,
        )

    def _get_zone(self, args: list[str]) -> str:
        self._count(args, 2)
        output = self._output(args)
        return output.zones[self._int(args[1], range(1, ZONES + 1)) - 1].reply()

    def _set_heater_setup(self, args: list[str]) -> None:
        self._count(args, 5)
        number = self._int(args[0], (1, 2))
        resistance = self._int(args[1], (1, 2))
        preset = self._int(args[2], (0, 1, 2, 3, 4))
        # The output's full power into this resistance fixes the largest current.
        largest = math.sqrt(MAX_POWER_W[number] / HEATER_RESISTANCE_OHM[resistance])
        user_current = self._bounded(args[3], 0.0, largest)
        display = self._int(args[4], (1, 2))
        maximum = MAX_CURRENT_PRESETS_A[preset] if preset else user_current
        if maximum <= 0.0 or maximum > largest * (1 + 1e-3):  # the 1.414 A preset is √2 A
            raise _ExecutionError(args)
        self.heater_setups[number] = (resistance, preset, user_current, display)

    def _get_heater_setup(self, args: list[str]) -> str:
        """HTRSET? <output>: resistance, max-current preset, user max current, display.

        The four fields after the output, with no output type (the 335's HTRSET has one): Lake
        Shore's python-driver reads them so (model_336.py ``get_heater_setup``: ``[0]``
        resistance, ``[1]`` preset, ``[2]`` user current, ``[3]`` display), and QCoDeS pull
        request #8520 (open) drops QCoDeS's ``output_type`` for the 336 on the same ground.
        Outputs 3 and 4 are voltage outputs without a heater setup (``HTRSET 3,...`` is an
        execution error; the same pull request: they "don't support HTRSET at all"); their
        query answers the power-up record of an unset output, so that QCoDeS's snapshot, which
        asks it of every output, is not held up by four timeouts. Whether the real 336 answers
        ``HTRSET? 3`` or only flags an error is in neither source: an assumption.
        """
        resistance, preset, user_current, display = self.heater_setups[self._int(args[0], OUTPUTS)]
        return f"{resistance},{preset},{user_current:+.3f},{display}"

    def _read_heater_status(self, args: list[str]) -> str:
        self._count(args, 1)
        if self._int(args[0], (1, 2)) == 2:
            return "0"  # nothing is connected to output 2, so nothing can fail there
        code, self._heater_fault = self._heater_fault, 0  # latched until read
        return str(code)

    # --- power-up state -----------------------------------------------------------------------
    def _power_up(self) -> None:
        """Set the power-up state: heaters off, output 1 in closed loop on input A, and a
        heater setup that matches the oven's heater (as if saved by a previous session)."""
        self.outputs = _default_outputs()
        cell_K = self.lab.oven.temperature_K
        for output in self.outputs.values():
            output.set_setpoint(cell_K)
        self.temperature_limits_K = dict.fromkeys(INPUTS, 0.0)
        # A and B: Pt100s on curve 6 (PT-100), autorange, kelvin; C and D: disabled, still on
        # the factory curve 1 (DT-670).
        platinum = (2, 1, 3, 1, 1)
        self.input_types = {"A": platinum, "B": platinum, "C": (0, 0, 0, 0, 1)}
        self.input_types["D"] = self.input_types["C"]
        self.input_curves = {"A": 6, "B": 6, "C": 1, "D": 1}
        self.input_names = {"A": "Cell", "B": "Oven ambient", "C": "Input C", "D": "Input D"}
        resistance = 1 if self.lab.config.oven.heater_resistance_ohm < 37.5 else 2
        self.heater_setups = {1: (resistance, 2, 0.0, 1), 2: (resistance, 2, 0.0, 1)}
        self.heater_setups |= dict.fromkeys((3, 4), (1, 0, 0.0, 1))

    # --- the control loop, called by the lab (under lab.lock) every control interval -----------
    def _control(self, time_s: float, temperature_K: float, interval_s: float) -> float:
        """Return output 1's heater power in W for the next interval (the lab's hook)."""
        readings = self._readings_K(temperature_K)
        tripped = any(
            limit > 0 and readings[name] is not None and readings[name] > limit
            for name, limit in self.temperature_limits_K.items()
        )
        if tripped:
            for output in self.outputs.values():
                output.range = 0
        for output in self.outputs.values():
            name = INPUTS[output.control_input - 1] if output.control_input else None
            reading = readings[name] if name else None
            valid = reading is not None and self._status_bits(reading) == 0
            output.step(reading if valid else None, interval_s)
        return self._heater_power_W(self.outputs[1])

    def _heater_power_W(self, output: ControlOutput) -> float:
        """Return the power output 1's current puts into the oven heater."""
        _, preset, user_current, _ = self.heater_setups[1]
        max_current = MAX_CURRENT_PRESETS_A[preset] if preset else user_current
        current = output.output_percent / 100.0 * max_current * RANGE_CURRENT_FACTOR[output.range]
        if current > 0.0 and self.heater_connection != "ok":
            self._heater_fault = 1 if self.heater_connection == "open" else 2
            return 0.0  # no current through an open heater, no power in a shorted one
        return current**2 * self.lab.config.oven.heater_resistance_ohm
