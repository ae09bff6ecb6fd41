"""A simulated Keithley 6221 current source driving one axis of the shield's coils.

It parses SCPI through the shared session layer (`hotspin.simulators.scpi`): short or long
mnemonics in any case, optional nodes, ``;`` chains that continue the previous command's path,
the IEEE-488.2 common commands, the error queue read by ``SYST:ERR?`` (``0,"No error"`` when
empty) with the 6220/6221 Reference Manual's codes (Appendix B, Table B-1): unknown headers -113,
malformed parameters -1xx (command error, ESR bit 5), values out of range -222 (execution error,
ESR bit 4), an input buffer overrun -363 (device-dependent error, ESR bit 3).

The DC-source subset is simulated: level, range, compliance, output, source delay, error queue and
the status model of Reference Manual §11 (status byte, standard event, measurement, operation
and questionable registers, ``STAT:PRES``). With the output on, the coil current is the source
level unless ``|I|·R`` exceeds the compliance voltage, in which case it is limited to
``V_comp / R`` and bit B3 (Compliance) of the measurement condition register is set (§11, read
with ``STAT:MEAS:COND?``). With the output off the coil carries no current.

Ranges. Each range delivers up to 105 % of its full scale (the 100 mA range up to 105 mA): the
Reference Manual's sweep section ("Source ranging", FIXED) gives the 2 mA range's largest level as
2.1 mA. On a fixed range a level beyond that is refused with -222 "Parameter data out of range" and
the old level stays — the manual documents the 105 % capability and -222's meaning but not the DC
case in words, so the refusal rests on them and on the SCPI rule that an out-of-range value is not
executed (SCPI-99: -222 is a value outside the legal range, not executed). A fixed range chosen
below the present level clamps the output to the range's capability, as the sweep section describes
for FIXED ranging.
"""

from __future__ import annotations

from hotspin.analysis.checks import ParameterError, check_positive
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.scpi import (
    DATA_OUT_OF_RANGE,
    NO_ERROR,
    ScpiError,
    ScpiInstrument,
    boolean,
    format_error,
    numeric,
    without_parameter,
)

MAX_CURRENT_A = 0.105
COMPLIANCE_SPAN_V = (0.1, 105.0)
# The 6221's DC source ranges in A; a range setting selects the smallest that holds it.
SOURCE_RANGES_A = (2e-9, 20e-9, 200e-9, 2e-6, 20e-6, 200e-6, 2e-3, 20e-3, 100e-3)
RANGE_CAPABILITY = 1.05  # a range delivers 105 % of its full scale (Reference Manual §4)
SOURCE_DELAY_SPAN_S = (1e-3, 999999.999)  # :SOUR:DEL (Reference Manual, SOURce subsystem)
# Keithley's SCPI instruments hold 10 errors; the last slot reports the overflow (-350).
ERROR_QUEUE_LENGTH = 10
# The Reference Manual does not state the input buffer size; 64 KiB holds the longest command a
# client sends here (an arbitrary waveform of pymeasure's define_arbitary_waveform is ~100 kB and
# is not simulated).
INPUT_BUFFER_BYTES = 65536
MEAS_COMPLIANCE = 8  # measurement condition register bit B3
# Status byte summary bits (Reference Manual §11, Figure 11-1): MSB 1, QSB 8, OSB 128.
STB_MEASUREMENT_SUMMARY = 1
STB_QUESTIONABLE_SUMMARY = 8
STB_OPERATION_SUMMARY = 128


class _EventRegister:
    """A SCPI status register: condition (now), latched event, and the enable mask."""

    def __init__(self) -> None:
        self.event = 0
        self.enable = 0

    def read_event(self) -> str:
        value, self.event = self.event, 0
        return str(value)

    def set_enable(self, parameter: str) -> None:
        value = numeric(parameter, 0, 65535, 0)
        if value != int(value):
            raise ScpiError(*DATA_OUT_OF_RANGE)
        self.enable = int(value)

    @property
    def summary(self) -> bool:
        return bool(self.event & self.enable)


class SimulatedKeithley6221(ScpiInstrument):
    """Keithley 6221 on coil axis ``axis`` (0, 1, 2 = x, y, z) of ``lab``, LF framing."""

    input_terminator = b"\n"
    output_terminator = b"\n"
    default_port = 1394
    error_queue_length = ERROR_QUEUE_LENGTH
    input_buffer_bytes = INPUT_BUFFER_BYTES

    def __init__(
        self, lab: SimulatedLab, name: str, axis: int, coil_resistance_ohm: float = 10.0
    ) -> None:
        super().__init__(lab, name)
        if axis not in (0, 1, 2):
            raise ParameterError(f"axis = {axis!r} is not one of [0, 1, 2]")
        self.axis = axis
        self.coil_resistance_ohm = check_positive("coil_resistance_ohm", coil_resistance_ohm, "Ω")
        self.esr = 0
        self.measurement = _EventRegister()
        self.operation = _EventRegister()
        self.questionable = _EventRegister()
        level = "[:SOURce]:CURRent[:LEVel][:IMMediate][:AMPLitude]"
        value = without_parameter
        self.declare(
            [
                (level, self._set_level, value(lambda: _sci(self.level_A))),
                ("[:SOURce]:CURRent:COMPliance", self._set_compliance,
                 value(lambda: _sci(self.compliance_V))),
                ("[:SOURce]:CURRent:RANGe", self._set_range, value(lambda: _sci(self.range_A))),
                ("[:SOURce]:CURRent:RANGe:AUTO", self._set_auto_range,
                 value(lambda: str(int(self.auto_range)))),
                ("[:SOURce]:DELay", self._set_delay, value(lambda: _sci(self.delay_s))),
                (":OUTPut[:STATe]", self._set_output, value(lambda: str(int(self.output_on)))),
                (":SYSTem:ERRor[:NEXT]", None, value(self._next_error)),
                (":SYSTem:ERRor:COUNt", None, value(lambda: str(len(self.errors)))),
                (":SYSTem:ERRor:ALL", None, value(self._all_errors)),
                (":SYSTem:ERRor:CLEar", self._common(self.errors.clear), None),
                # The 622x manual pages read do not give SYST:VERS?'s reply. Keithley's other
                # SCPI manuals give the edition their firmware follows (2000, 2182: 1991.0;
                # 6430: 1996.0); the 6221 (2005) is given SCPI's last edition, 1999.0. Clients
                # read it as text only.
                (":SYSTem:VERSion", None, value(lambda: "1999.0")),
                (":STATus:QUEue[:NEXT]", None, value(self._next_error)),
                (":STATus:QUEue:CLEar", self._common(self.errors.clear), None),
                (":STATus:PRESet", self._common(self._preset), None),
                (":STATus:MEASurement[:EVENt]", None, value(self.measurement.read_event)),
                (":STATus:MEASurement:CONDition", None, value(self._measurement_condition)),
                (":STATus:MEASurement:ENABle", self.measurement.set_enable,
                 value(lambda: str(self.measurement.enable))),
                (":STATus:OPERation[:EVENt]", None, value(self.operation.read_event)),
                (":STATus:OPERation:CONDition", None, value(lambda: "0")),
                (":STATus:OPERation:ENABle", self.operation.set_enable,
                 value(lambda: str(self.operation.enable))),
                (":STATus:QUEStionable[:EVENt]", None, value(self.questionable.read_event)),
                (":STATus:QUEStionable:CONDition", None, value(lambda: "0")),
                (":STATus:QUEStionable:ENABle", self.questionable.set_enable,
                 value(lambda: str(self.questionable.enable))),
            ]
        )  # fmt: skip
        with lab.lock:
            self._reset_settings()

    def identity(self) -> str:
        """Return the ``*IDN?`` reply (the manufacturer, model, serial, firmware form)."""
        return f"KEITHLEY INSTRUMENTS INC.,MODEL 6221,SIM000{self.axis},D04 /A02"

    def reset(self) -> None:
        """*RST: the source's default settings, output off."""
        self._reset_settings()

    def summary_bits(self) -> int:
        """Return the measurement, questionable and operation summary bits of the status byte."""
        return (
            (STB_MEASUREMENT_SUMMARY if self.measurement.summary else 0)
            | (STB_QUESTIONABLE_SUMMARY if self.questionable.summary else 0)
            | (STB_OPERATION_SUMMARY if self.operation.summary else 0)
        )

    def handle(self, command: bytes) -> bytes:
        """Execute one message and put the delivered current into the coil."""
        reply = super().handle(command)
        with self.lab.lock:
            self._drive_coil()
        return reply

    # --- settings -------------------------------------------------------------------------------
    def _set_level(self, parameter: str) -> None:
        level = numeric(parameter, -MAX_CURRENT_A, MAX_CURRENT_A, 0.0)
        if self.auto_range:
            self.range_A = _range_for(level)
        elif abs(level) > self.range_A * RANGE_CAPABILITY * (1 + 1e-9):
            raise ScpiError(*DATA_OUT_OF_RANGE)  # beyond the fixed range: not executed
        self.level_A = level

    def _set_compliance(self, parameter: str) -> None:
        self.compliance_V = numeric(parameter, *COMPLIANCE_SPAN_V, 10.0)

    def _set_range(self, parameter: str) -> None:
        self.range_A = _range_for(numeric(parameter, -MAX_CURRENT_A, MAX_CURRENT_A, 2e-3))
        self.auto_range = False

    def _set_auto_range(self, parameter: str) -> None:
        self.auto_range = boolean(parameter)
        if self.auto_range:
            self.range_A = _range_for(self.level_A)

    def _set_delay(self, parameter: str) -> None:
        self.delay_s = numeric(parameter, *SOURCE_DELAY_SPAN_S, SOURCE_DELAY_SPAN_S[0])

    def _set_output(self, parameter: str) -> None:
        self.output_on = boolean(parameter)

    def _reset_settings(self) -> None:
        """Set the *RST state: output off, 0 A, 10 V compliance, fixed 2 mA range."""
        self.level_A = 0.0
        self.compliance_V = 10.0
        self.range_A = 2e-3
        self.auto_range = False
        self.delay_s = SOURCE_DELAY_SPAN_S[0]
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
            # The compliance voltage and the range's capability both limit the current.
            limit = min(
                self.compliance_V / self.coil_resistance_ohm, self.range_A * RANGE_CAPABILITY
            )
            current = max(-limit, min(limit, self.level_A))
        if self.in_compliance:
            self.measurement.event |= MEAS_COMPLIANCE
        self.lab.coils.currents_A[self.axis] = current

    # --- status and errors ----------------------------------------------------------------------
    def _next_error(self) -> str:
        return format_error(self.errors.pop())

    def _all_errors(self) -> str:
        """SYST:ERR:ALL?: every queued error, oldest first, or 0,"No error"."""
        return ",".join(format_error(e) for e in self.errors.drain() or [NO_ERROR])

    def clear_status(self) -> None:
        """*CLS: the event registers and the error queue (Reference Manual §11)."""
        super().clear_status()
        for register in (self.measurement, self.operation, self.questionable):
            register.event = 0

    def _preset(self) -> None:
        """STAT:PRES: every enable register of the SCPI status model to 0 (Reference §11)."""
        for register in (self.measurement, self.operation, self.questionable):
            register.enable = 0

    def _measurement_condition(self) -> str:
        return str(MEAS_COMPLIANCE if self.in_compliance else 0)


def _range_for(current_A: float) -> float:
    """Return the smallest source range that holds ``current_A``."""
    return next((r for r in SOURCE_RANGES_A if abs(current_A) <= r), SOURCE_RANGES_A[-1])


def _sci(value: float) -> str:
    """Format a number as the 6221 does (``1.000000E-02``)."""
    return f"{value:.6E}"
