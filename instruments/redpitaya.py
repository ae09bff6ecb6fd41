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
- Deep memory (OS 2.00-18 and later; "Deep Memory Mode", server ``acquire_axi.cpp``): the ADCs
  write into a DDR ring, one buffer per input placed by ``ACQ:AXI:SOUR<n>:SET:Buffer
  <address>,<bytes>`` inside the region ``ACQ:AXI:START?``/``ACQ:AXI:SIZE?``, enabled by
  ``ACQ:AXI:SOUR<n>:ENable ON`` and started by ``ACQ:START``; ``ACQ:AXI:SOUR<n>:Write:Pos?`` is
  the sample position the next sample goes to and ``ACQ:AXI:SOUR<n>:DATA:Start:N? <pos>,<n>``
  reads the ring, in ``ACQ:AXI:DATA:Units`` (RAW or VOLTS). `RedPitaya.stream` reads behind the
  write pointer; ``ACQ:DATA:BYTE:ORDER LEND`` spares the byte swap.
- Nagle's algorithm is switched off on the socket (`set_tcp_nodelay`).

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

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
from hotspin.instruments.resilience import link_failure
from hotspin.instruments.tcp_nodelay import set_tcp_nodelay
from hotspin.instruments.validators import named_choice, named_range
from pymeasure.adapters import Adapter
from pymeasure.instruments import Instrument
from pymeasure.instruments.redpitaya.redpitaya_scpi import AnalogInputFastChannel, RedPitayaScpi
from pyvisa import constants
from pyvisa.errors import InvalidSession, VisaIOError

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
# acq_axi_SetDecimationFactor: 1, 2, 4, 8, then any factor from 16 to 65536.
AXI_SMALL_DECIMATIONS = (1, 2, 4, 8)
AXI_MAX_DECIMATION = 65536
AXI_BUFFER_ALIGN_BYTES = 16  # acq_axi_SetBufferBytes: a buffer's size is a multiple of 16 bytes
STREAM_BLOCK_SAMPLES = 1 << 16  # samples per input read at a time: 128 kB blocks


@dataclass(frozen=True)
class StreamBlock:
    """Consecutive samples of a continuous record: ADC codes of both inputs from one index."""

    first_index: int  # index of the first sample, counted from the start of the record
    codes: np.ndarray  # (2, n) int16: IN1, IN2

    @property
    def end_index(self) -> int:
        """Return the index after the last sample of the block."""
        return self.first_index + self.codes.shape[1]


@dataclass(frozen=True)
class StreamGap:
    """Samples the record lost: the writer overwrote them before they were read."""

    first_index: int  # index of the first missing sample
    length: int  # number of consecutive missing samples


@dataclass
class DeepMemoryStream:
    """A running deep-memory record: its rates and scales, and its blocks and gaps in order.

    Iterate it for `StreamBlock` and `StreamGap` items (never a silent drop: every index up to
    the last one yielded is in exactly one of them); `close` stops the board's writer.
    """

    sample_rate_Hz: float
    decimation: int
    volts_per_code: tuple[float, float]  # of IN1 and IN2, from their range settings
    start_time_s: float  # clock time of ACQ:START (the first sample, within the write latency)
    ring_samples: int  # samples per input the board's ring holds
    _items: Iterator[StreamBlock | StreamGap] = field(repr=False)
    _close: Callable[[], None] = field(repr=False)

    def __iter__(self) -> Iterator[StreamBlock | StreamGap]:
        return self._items

    def close(self) -> None:
        """Stop the board's writer and release both buffers."""
        self._close()


@dataclass(frozen=True)
class Acquisition:
    """Simultaneous records of the fast inputs: the sample rate and each input's voltages."""

    sample_rate_Hz: float
    voltages_V: dict[int, np.ndarray]


def check_axi_decimation(value: object, values: object = None) -> int:
    """Return ``value`` if the deep-memory writer accepts it as a decimation, else raise."""
    if (
        isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and (value in AXI_SMALL_DECIMATIONS or 16 <= value <= AXI_MAX_DECIMATION)
    ):
        return int(value)
    raise ParameterError(
        f"decimation = {value!r}: one of 1, 2, 4, 8 or a whole number from 16 to"
        f" {AXI_MAX_DECIMATION}"
    )


def _whole_reply(value: object) -> int:
    """Return a reply that pymeasure cast to int; a garbled one (left a string) is a ValueError,
    which the link repeats."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


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
        wire = parent.block_byte_order + wire[1:]
        expected = BUFFER_SIZE if n is None else n
        if len(payload) != expected * np.dtype(wire).itemsize:
            raise GarbledReplyError(
                parent.name, f"expected {expected} samples, got {len(payload)} bytes"
            )
        return np.frombuffer(payload, dtype=wire).astype(dtype)


class RedPitaya(RedPitayaScpi):
    """Red Pitaya STEMlab 125-14 over its SCPI server: decimation, trigger, two fast inputs.

    ``sleep`` is what waiting for the buffer uses; tests pass a simulated clock's sleep.
    ``now`` is the clock `stream` counts the deep-memory writer's laps with: it must run at the
    board's rate (the wall clock for a real board, the simulated lab's clock for a simulated one).
    """

    analog_in = Instrument.MultiChannelCreator(FastInput, (1, 2), prefix="ain")

    def __init__(
        self,
        adapter: Adapter | str,
        name: str = "Red Pitaya STEMlab 125-14",
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.monotonic,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("timeout", 2000)
        super().__init__(
            adapter, name=name, read_termination=TERMINATOR, write_termination=TERMINATOR, **kwargs
        )
        self._sleep = sleep
        self._now = now
        self._reading_errors = False
        #: Byte order of this connection's binary blocks: big-endian until `stream` sets LEND
        #: (``ACQ:DATA:BYTE:ORDER`` holds per connection, for the ordinary buffer's reads too).
        self.block_byte_order = ">"
        #: True when Nagle's algorithm is off on the board's socket (False off TCP).
        self.tcp_nodelay = set_tcp_nodelay(self.adapter)

    decimation = Instrument.control(
        "ACQ:DEC?",
        "ACQ:DEC %d",
        """Control the decimation (1, 2, 4, …, 65536); the sample rate is 125 MHz / decimation.""",
        validator=named_choice("decimation"),
        values=DECIMATIONS,
        cast=int,
        get_process=_whole_reply,
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

    acq_averaging = Instrument.control(
        "ACQ:AVG?",
        "ACQ:AVG %s",
        """Control whether a decimated sample is the mean of the ADC samples it replaces (True,
        the board's default) or one of them (False).""",
        validator=named_choice("acq_averaging"),
        values={True: "ON", False: "OFF"},
        map_values=True,
        check_set_errors=True,
    )

    acq_trigger_delay_ns = Instrument.control(
        "ACQ:TRig:DLY:NS?",
        "ACQ:TRig:DLY:NS %d",
        """Control the trigger delay in ns (kept in time when the decimation changes).""",
        validator=named_range("acq_trigger_delay_ns", "ns"),
        values=(-(2**31), 2**31 - 1),
        cast=int,
        get_process=_whole_reply,
        check_set_errors=True,
    )

    board_name = Instrument.measurement(
        "SYSTem:BRD:Name?",
        """Get the board model's name (rp_hw-profiles), e.g. 'STEMlab 125-14 v1.1'.""",
        cast=str,
    )

    os_version = Instrument.measurement(
        "SYSTem:VERSion?",
        """Get the version of the board's OS (ecosystem), e.g. '2.00-18'.""",
        cast=str,
    )

    axi_decimation = Instrument.control(
        "ACQ:AXI:DEC?",
        "ACQ:AXI:DEC %d",
        """Control the deep-memory decimation (1, 2, 4, 8 or 16 … 65536).""",
        validator=check_axi_decimation,
        cast=int,
        get_process=_whole_reply,
        check_set_errors=True,
    )

    @property
    def axi_region(self) -> tuple[int, int]:
        """Get the DDR region reserved for deep memory: (start address, size in bytes)."""
        return int(self.ask("ACQ:AXI:START?")), int(self.ask("ACQ:AXI:SIZE?"))

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
        get_process=_whole_reply,
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
        except InvalidSession as error:  # a link closed after a fault, written to on the way out
            raise LinkLostError(self.name, "the connection is closed") from error

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
        if error.error_code == constants.StatusCode.error_connection_lost:  # the peer closed it
            return link_failure(self.name, error)  # worded as every link words it
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

    # --- deep memory -----------------------------------------------------------------------------
    def stream(
        self,
        decimation: int = 64,
        n_samples: int | None = None,
        block_samples: int = STREAM_BLOCK_SAMPLES,
        ring_bytes: int | None = None,
    ) -> DeepMemoryStream:
        """Start a gap-accounted continuous record of both inputs from the deep-memory ring.

        Splits the reserved region (or its first ``ring_bytes``) into one ring per input,
        starts the writer with no trigger (it then writes until stopped) and returns the stream.
        Its items are `StreamBlock` (≤ ``block_samples`` per input, read behind the write
        pointer) and `StreamGap` (samples overwritten before they could be read), in index
        order, until ``n_samples`` indices have been accounted for (None: until closed).
        """
        decimation = check_axi_decimation(decimation)
        block_samples = _check_count("block_samples", block_samples, 16, 1 << 22)
        if n_samples is not None:
            n_samples = _check_count("n_samples", n_samples, 1, 2**62)
        region_start, region_bytes = self.axi_region
        if ring_bytes is not None:
            _check_count("ring_bytes", ring_bytes, 4 * AXI_BUFFER_ALIGN_BYTES, region_bytes)
            region_bytes = ring_bytes
        half = region_bytes // 2 // AXI_BUFFER_ALIGN_BYTES * AXI_BUFFER_ALIGN_BYTES
        ring = half // 2  # int16 samples per input
        if ring < 2 * block_samples:
            raise ParameterError(
                f"block_samples = {block_samples}: at most half of a ring of {ring} samples"
            )
        scales = tuple(self.analog_in[ch].full_scale_V / CODES_PER_FULL_SCALE for ch in (1, 2))
        self.write("ACQ:STOP")
        self.write(f"ACQ:AXI:DEC {decimation}")
        self.write("ACQ:AXI:DATA:Units RAW")
        self.write("ACQ:DATA:FORMAT BIN")
        self.write("ACQ:DATA:BYTE:ORDER LEND")  # this connection's blocks: no byte swap
        self.block_byte_order = "<"
        self.write("ACQ:TRig DISABLED")
        for channel, address in ((1, region_start), (2, region_start + half)):
            self.write(f"ACQ:AXI:SOUR{channel}:SET:Buffer {address},{half}")
            self.write(f"ACQ:AXI:SOUR{channel}:ENable ON")
        self.check_errors()
        before = self._now()
        self.write("ACQ:START")
        start_s = 0.5 * (before + self._now())
        fs = ADC_CLOCK_Hz / decimation
        reader = _RingReader(self, ring, fs, start_s, block_samples, n_samples)

        def close() -> None:
            self.write("ACQ:STOP")
            self.write("ACQ:AXI:SOUR1:ENable OFF")
            self.write("ACQ:AXI:SOUR2:ENable OFF")

        return DeepMemoryStream(
            fs, decimation, (scales[0], scales[1]), start_s, ring, iter(reader), close
        )

    def read_ring(self, channel: int, position: int, n: int) -> np.ndarray:
        """Get ``n`` int16 codes of an input's deep-memory ring from ``position`` (LEND, RAW)."""
        self.write(f"ACQ:AXI:SOUR{channel}:DATA:Start:N? {position:d},{n:d}")
        payload = self.read_block()
        if len(payload) != 2 * n:
            raise GarbledReplyError(self.name, f"expected {n} samples, got {len(payload)} bytes")
        return np.frombuffer(payload, dtype="<i2")


# How long the deep-memory write pointer may stand still before the stream calls the writer stopped.
WRITER_STALL_S = 2.0


class _RingReader:
    """Reads a deep-memory ring behind its write pointer and accounts for every sample.

    The board shows only the pointer's position within the ring, so how many laps it has made
    comes from the clock: the writer has written about (now − start) × f_s samples, and the one
    total that matches the position and lies nearest that estimate is the count (exact while
    the clock's error stays below half a ring, 0.13 s at decimation 64 in 2 MiB). A block is
    read only after the pointer is known; the pointer read after it tells which of its samples
    the writer may already have overwritten (any index below written − ring): those become a gap.
    Consecutive losses join into one gap, up to a ring's length while no read survives.
    """

    def __init__(
        self,
        board: RedPitaya,
        ring: int,
        sample_rate_Hz: float,
        start_s: float,
        block_samples: int,
        n_samples: int | None,
    ) -> None:
        self.board = board
        self.ring = ring
        self.fs = sample_rate_Hz
        self.start_s = start_s
        self.block = block_samples
        self.end = math.inf if n_samples is None else n_samples
        self.written = 0
        self._position: int | None = None  # the write pointer last read, and when it moved
        self._moved_s = start_s

    def written_now(self) -> int:
        """Return how many samples per input the board has written (pointer + lap count).

        A write pointer that stands still for `WRITER_STALL_S` (and at least four blocks) means
        the writer stopped (acquisition stopped behind the stream's back, a board reset): that
        is an InstrumentTimeoutError naming the board, never a wait without end.
        """
        position = int(self.board.ask("ACQ:AXI:SOUR1:Write:Pos?"))
        now = self.board._now()
        if position != self._position:
            self._position, self._moved_s = position, now
        elif now - self._moved_s > max(WRITER_STALL_S, 4 * self.block / self.fs):
            raise InstrumentTimeoutError(
                self.board.name,
                f"the deep-memory write pointer stood at {position} for "
                f"{now - self._moved_s:.1f} s: the writer has stopped",
            )
        estimate = (now - self.start_s) * self.fs
        total = position + self.ring * round((estimate - position) / self.ring)
        while total < self.written:  # the count never goes back
            total += self.ring
        self.written = total
        return total

    def __iter__(self) -> Iterator[StreamBlock | StreamGap]:
        index = 0
        lost_from = None  # first index of the gap being accumulated (consecutive losses join)
        written = self.written_now()
        while index < self.end:
            if written - index < min(self.block, self.end - index):
                # Wait for one block (or the rest): a quarter of it at a time.
                self.board._sleep(min(self.block, self.end - index) / 4 / self.fs)
                written = self.written_now()
                continue
            # Keep one block of room: the writer moves on while the block travels.
            oldest = written - self.ring + self.block
            if index < oldest:
                lost_from = index if lost_from is None else lost_from
                index = int(min(oldest, self.end))
                continue
            n = int(min(self.block, written - index, self.end - index))
            position = index % self.ring
            codes = np.stack([self.board.read_ring(ch, position, n) for ch in (1, 2)])
            written = self.written_now()
            spoiled = int(min(max(written - self.ring - index, 0), n))
            if spoiled:
                lost_from = index if lost_from is None else lost_from
            if spoiled == n and index + n - lost_from >= self.ring:
                # Lapped at every read (a writer far faster than the link): say so, a ring's
                # worth at a time, rather than read on without a word to the consumer.
                yield StreamGap(lost_from, index + n - lost_from)
                lost_from = None
            if spoiled < n:
                if lost_from is not None:
                    yield StreamGap(lost_from, index + spoiled - lost_from)
                    lost_from = None
                yield StreamBlock(index + spoiled, codes[:, spoiled:])
            index += n
        if lost_from is not None:
            yield StreamGap(lost_from, index - lost_from)
