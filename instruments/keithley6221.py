"""Keithley 6221 AC/DC current source: one coil axis (protocol digest §5.1).

Extends pymeasure's `Keithley6221`. What changes:

* The DC settings refuse out-of-range values before anything is sent, naming the parameter:
  pymeasure's ``truncated_range`` would silently send 0.105 A when asked for 0.2 A.
* Every DC setting is followed by reading the error queue (``SYST:ERR?`` until ``0,"No error"``);
  an entry raises `InstrumentCommandError` with the instrument's code (-222 for a value out of
  range, -113 for an unknown header, ...). That is one extra round trip per setting, cheap next
  to a coil's settling time, and pymeasure's own mechanism (``check_set_errors``).
* `in_compliance` reads bit B3 of the measurement condition register (Reference Manual §11).
* pyvisa timeouts and dropped sockets become `InstrumentTimeoutError` / `LinkLostError`.

Units are SI: A and V. Framing is LF both ways; Ethernet is a raw socket on port 1394.
"""

from __future__ import annotations

from typing import Any

from hotspin.instruments.errors import InstrumentCommandError, translated_io_errors
from hotspin.instruments.validators import named_choice, named_range
from pymeasure.instruments import Instrument
from pymeasure.instruments.keithley.keithley6221 import Keithley6221 as PymeasureKeithley6221

#: Measurement condition register bit B3: the source is in compliance.
COMPLIANCE_BIT = 8


class Keithley6221(PymeasureKeithley6221):
    """Keithley 6221 current source with validated DC settings and error-queue checks."""

    # Overridden: the same commands with named, refusing validators and the error queue read.
    source_current = Instrument.control(
        ":SOUR:CURR?",
        ":SOUR:CURR %g",
        """Control the DC source current in A (−0.105 to 0.105 A).""",
        validator=named_range("source_current", "A"),
        values=(-0.105, 0.105),
        check_set_errors=True,
    )

    source_compliance = Instrument.control(
        ":SOUR:CURR:COMP?",
        ":SOUR:CURR:COMP %g",
        """Control the compliance (largest output voltage) in V (0.1 to 105 V).""",
        validator=named_range("source_compliance", "V"),
        values=(0.1, 105.0),
        check_set_errors=True,
    )

    source_range = Instrument.control(
        ":SOUR:CURR:RANG?",
        ":SOUR:CURR:RANG:AUTO 0;:SOUR:CURR:RANG %g",
        """Control the fixed source range in A (the smallest range holding the value is taken;
        setting it switches auto-range off).""",
        validator=named_range("source_range", "A"),
        values=(-0.105, 0.105),
        check_set_errors=True,
    )

    source_auto_range = Instrument.control(
        ":SOUR:CURR:RANG:AUTO?",
        ":SOUR:CURR:RANG:AUTO %d",
        """Control whether the source range follows the current (bool).""",
        validator=named_choice("source_auto_range"),
        values={True: 1, False: 0},
        map_values=True,
        check_set_errors=True,
    )

    source_enabled = Instrument.control(
        "OUTPut?",
        "OUTPut %d",
        """Control whether the output is on (bool); ramp the current to 0 A before switching a
        coil off.""",
        validator=named_choice("source_enabled"),
        values={True: 1, False: 0},
        map_values=True,
        check_set_errors=True,
    )

    in_compliance = Instrument.measurement(
        "STAT:MEAS:COND?",
        """Get whether the source is in compliance: it cannot drive the set current through the
        load within the compliance voltage (measurement condition register bit B3).""",
        cast=int,
        # int(): pymeasure passes a reply it could not cast on as text; a garbled one must raise.
        get_process=lambda condition: bool(int(condition) & COMPLIANCE_BIT),
    )

    def __init__(self, adapter: Any, name: str = "Keithley 6221", **kwargs: Any) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        super().__init__(adapter, name, **kwargs)

    def write(self, command: str, **kwargs: Any) -> None:
        """Send a command; a lost link raises LinkLostError."""
        with translated_io_errors(self.name):
            super().write(command, **kwargs)

    def read(self, **kwargs: Any) -> str:
        """Read a reply; no reply in time raises InstrumentTimeoutError."""
        with translated_io_errors(self.name):
            return super().read(**kwargs)

    def check_set_errors(self) -> list:
        """Read the whole error queue; raise InstrumentCommandError for its first entry."""
        errors = self.check_errors()
        if errors:
            code, message = errors[0]
            others = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise InstrumentCommandError(
                self.name, f"{int(code)}, {str(message).strip(chr(34))}{others}", code=int(code)
            )
        return errors
