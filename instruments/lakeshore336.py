"""Lake Shore Model 336 temperature controller: the cell heater (protocol digest §1.1).

Extends pymeasure's `LakeShore3xx` and its `lakeshore_base` channels with what the 336 has and
this experiment needs: reading status, temperature limit, PID, setpoint ramp, heater setup (the
336's five-argument ``HTRSET``), output mode, heater status and the standard event status
register.

Error checking. The 336 has no error queue: a bad command is silently dropped and only sets a bit
of the Standard Event Status Register (ESR: query error 4, execution error 16, command error 32).
Like Lake Shore's own Python driver, every message this driver sends carries ``;*ESR?`` at its
end, so each exchange is exactly one round trip:

* a query ``KRDG? A;*ESR?`` is answered ``+450.000;000`` — the last field is the ESR;
* a setting ``SETP 1,450;*ESR?`` is answered ``000`` — the reply also confirms the setting was
  processed before the next message goes out (the role of ``*OPC?`` in the official driver).

No exchange is ever followed by a separate ``*ESR?``, and an error bit raises
`InstrumentCommandError` (its ``code`` is the ESR value) on the exchange that caused it. Reading
the ESR clears it, so the query ``*ESR?`` itself is the one message sent unchanged.

A TLIMIT trip is not reported through ``HTRST?`` (whose codes are only open load and short): the
336 switches every control output off, which shows as ``RANGE?`` = 0 on every output.
"""

from __future__ import annotations

import enum
import math
from typing import Any

from hotspin.analysis.checks import check_range
from hotspin.instruments.errors import (
    GarbledReplyError,
    InstrumentCommandError,
    translated_io_errors,
)
from hotspin.instruments.validators import named_choice, named_range
from pymeasure.instruments import Instrument
from pymeasure.instruments.lakeshore.lakeshore3xx import LakeShore3xx
from pymeasure.instruments.lakeshore.lakeshore_base import (
    LakeShoreHeaterChannel,
    LakeShoreTemperatureChannel,
)

#: Setpoints and temperature limits this driver sends, in K: every sensor curve of a cell oven
#: lies inside; a value outside is a typing error, not a temperature.
TEMPERATURE_SPAN_K = (0.0, 1500.0)
#: ``HTRSET`` heater resistance codes (336 manual, HTRSET).
HEATER_RESISTANCE_CODES = {25: 1, 50: 2}
#: Full-scale power of the current outputs: output 1 100 W, output 2 50 W.
MAX_HEATER_POWER_W = {1: 100.0, 2: 50.0}
#: ``OUTMODE`` control modes (336 manual, OUTMODE).
OUTPUT_MODES = {
    "off": 0,
    "closed_loop": 1,
    "zone": 2,
    "open_loop": 3,
    "monitor_out": 4,
    "warm_up": 5,
}
#: ``OUTMODE`` control inputs.
CONTROL_INPUTS = {"none": 0, "A": 1, "B": 2, "C": 3, "D": 4}


class StandardEvent(enum.IntFlag):
    """Bits of the 336's Standard Event Status Register (``*ESR?``)."""

    OPERATION_COMPLETE = 1
    QUERY_ERROR = 4
    EXECUTION_ERROR = 16
    COMMAND_ERROR = 32
    POWER_ON = 128


ERROR_EVENTS = {
    StandardEvent.QUERY_ERROR: "query error (output queue lost)",
    StandardEvent.EXECUTION_ERROR: "execution error (value not within the instrument's abilities)",
    StandardEvent.COMMAND_ERROR: "command error (invalid command or query)",
}


class ReadingStatus(enum.IntFlag):
    """Bits of an input's reading status (``RDGST?``); 0 means a valid reading."""

    INVALID_READING = 1
    TEMPERATURE_UNDERRANGE = 16
    TEMPERATURE_OVERRANGE = 32
    SENSOR_UNITS_ZERO = 64
    SENSOR_UNITS_OVERRANGE = 128


class HeaterStatus(enum.IntEnum):
    """Heater error code of a current output (``HTRST?``); the query clears it."""

    NO_ERROR = 0
    OPEN_LOAD = 1
    SHORT = 2


def _validate_pid(value: Any, values: Any) -> tuple[float, float, float]:
    """Accept (P, I, D) inside the 336's ranges: P 0.1–1000, I 0.1–1000, D 0–200 %."""
    p, i, d = value
    return (
        check_range("P", p, 0.1, 1000.0),
        check_range("I", i, 0.1, 1000.0),
        check_range("D", d, 0.0, 200.0, "%"),
    )


class LakeShore336Input(LakeShoreTemperatureChannel):
    """One sensor input (A–D): readings in K, °C and sensor units, status and TLIMIT."""

    reading_status = Instrument.measurement(
        "RDGST? {ch}",
        """Get the reading status flags of this input (`ReadingStatus`; 0 = valid reading).""",
        cast=int,
        get_process=ReadingStatus,
    )

    temperature_limit_K = Instrument.control(
        "TLIMIT? {ch}",
        "TLIMIT {ch},%g",
        """Control the temperature limit in K above which the 336 switches every control output
        off (0 disables the limit).""",
        validator=named_range("temperature_limit_K", "K"),
        values=TEMPERATURE_SPAN_K,
    )


class LakeShore336Output(LakeShoreHeaterChannel):
    """One control output (1–4): setpoint, PID, ramp, range, manual output, setup and status."""

    # Overridden: pymeasure's setpoint takes any number; refuse what no 336 curve reaches.
    setpoint = Instrument.control(
        "SETP? {ch}",
        "SETP {ch},%g",
        """Control the setpoint in K (the control input is configured in kelvin).""",
        validator=named_range("setpoint", "K"),
        values=TEMPERATURE_SPAN_K,
    )

    # Overridden: pymeasure's manual output takes any number; the 336 accepts 0–100 %.
    mout = Instrument.control(
        "MOUT? {ch}",
        "MOUT {ch},%g",
        """Control the manual output in % of full scale (open loop: the output; closed loop:
        added to the PID output).""",
        validator=named_range("manual_output", "%"),
        values=(0.0, 100.0),
    )

    # Overridden: same command and map as pymeasure, with an error that names the parameter.
    range = Instrument.control(
        "RANGE? {ch}",
        "RANGE {ch},%i",
        """Control the heater range: 'off', 'low', 'medium' or 'high' (each a decade of power
        below the next; outputs 3 and 4 know only 'off' and 'low' = on).""",
        validator=named_choice("heater_range"),
        values={"off": 0, "low": 1, "medium": 2, "high": 3},
        map_values=True,
    )

    pid = Instrument.control(
        "PID? {ch}",
        "PID {ch},%g,%g,%g",
        """Control the PID parameters (P, I, D): P gain, I reset (1000 / integral time in s),
        D rate in % of a quarter of the integral time.""",
        validator=_validate_pid,
        values=None,
    )

    ramp = Instrument.measurement(
        "RAMP? {ch}",
        """Get the setpoint ramp as [enabled (0/1), rate in K/min].""",
    )

    ramping = Instrument.measurement(
        "RAMPST? {ch}",
        """Get whether the setpoint is ramping now.""",
        cast=bool,
    )

    output_mode = Instrument.measurement(
        "OUTMODE? {ch}",
        """Get the output mode as [mode code, control input code, powerup enable].""",
        cast=int,
    )

    heater_setup = Instrument.measurement(
        "HTRSET? {ch}",
        """Get the heater setup as [resistance code, max current code, max user current in A,
        display code] (336 form, outputs 1 and 2).""",
    )

    heater_status = Instrument.measurement(
        "HTRST? {ch}",
        """Get the heater error (`HeaterStatus`) of a current output; the query clears it.""",
        cast=int,
        get_process=HeaterStatus,
    )

    def configure_ramp(self, enabled: bool, rate_K_per_min: float) -> None:
        """Set the setpoint ramp: on or off, at 0.1–100 K/min (up or down)."""
        rate = check_range("ramp_rate_K_per_min", rate_K_per_min, 0.1, 100.0, "K/min")
        self.write(f"RAMP {{ch}},{int(bool(enabled))},{rate:g}")

    def set_output_mode(self, mode: str, control_input: str, powerup_enable: bool = False) -> None:
        """Set the control mode and its input; keep powerup_enable False so that a power cycle
        never restarts the heater on its own."""
        named_choice("output_mode")(mode, OUTPUT_MODES)
        named_choice("control_input")(control_input, CONTROL_INPUTS)
        self.write(
            f"OUTMODE {{ch}},{OUTPUT_MODES[mode]},{CONTROL_INPUTS[control_input]},"
            f"{int(bool(powerup_enable))}"
        )

    def setup_heater(
        self, resistance_ohm: int, max_current_A: float, display: str = "current"
    ) -> None:
        """Set the heater resistance (25 or 50 Ω), its maximum current and the display mode.

        Uses the 336 form ``HTRSET <out>,<resistance>,<max current>,<max user current>,
        <current/power>`` with max current 0 = user specified, as Lake Shore's driver does
        (the 335 form has an extra output-type argument).
        """
        named_choice("heater output")(self.id, MAX_HEATER_POWER_W)
        named_choice("heater_resistance_ohm")(resistance_ohm, HEATER_RESISTANCE_CODES)
        # The output's full power into this resistance fixes the largest current.
        limit = math.sqrt(MAX_HEATER_POWER_W[self.id] / resistance_ohm)
        current = check_range("max_current_A", max_current_A, 0.0, limit, "A", low_open=True)
        display_code = {"current": 1, "power": 2}
        named_choice("display")(display, display_code)
        self.write(
            f"HTRSET {{ch}},{HEATER_RESISTANCE_CODES[resistance_ohm]},0,{current:g},"
            f"{display_code[display]}"
        )


class LakeShore336(LakeShore3xx):
    """Lake Shore Model 336: four inputs (A–D), two current heater outputs (1, 2) and two
    voltage outputs (3, 4); TCP port 7777 or USB serial 57600 7O1. It sends CR LF (the 336
    also takes LF alone, as Lake Shore's own client sends) and reads CR LF."""

    input_A = Instrument.ChannelCreator(LakeShore336Input, "A")
    input_B = Instrument.ChannelCreator(LakeShore336Input, "B")
    input_C = Instrument.ChannelCreator(LakeShore336Input, "C")
    input_D = Instrument.ChannelCreator(LakeShore336Input, "D")
    # The 340's option-card inputs C1–C4 do not exist on a 336.
    input_C1 = input_C2 = input_C3 = input_C4 = None
    output_1 = Instrument.ChannelCreator(LakeShore336Output, 1)
    output_2 = Instrument.ChannelCreator(LakeShore336Output, 2)
    output_3 = Instrument.ChannelCreator(LakeShore336Output, 3)
    output_4 = Instrument.ChannelCreator(LakeShore336Output, 4)

    event_status = Instrument.measurement(
        "*ESR?",
        """Get the Standard Event Status Register (`StandardEvent`); reading clears it.""",
        cast=int,
        get_process=StandardEvent,
    )

    # Overridden: SCPIMixin returns the status byte as a string; the 336 sends a bit weighting.
    status = Instrument.measurement(
        "*STB?",
        """Get the status byte (bit weighting).""",
        cast=int,
    )

    def __init__(self, adapter: Any, name: str = "Lake Shore 336", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\r\n")
        kwargs.setdefault("write_termination", "\r\n")
        super().__init__(adapter, name, **kwargs)
        self._pending_query: str | None = None  # a query whose reply ends with the ESR

    def write(self, command: str, **kwargs: Any) -> None:
        """Send one message with ``;*ESR?`` appended; a setting's error is raised here."""
        if command.strip().upper() == "*ESR?":
            self._send(command, **kwargs)
            return
        self._send(f"{command};*ESR?", **kwargs)
        if "?" in command:
            self._pending_query = command  # its reply carries the ESR as its last field
            return
        self._raise_for(self._receive(), command)

    def read(self, **kwargs: Any) -> str:
        """Read a reply, strip and check the ESR field the matching query asked for."""
        query, self._pending_query = self._pending_query, None
        reply = self._receive(**kwargs)
        if query is None:
            return reply
        data, _, esr = reply.rpartition(";")
        self._raise_for(esr, query)
        return data

    def check_errors(self) -> list[tuple[int, str]]:
        """Read (and so clear) the ESR and return its error bits as (bit, meaning) pairs.

        Overridden: SCPIMixin would send ``SYST:ERR?``, which the 336 does not have.
        """
        events = self.event_status
        return [(int(bit), text) for bit, text in ERROR_EVENTS.items() if bit in events]

    def all_heaters_off(self) -> None:
        """Switch every output's heater range off, as the front panel's All Off key does."""
        self.write("RANGE 1,0;RANGE 2,0;RANGE 3,0;RANGE 4,0")

    def shutdown(self) -> None:
        """Switch every heater off, then mark the instrument shut down."""
        self.all_heaters_off()
        super().shutdown()

    def _send(self, message: str, **kwargs: Any) -> None:
        with translated_io_errors(self.name):
            super().write(message, **kwargs)

    def _receive(self, **kwargs: Any) -> str:
        with translated_io_errors(self.name):
            return super().read(**kwargs)

    def _raise_for(self, esr_reply: str, command: str) -> None:
        """Raise InstrumentCommandError if the ESR reply has an error bit set."""
        try:
            events = StandardEvent(int(esr_reply))
        except ValueError:
            raise GarbledReplyError(
                self.name, f"expected the *ESR? value after {command!r}, got {esr_reply!r}"
            ) from None
        errors = [text for bit, text in ERROR_EVENTS.items() if bit in events]
        if errors:
            raise InstrumentCommandError(
                self.name, f"{'; '.join(errors)} after {command!r}", code=int(events)
            )
