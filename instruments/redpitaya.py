"""Red Pitaya STEMlab 125-14 digitiser: the board's SCPI server (TCP 5000), fast inputs IN1, IN2.

Protocol (redpitaya.readthedocs.io, SCPI command list ``commands-acq``; server source
RedPitaya/RedPitaya ``scpi-server/src``; official client ``redpitaya_scpi_core.py``):

- Raw socket ``TCPIP::<host>::5000::SOCKET``; commands and replies end in CR LF.
- Acquisition: ``ACQ:DEC`` (1, 2, 4, …, 65536; f_s = 125 MHz / decimation), ``ACQ:START``,
  ``ACQ:TRig NOW``, poll ``ACQ:TRig:STAT?`` until ``TD`` and ``ACQ:TRig:FILL?`` until ``1``, then
  ``ACQ:SOUR<n>:DATA?`` (16 384 samples, oldest first) or a part of it.
- ``ACQ:DATA:FORMAT BIN`` sends IEEE 488.2 blocks ``#<d><length><payload>`` of big-endian int16
  ADC codes (``ACQ:DATA:Units RAW``) or float32 volts (``VOLTS``); volts = code × full scale /
  8192, full scale 1 V (LV jumper) or 20 V (HV), as ``ACQ:SOUR<n>:GAIN`` tells the server.
- Errors: ``*STB?`` bit 2 set → read ``SYST:ERR:NEXT?`` until ``0,…``. Codes 9000 + n and
  9500 + n are the board's, negative codes the SCPI parser's. A query the board refuses gets no
  reply at all, so a read timeout is followed by a look at the error queue.

This extends pymeasure's `RedPitayaScpi` (digital lines, LEDs, slow analog I/O, board time and
name are reused unchanged) and overrides what is wrong there for this use:

- Binary data: pymeasure's ``AnalogInputFastChannel.get_data`` decodes the payload as native
  int64 and rescales it as unsigned 16-bit; the server sends big-endian int16 or float32.
- Validators: pymeasure truncates a trigger delay or level silently and its errors do not name
  the setting; here out-of-range input is refused before anything is sent, naming the setting,
  the value and what is allowed.
- Errors: pymeasure reads ``SYST:ERR?`` and splits the message at every comma; here the board's
  own sequence (``*STB?`` then ``SYST:ERR:NEXT?``) and `InstrumentCommandError` with the code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from hotspin.analysis.checks import ParameterError, check_positive, check_range
from hotspin.instruments.errors import (
    GarbledReplyError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    LinkLostError,
)
from hotspin.instruments.ieee_block import read_block
from hotspin.instruments.validators import named_choice, named_range
from pymeasure.adapters import Adapter
from pymeasure.instruments import Instrument
from pymeasure.instruments.redpitaya.redpitaya_scpi import AnalogInputFastChannel, RedPitayaScpi
from pyvisa import constants
from pyvisa.errors import VisaIOError

ADC_CLOCK_Hz = 125e6
BUFFER_SIZE = 16384
CODES_PER_FULL_SCALE = 8192  # signed 14-bit codes: ±2¹³ over ± full scale
FULL_SCALE_V = {"LV": 1.0, "HV": 20.0}  # rp_hw-profiles, STEMlab 125-14: full scale 1 V, gain ×20
DECIMATIONS = tuple(2**k for k in range(17))
TERMINATOR = "\r\n"
ERROR_QUEUE_BIT = 0x04  # *STB? bit 2, "error/event queue message available"
# The server keeps 16 parser errors plus its own; stop reading a queue that never empties.
MAX_ERRORS_READ = 64
# (data type as sent, dtype of the returned array) for each ACQ:DATA:Units setting.
SAMPLE_TYPES = {"RAW": (">i2", np.int16), "VOLTS": (">f4", np.float32)}


@dataclass(frozen=True)
class Acquisition:
    """Simultaneous records of the fast inputs: the sample rate and each input's voltages."""

    sample_rate_Hz: float
    voltages_V: dict[int, np.ndarray]


def _check_count(name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is a whole number in [low, high], else raise ParameterError."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise ParameterError(f"{name} = {value!r} is not a whole number in [{low}, {high}]")
    check_range(name, value, low, high)
    return int(value)


class FastInput(AnalogInputFastChannel):
    """A fast analog input (IN1 or IN2): 14 bits, ±1 V (LV) or ±20 V (HV) by a jumper."""

    gain = Instrument.control(
        "ACQ:SOUR{ch}:GAIN?",
        "ACQ:SOUR{ch}:GAIN %s",
        """Control the input range the server scales by ('LV' ±1 V or 'HV' ±20 V).

        Set it to match the input's jumper: the gain setting only scales codes to volts.""",
        validator=named_choice("gain"),
        values=tuple(FULL_SCALE_V),
        check_set_errors=True,
    )

    @property
    def full_scale_V(self) -> float:
        """Get the full-scale voltage of this input's range setting, in V."""
        return FULL_SCALE_V[self.gain]

    def read_codes(self, n: int | None = None, start: int | None = None) -> np.ndarray:
        """Get ADC codes (int16, RAW units) of the last acquisition, oldest first.

        With ``n`` None the whole buffer; with ``n`` its oldest ``n`` samples; with ``start`` the
        ``n`` samples from that position of the circular buffer.
        """
        return self._read("RAW", n, start)

    def read_voltages(self, n: int | None = None, start: int | None = None) -> np.ndarray:
        """Get voltages (float32, scaled by the server) of the last acquisition, oldest first."""
        return self._read("VOLTS", n, start)

    def get_data(self, npts: int | None = None, format: str = "ASCII") -> np.ndarray:
        """Get the oldest ``npts`` samples (all if None) in the board's present units.

        Overridden for ``format='BIN'``: pymeasure decodes the block as native int64.
        """
        if format != "BIN":
            return super().get_data(npts, format)
        return self._read(self.parent.acq_units, npts, None)

    def _read(self, units: str, n: int | None, start: int | None) -> np.ndarray:
        """Query one buffer part in binary ``units`` and decode its block."""
        if start is not None:
            _check_count("start", start, 0, BUFFER_SIZE - 1)
            if n is None:
                raise ParameterError("n is required with start (samples from that position)")
        if n is not None:
            _check_count("n", n, 1, BUFFER_SIZE)
        if start is not None:
            query = f"ACQ:SOUR{{ch}}:DATA:STArt:N? {start:d},{n:d}"
        elif n is not None:
            query = f"ACQ:SOUR{{ch}}:DATA:Old:N? {n:d}"
        else:
            query = "ACQ:SOUR{ch}:DATA?"
        # Format and units travel on the query's line: the server runs a line as a whole, and the
        # units are shared by every client of the board, so nothing can change them in between.
        parent = self.parent
        parent.write(f"ACQ:DATA:FORMAT BIN;:ACQ:DATA:Units {units};:{self.insert_id(query)}")
        payload = parent.read_block()
        wire, dtype = SAMPLE_TYPES[units]
        expected = BUFFER_SIZE if n is None else n
        if len(payload) != expected * np.dtype(wire).itemsize:
            raise GarbledReplyError(
                parent.name, f"expected {expected} samples, got {len(payload)} bytes"
            )
        return np.frombuffer(payload, dtype=wire).astype(dtype)


class RedPitaya(RedPitayaScpi):
    """Red Pitaya STEMlab 125-14 over its SCPI server: decimation, trigger, two fast inputs.

    ``sleep`` is what waiting for the buffer uses; tests pass a simulated clock's sleep.
    """

    analog_in = Instrument.MultiChannelCreator(FastInput, (1, 2), prefix="ain")

    def __init__(
        self,
        adapter: Adapter | str,
        name: str = "Red Pitaya STEMlab 125-14",
        sleep: Callable[[float], None] = time.sleep,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("timeout", 2000)
        super().__init__(
            adapter, name=name, read_termination=TERMINATOR, write_termination=TERMINATOR, **kwargs
        )
        self._sleep = sleep
        self._reading_errors = False

    decimation = Instrument.control(
        "ACQ:DEC?",
        "ACQ:DEC %d",
        """Control the decimation (1, 2, 4, …, 65536); the sample rate is 125 MHz / decimation.""",
        validator=named_choice("decimation"),
        values=DECIMATIONS,
        cast=int,
        check_set_errors=True,
    )

    @property
    def sample_rate_Hz(self) -> float:
        """Control the sample rate in Hz (125 MHz / decimation; set one of those rates)."""
        return ADC_CLOCK_Hz / self.decimation

    @sample_rate_Hz.setter
    def sample_rate_Hz(self, value: float) -> None:
        rate = check_positive("sample_rate_Hz", value, "Hz")
        decimation = round(ADC_CLOCK_Hz / rate)
        if decimation not in DECIMATIONS or not math.isclose(
            ADC_CLOCK_Hz / decimation, rate, rel_tol=1e-9
        ):
            allowed = ", ".join(f"{ADC_CLOCK_Hz / d:g}" for d in DECIMATIONS)
            raise ParameterError(f"sample_rate_Hz = {rate:g} is not one of [{allowed}] Hz")
        self.decimation = decimation

    acq_units = Instrument.control(
        "ACQ:DATA:Units?",
        "ACQ:DATA:Units %s",
        """Control the units of the data the board sends: 'RAW' (ADC codes) or 'VOLTS'.""",
        validator=named_choice("acq_units"),
        values=("RAW", "VOLTS"),
        check_set_errors=True,
    )

    acq_format = Instrument.control(
        "ACQ:DATA:FORMAT?",
        "ACQ:DATA:FORMAT %s",
        """Control the data format of this connection: 'BIN' (binary blocks) or 'ASCII'.""",
        validator=named_choice("acq_format"),
        values=("BIN", "ASCII"),
        check_set_errors=True,
    )

    acq_trigger_source = Instrument.setting(
        "ACQ:TRig %s",
        """Set the trigger source: 'NOW', 'DISABLED', or an edge: CH1_PE, CH1_NE, CH2_PE, CH2_NE,
        EXT_PE, EXT_NE, AWG_PE, AWG_NE (PE rising, NE falling).""",
        validator=named_choice("acq_trigger_source"),
        values=RedPitayaScpi.TRIGGER_SOURCES,
    )

    acq_trigger_delay_samples = Instrument.control(
        "ACQ:TRig:DLY?",
        "ACQ:TRig:DLY %d",
        """Control the trigger delay in samples (−8192 to 8192): the buffer ends delay + 8192
        samples after the trigger, so 0 puts the trigger in the middle, 8192 at the start.""",
        validator=named_range("acq_trigger_delay_samples", "samples"),
        values=(-BUFFER_SIZE // 2, BUFFER_SIZE // 2),
        cast=int,
        check_set_errors=True,
    )

    acq_trigger_level = Instrument.control(
        "ACQ:TRig:LEV?",
        "ACQ:TRig:LEV %g",
        """Control the level of the edge triggers in V (within the HV range, ±20 V).""",
        validator=named_range("acq_trigger_level", "V"),
        values=(-FULL_SCALE_V["HV"], FULL_SCALE_V["HV"]),
        check_set_errors=True,
    )

    acq_trigger_hysteresis = Instrument.control(
        "ACQ:TRig:HYST?",
        "ACQ:TRig:HYST %g",
        """Control the edge triggers' hysteresis in V: before an edge counts, the input must be
        beyond the level by this much on the other side (the board's default is 0.005 V).""",
        validator=named_range("acq_trigger_hysteresis", "V"),
        values=(0.0, FULL_SCALE_V["HV"]),
        check_set_errors=True,
    )

    next_error = Instrument.measurement(
        "SYST:ERR:NEXT?",
        """Get the next error of the queue as (code, message); (0, 'No error') when empty.""",
        maxsplit=1,
        cast=str,
        get_process_list=lambda reply: (int(reply[0]), reply[1].strip('"')),
    )

    # --- errors and transport ---------------------------------------------------------------------
    def check_errors(self) -> list[tuple[int, str]]:
        """Read the error queue if *STB? flags it; raise InstrumentCommandError for any error."""
        self._reading_errors = True
        try:
            if not int(self.status) & ERROR_QUEUE_BIT:
                return []
            errors = []
            for _ in range(MAX_ERRORS_READ):
                code, message = self.next_error
                if code == 0:
                    break
                errors.append((code, message))
        finally:
            self._reading_errors = False
        if errors:
            text = "; ".join(f"{code}, {message}" for code, message in errors)
            raise InstrumentCommandError(self.name, text, code=errors[0][0])
        return errors

    def write(self, command: str, **kwargs: object) -> None:
        """Write one line (CR LF appended); a dropped connection raises LinkLostError."""
        try:
            super().write(command, **kwargs)
        except VisaIOError as error:
            raise LinkLostError(self.name, str(error)) from error

    def read(self, **kwargs: object) -> str:
        """Read one reply line without its CR LF; a silent board raises a specific error."""
        try:
            return super().read(**kwargs)
        except VisaIOError as error:
            raise self._read_failure(error) from error

    def read_block(self) -> bytes:
        """Read one IEEE 488.2 block by its length header (never up to a terminator)."""
        try:
            return read_block(self.adapter, TERMINATOR, self.name)
        except VisaIOError as error:
            raise self._read_failure(error) from error

    def _read_failure(self, error: VisaIOError) -> InstrumentError:
        """Return the error a failed read means: refused command, timeout or lost link."""
        if error.error_code != constants.StatusCode.error_timeout:
            return LinkLostError(self.name, str(error))
        self.adapter.flush_read_buffer()  # the rest of a late reply would garble the next one
        if not self._reading_errors:
            self.check_errors()  # the board answers nothing to a query it refused: say why
        return InstrumentTimeoutError(self.name, f"no reply within the timeout ({error})")

    # --- acquisition ------------------------------------------------------------------------------
    def acquire(
        self, channels: Sequence[int] = (1, 2), n: int = BUFFER_SIZE, timeout_s: float | None = None
    ) -> Acquisition:
        """Record ``n`` samples of each input now; return them in volts with the sample rate.

        Arms, triggers at once (NOW) with the whole buffer after the trigger (delay 8192: the
        pre-trigger half would hold stale samples unless the board had been armed long enough),
        waits for the buffer to fill (``timeout_s``, default twice the fill time + 1 s) and
        reads ADC codes, scaled by each input's range setting.
        """
        inputs = tuple(channels)
        if not inputs or len(set(inputs)) != len(inputs) or not set(inputs) <= {1, 2}:
            raise ParameterError(f"channels = {channels!r}: distinct inputs from [1, 2]")
        _check_count("n", n, 1, BUFFER_SIZE)
        if timeout_s is not None:
            check_positive("timeout_s", timeout_s, "s")
        decimation = self.decimation
        full_scale = {ch: self.analog_in[ch].full_scale_V for ch in inputs}
        fill_s = BUFFER_SIZE * decimation / ADC_CLOCK_Hz
        self.acq_trigger_delay_samples = BUFFER_SIZE // 2
        self.acquisition_start()
        self.acq_trigger_source = "NOW"
        self.check_errors()
        self._wait_until_filled(fill_s, 2 * fill_s + 1.0 if timeout_s is None else timeout_s)
        voltages = {
            ch: self.analog_in[ch].read_codes(n) * (full_scale[ch] / CODES_PER_FULL_SCALE)
            for ch in inputs
        }
        return Acquisition(ADC_CLOCK_Hz / decimation, voltages)

    def wait_for_buffer(self, timeout_s: float) -> None:
        """Wait until the armed acquisition has triggered and filled its buffer, or time out.

        For acquisitions armed by hand (an edge trigger, say); `acquire` waits by itself.
        """
        check_positive("timeout_s", timeout_s, "s")
        self._wait_until_filled(BUFFER_SIZE * self.decimation / ADC_CLOCK_Hz, timeout_s)

    def _wait_until_filled(self, fill_s: float, timeout_s: float) -> None:
        """Poll the trigger, then the fill state, a bounded number of times; never hang."""
        interval_s = min(max(fill_s / 4, 1e-3), 0.05)
        polls = max(1, math.ceil(max(timeout_s - fill_s, 0.0) / interval_s)) + 1
        self._sleep(fill_s)  # the buffer cannot be full any sooner
        triggered = False
        for _ in range(polls):
            triggered = triggered or self.acq_trigger_status
            if triggered and self.acq_buffer_filled:
                return
            self._sleep(interval_s)
        state = "buffer not filled" if triggered else "no trigger (ACQ:TRig:STAT? stays WAIT)"
        raise InstrumentTimeoutError(self.name, f"{state} after {timeout_s:g} s")
