"""The simulated Red Pitaya's acquisition memory: ADC quantisation and the deep-memory (DDR) ring.

The command table lives in `hotspin.simulators.redpitaya`; this module is what its commands act
on. `TriggeredCapture` is the 16 384-sample buffer of triggered acquisitions. `DeepMemory` is
the board's deep-memory acquisition (OS 2.00-18 and later, "Deep Memory Mode" in the Red Pitaya
documentation; API in RedPitaya/RedPitaya ``rp-api/api/src`` ``acq_handler.cpp`` ``acq_axi_*``
and ``oscilloscope.cpp`` ``osc_axi_*``):

- The OS reserves one DDR region (``ACQ:AXI:START?`` its address, ``ACQ:AXI:SIZE?`` its bytes;
  2 MiB here, configurable). Each input writes into its own buffer inside it, set by
  ``ACQ:AXI:SOUR<n>:SET:Buffer <address>,<bytes>`` (``acq_axi_SetBufferSamples``: the address at
  least the region's start and ≥ 8, the end inside the region, the size a multiple of 16 bytes).
  Buffers are views of the one region, so overlapping buffers overwrite each other, as in DDR.
- ``ACQ:START`` with a buffer enabled (``ACQ:AXI:SOUR<n>:ENable ON``) starts the AXI writer: from
  then on every decimated sample of both inputs goes into the ring at full rate, in simulated
  time, wrapping at the buffer's end, until ``ACQ:STOP`` or until ``Trig:Dly`` samples after the
  trigger (then ``ACQ:AXI:SOUR<n>:Trig:Fill?`` is 1). With the trigger disabled the ring is written
  for as long as the acquisition runs: a reader that keeps behind the write pointer records
  without gaps, one that falls a whole ring behind loses the overwritten samples.
- ``Write:Pos?`` is the sample position within the input's buffer where the next sample goes
  (the register ``cha_axi_wr_ptr_cur`` is a byte address; ``osc_axi_GetWritePointerChA`` returns
  (address − buffer start) / 2); ``Trig:Pos?`` the position of the trigger sample.

The samples come from `SimulatedLab.record`, behind the detection chain of the lab's PDB450A
and this decimation with the board's averaging (`ACQ:AVG`, `analysis.detection`), in chunks
that follow one another exactly (the spin state carries over, no seams). A chunk is generated
when the clock first reaches it, so a change of the apparatus shows up within one chunk
(≤ 20 ms of signal). Stretches that would be
overwritten before anyone could read them are not generated: the atoms evolve exactly through
them (`SimulatedLab.record` advances the state), and the ring holds what it would.

A reader that has fallen more than a ring behind (a client streaming from a lab whose clock runs
many times faster than the link) would otherwise make the board generate a whole ring at every
question, most of it overwritten again before the next. Once the ring has lapped what was
generated, the writer only counts until a read catches up with it: the samples are generated
when a read (or ``ACQ:STOP``, a new ``ACQ:START``, a buffer change) needs them, from the oldest
sample still in the ring up to the newest one asked for, in order, so no sample is generated
twice or out of turn. They then see the apparatus of that moment rather than of their write
time, as a chunk generated ahead does.

Both generate with one BLAS thread (threadpoolctl): the spin model's small expm, eig and thin
products stall on OpenBLAS's worker threads on a busy machine (10–24 ms per expm, issue 13).
While the apparatus is unchanged the lab draws one Gaussian per sample for the atoms
(`AngleNoise`'s innovations form) and rebuilds nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.simulators.lab import SimulatedLab
from threadpoolctl import ThreadpoolController

ADC_CLOCK_Hz = 125e6
BUFFER_SIZE = 16384
CODES_PER_FULL_SCALE = 8192  # 14-bit signed codes span ±2¹³ over ± full scale
FULL_SCALE_V = {"LV": 1.0, "HV": 20.0}
# The level triggers: (input index, +1 for the positive edge, −1 for the negative one).
LEVEL_TRIGGERS = {"CH1_PE": (0, 1), "CH1_NE": (0, -1), "CH2_PE": (1, 1), "CH2_NE": (1, -1)}
MAX_WATCHED_SAMPLES = 4 * 16384  # looked at per question; an older stretch is skipped
# The OS-reserved region. Its address comes from the board's device tree; this one is the
# simulation's own choice. Its size is what Red Pitaya OS 2.x reserves by default.
DDR_REGION_START = 0x1000000
DDR_REGION_BYTES = 2 * 1024 * 1024
# acq_axi_SetDecimationFactor: 1, 2, 4, 8, then any factor from 16 to 65536.
AXI_DECIMATIONS = (1, 2, 4, 8)
AXI_MAX_DECIMATION = 65536
DEFAULT_AXI_TRIGGER_DELAY = 1  # acq_SetDefault: acq_axi_SetTriggerDelay(channel, 1)
CHUNK_DURATION_S = 0.02  # signal generated at a time: the lag of an apparatus change
MAX_CHUNK_SAMPLES = 1 << 16
MIN_CHUNK_SAMPLES = 256
# Found once: a fresh threadpool_limits scans the loaded libraries each time (0.7 ms a call).
_THREADPOOLS = ThreadpoolController()


def adc_codes(volts: np.ndarray, jumper: str) -> np.ndarray:
    """Quantise input voltages to 14-bit codes of the jumper's range, clipping at its ends."""
    codes = np.rint(volts * (CODES_PER_FULL_SCALE / FULL_SCALE_V[jumper]))
    np.clip(codes, -CODES_PER_FULL_SCALE, CODES_PER_FULL_SCALE - 1, out=codes)
    return codes.astype(np.int16)


def valid_axi_decimation(decimation: int) -> bool:
    """Return True for a decimation the deep-memory writer accepts."""
    return decimation in AXI_DECIMATIONS or 16 <= decimation <= AXI_MAX_DECIMATION


def schmitt_edge(signal: np.ndarray, level: int, hysteresis: int, ready: bool) -> tuple[int, bool]:
    """Find a level trigger's edge in ``signal`` (codes, sign-flipped for a falling edge).

    The input must first be below ``level − hysteresis``, then reach ``level``. Returns the index
    of the first such sample (−1 for none) and whether the input is armed at the end.
    """
    start = 0
    if not ready:
        below = np.flatnonzero(signal < level - hysteresis)
        if below.size == 0:
            return -1, False
        start = int(below[0]) + 1
    reached = np.flatnonzero(signal[start:] >= level)
    if reached.size:
        return start + int(reached[0]), True
    return -1, True


@dataclass
class _Capture:
    """One triggered acquisition: the samples the FPGA writes into the circular buffer."""

    armed_s: float  # samples before ACQ:START are never written
    start_s: float  # time of the first sample of the data buffer
    sample_rate_Hz: float
    codes: np.ndarray  # (2, BUFFER_SIZE) int16, oldest first
    first_position: int  # buffer position of the first sample
    stopped_s: float = math.inf  # ACQ:STOP ends the writing

    def written(self, now_s: float) -> tuple[int, int]:
        """Return the [first, end) sample indices written by ``now_s``."""
        fs = self.sample_rate_Hz
        # A part-per-million of a sample absorbs rounding in clocks that step by exact durations.
        first = math.ceil((self.armed_s - self.start_s) * fs - 1e-6)
        end = math.floor((min(now_s, self.stopped_s) - self.start_s) * fs + 1e-6) + 1
        return min(max(first, 0), BUFFER_SIZE), min(max(end, 0), BUFFER_SIZE)


class AcquisitionSettings(Protocol):
    """The board's acquisition settings a triggered capture follows (the SCPI server's)."""

    decimation: int
    trigger_source: str
    trigger_delay: int
    trigger_level_V: float
    trigger_hysteresis_V: float
    gains: list[str]
    averaging: bool  # ACQ:AVG: each decimated sample the mean of its D ADC samples


class TriggeredCapture:
    """The 16 384-sample circular buffer per input, written around a trigger in simulated time.

    The samples are written as simulated time passes (`lab.clock`), so the fill state turns
    true only once the post-trigger part has been acquired, and every data query until the
    next trigger reads the same buffer. The data buffer ends ``ACQ:TRig:DLY`` + 8192 samples
    after the trigger (trigger at sample 8192 for a delay of 0). Samples from before
    ``ACQ:START`` are never written: they keep the previous contents, as the FPGA writes only
    while armed. The level triggers watch the input's codes as a Schmitt trigger (see the
    board's module docstring); the capture clears ``settings.trigger_source`` when it fires, as
    the FPGA does.
    """

    def __init__(
        self, lab: SimulatedLab, jumpers: list[str], settings: AcquisitionSettings
    ) -> None:
        self.lab = lab
        self.jumpers = jumpers  # shared with the board: the inputs' range jumpers
        self.settings = settings
        self.memory = np.zeros((2, BUFFER_SIZE), dtype=np.int16)  # the circular buffer, codes
        self.write_position = BUFFER_SIZE - 1  # latest written sample (ACQ:WPOS?)
        self.trigger_position = 0  # sample at the trigger (ACQ:TPOS?)
        self.armed = False
        self.armed_s = self.lab.clock.now()
        self.triggered = False
        self.filled = False
        self._capture: _Capture | None = None
        # A level trigger's watch: the signal is examined up to this time; the codes just
        # before it (for the pre-trigger part) and the last sample of the trigger input.
        self._watched_s: float | None = None
        self._recent = np.zeros((2, 0), dtype=np.int16)
        self._edge_ready = False  # the input has been beyond the level by the hysteresis

    def read(self, channel: int, start: int, size: int) -> np.ndarray:
        """Return ``size`` codes of input ``channel`` from buffer position ``start``."""
        return _circular(self.memory[channel - 1], start % BUFFER_SIZE, min(size, BUFFER_SIZE))

    def stop(self) -> None:
        """Stop writing samples (ACQ:STOP): an unfinished capture keeps what it wrote."""
        self.armed = False
        if self._capture is not None:
            self._capture.stopped_s = min(self._capture.stopped_s, self.lab.clock.now())

    def arm(self) -> None:
        """Start writing samples and wait for the trigger (ACQ:START)."""
        self._watched_s = None  # a level trigger still waiting is replaced, not looked for
        self.commit()
        self._capture = None
        self.armed = True
        self.armed_s = self.lab.clock.now()
        self.triggered = False
        self.filled = False
        self.start_watch()

    def _samples_after_trigger(self) -> int:
        """Return how many samples of the data buffer are written from the trigger on."""
        return max(0, self.settings.trigger_delay + BUFFER_SIZE // 2)

    def _codes(self, n: int, fs: float, start_s: float) -> tuple[float, np.ndarray]:
        """Digitise ``n`` samples of both inputs from ``start_s``; return the true start, codes."""
        chain = self.lab.detection_chain(self.settings.decimation, self.settings.averaging)
        with _THREADPOOLS.limit(limits=1, user_api="blas"):  # the model's small matrices
            record = self.lab.record(n, fs, start_s, chain)
        inputs = (record.v_diff, record.v_sum)
        codes = np.stack([adc_codes(v, j) for v, j in zip(inputs, self.jumpers, strict=True)])
        return record.start_s, codes

    def trigger_now(self) -> None:
        """Fire the trigger: record the polarimeter for the whole data buffer around it."""
        fs = ADC_CLOCK_Hz / self.settings.decimation
        before = BUFFER_SIZE - self._samples_after_trigger()
        start_s, codes = self._codes(BUFFER_SIZE, fs, self.lab.clock.now() - before / fs)
        self._fire(start_s, codes, self.armed_s)

    def _fire(self, start_s: float, codes: np.ndarray, written_from_s: float) -> None:
        """Trigger on the data buffer ``codes`` that starts at ``start_s`` (samples before
        ``written_from_s`` are never written)."""
        fs = ADC_CLOCK_Hz / self.settings.decimation
        position = round(start_s * fs) % BUFFER_SIZE  # the ADC writes continuously
        self._capture = _Capture(written_from_s, start_s, fs, codes, position)
        after = self._samples_after_trigger()
        self.trigger_position = (position + BUFFER_SIZE - after) % BUFFER_SIZE
        self.triggered = True
        self.settings.trigger_source = (
            "DISABLED"  # the FPGA clears the source once it has triggered
        )
        self._watched_s = None

    def start_watch(self) -> None:
        """Begin watching the trigger input, if armed with a level trigger."""
        if self.armed and not self.triggered and self.settings.trigger_source in LEVEL_TRIGGERS:
            self._watched_s = self.lab.clock.now()
            self._recent = np.zeros((2, 0), dtype=np.int16)
            self._edge_ready = False

    def watch(self) -> None:
        """Look for the level trigger's edge in the signal acquired since the last look."""
        watching = (
            self.armed and not self.triggered and self.settings.trigger_source in LEVEL_TRIGGERS
        )
        if self._watched_s is None or not watching:
            return
        fs = ADC_CLOCK_Hz / self.settings.decimation
        n = math.floor((self.lab.clock.now() - self._watched_s) * fs + 1e-6)
        if n <= 0:
            return
        if n > MAX_WATCHED_SAMPLES:  # skip the older stretch: nothing of it is kept
            self._watched_s += (n - MAX_WATCHED_SAMPLES) / fs
            self._recent = np.zeros((2, 0), dtype=np.int16)
            self._edge_ready = False
            n = MAX_WATCHED_SAMPLES
        start_s, codes = self._codes(n, fs, self._watched_s)
        channel, edge = LEVEL_TRIGGERS[self.settings.trigger_source]
        codes_per_V = CODES_PER_FULL_SCALE / FULL_SCALE_V[self.settings.gains[channel]]
        level = round(self.settings.trigger_level_V * codes_per_V)
        hysteresis = round(self.settings.trigger_hysteresis_V * codes_per_V)
        # A Schmitt trigger: the input must first be beyond the level by the hysteresis on the
        # far side, then reach the level. Sign-flipped for the negative edge, both edges read
        # "from below level − hysteresis to at or above level".
        signal = edge * codes[channel].astype(np.int32)
        below = np.flatnonzero(signal < edge * level - hysteresis)
        ready = 0 if self._edge_ready else (int(below[0]) + 1 if below.size else n)
        reached = np.flatnonzero(signal[ready:] >= edge * level)
        if reached.size == 0:
            self._edge_ready = ready < n or self._edge_ready
            self._recent = np.concatenate((self._recent, codes), axis=1)[:, -BUFFER_SIZE:]
            self._watched_s = start_s + n / fs
            return
        trigger = ready + int(reached[0])
        after = self._samples_after_trigger()
        history = np.concatenate((self._recent, codes[:, :trigger]), axis=1)
        history = history[:, history.shape[1] - min(history.shape[1], BUFFER_SIZE - after) :]
        following = codes[:, trigger:]
        if following.shape[1] < after:  # the rest of the buffer is still to come
            _, more = self._codes(after - following.shape[1], fs, start_s + n / fs)
            following = np.concatenate((following, more), axis=1)
        missing = BUFFER_SIZE - after - history.shape[1]  # skipped: never written
        buffer = np.concatenate(
            (np.zeros((2, missing), dtype=np.int16), history, following[:, :after]), axis=1
        )
        trigger_s = start_s + trigger / fs
        written_from = max(self.armed_s, trigger_s - history.shape[1] / fs)
        self._fire(trigger_s - (BUFFER_SIZE - after) / fs, buffer, written_from)

    def commit(self) -> None:
        """Write the samples the capture has acquired by now into the buffer."""
        self.watch()
        capture = self._capture
        if capture is None:
            return
        first, end = capture.written(self.lab.clock.now())
        if end > first:
            positions = (capture.first_position + np.arange(first, end)) % BUFFER_SIZE
            self.memory[:, positions] = capture.codes[:, first:end]
            self.write_position = int(positions[-1])
        if end == BUFFER_SIZE:
            self.filled = True
        if end == BUFFER_SIZE or capture.stopped_s < math.inf:
            self._capture = None  # nothing more will be written


def _circular(buffer: np.ndarray, start: int, size: int) -> np.ndarray:
    """Return ``size`` elements of a circular buffer from ``start``, wrapping at its end."""
    end = start + size
    if end <= buffer.size:
        return buffer[start:end]
    return np.concatenate((buffer[start:], buffer[: end - buffer.size]))


@dataclass
class AxiBuffer:
    """One input's buffer inside the DDR region, as ``ACQ:AXI:SOUR<n>:SET:Buffer`` set it."""

    address: int
    samples: int = 0
    enabled: bool = False
    trigger_delay: int = DEFAULT_AXI_TRIGGER_DELAY
    trigger_index: int | None = None  # absolute sample index of the trigger


@dataclass
class _Writer:
    """The running AXI writer: when it started and how far it has written."""

    start_s: float
    sample_rate_Hz: float
    written: int = 0  # samples of each input written since the start
    generated: int = 0  # samples before this one hold their codes in the ring (≤ written)
    lapped: bool = False  # a reader fell a ring behind: generate on reads until it catches up
    stop_index: float = math.inf  # the writer stops before this sample (ACQ:STOP, trigger)
    pending: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), dtype=np.int16))
    pending_first: int = 0  # absolute index of pending[:, 0]


class DeepMemory:
    """The DDR region and its AXI writer, fed by the lab's polarimeter outputs (IN1, IN2)."""

    def __init__(
        self,
        lab: SimulatedLab,
        jumpers: list[str],
        region_bytes: int = DDR_REGION_BYTES,
        settings: AcquisitionSettings | None = None,
    ) -> None:
        if region_bytes < 64 or region_bytes % 16:
            raise ParameterError(
                f"region_bytes = {region_bytes!r}: a multiple of 16 bytes, at least 64"
            )
        self.lab = lab
        self.jumpers = jumpers  # shared with the board: the inputs' range jumpers
        # The board's settings, for ACQ:AVG: the AXI writer stores the samples of the same
        # decimator as the 16 384-sample buffer, whose averaging flag lives in the data
        # decimation register (an assumption: the Red Pitaya documentation names no other).
        self.settings = settings
        self.region_start = DDR_REGION_START
        self.region_bytes = int(region_bytes)
        self.memory = np.zeros(self.region_bytes // 2, dtype=np.int16)
        self._writer: _Writer | None = None
        self.reset()

    def reset(self) -> None:
        """Restore the defaults of acq_SetDefault: buffers disabled, empty, delay 1."""
        self.stop()
        self.decimation = 1
        self.buffers = [AxiBuffer(self.region_start), AxiBuffer(self.region_start)]
        self._writer = None
        self.trigger: tuple[int, int, int, int] | None = None  # (channel, edge, level, hyst)
        self._edge_ready = False

    # --- settings ---------------------------------------------------------------------------------
    def set_buffer(self, channel: int, address: int, size_bytes: int) -> bool:
        """Place input ``channel``'s buffer; False when the API refuses it (RP_EOOR)."""
        self.settle()  # what the old buffers were owed goes into them first
        samples = size_bytes // 2
        end = self.region_start + self.region_bytes
        if size_bytes % 16 or address < max(8, self.region_start):
            return False
        if address + (samples - 4) * 2 > end or (address - self.region_start) % 2:
            return False
        # The API lets a buffer end up to 8 bytes past the region; the model keeps it inside.
        samples = min(samples, (end - address) // 2)
        old = self.buffers[channel - 1]
        self.buffers[channel - 1] = AxiBuffer(address, samples, old.enabled, old.trigger_delay)
        return True

    @property
    def enabled(self) -> bool:
        """Return True when at least one input writes into deep memory."""
        return any(b.enabled and b.samples > 0 for b in self.buffers)

    # --- the writer -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start writing at the present instant (ACQ:START with a buffer enabled)."""
        self.settle()
        fs = ADC_CLOCK_Hz / self.decimation
        self._writer = _Writer(self.lab.clock.now(), fs)
        for buffer in self.buffers:
            buffer.trigger_index = None
        self._edge_ready = False

    def stop(self) -> None:
        """Stop writing now (ACQ:STOP): what was written stays."""
        if self._writer is not None:
            self.settle()
            self._writer.stop_index = min(self._writer.stop_index, self._writer.written)

    @property
    def running(self) -> bool:
        """Return True while the writer writes."""
        self.catch_up()
        return self._writer is not None and self._writer.written < self._writer.stop_index

    def trigger_now(self) -> None:
        """Fire the trigger at the present sample (ACQ:TRig NOW on a running writer)."""
        self.catch_up()
        if self._writer is not None and self._writer.written < self._writer.stop_index:
            self._fire(max(self._writer.written - 1, 0))

    def arm_trigger(self, channel: int, edge: int, level: int, hysteresis: int) -> None:
        """Watch input ``channel`` (0 or 1) for a level trigger (edge ±1; level, codes)."""
        self.settle()  # the watch starts at the present sample, every earlier one generated
        fired = any(b.trigger_index is not None for b in self.buffers)  # (no second catch-up)
        if self._writer is not None and not fired:
            self.trigger = (channel, edge, level, hysteresis)
            self._edge_ready = False

    @property
    def triggered(self) -> bool:
        """Return True once the running acquisition has triggered."""
        self.catch_up()
        return any(b.trigger_index is not None for b in self.buffers)

    def _fire(self, index: int) -> None:
        """Trigger at absolute sample ``index``: each input stops ``Trig:Dly`` samples later."""
        writer = self._writer
        assert writer is not None
        self.trigger = None
        delays = [b.trigger_delay for b in self.buffers if b.enabled]
        for buffer in self.buffers:
            buffer.trigger_index = index
        writer.stop_index = min(writer.stop_index, index + 1 + max(delays, default=0))

    def filled(self, channel: int) -> bool:
        """Return True once the input has written its delay after the trigger (Trig:Fill?)."""
        self.catch_up()
        buffer = self.buffers[channel - 1]
        if self._writer is None or buffer.trigger_index is None:
            return False
        return self._writer.written >= buffer.trigger_index + 1 + buffer.trigger_delay

    def written(self) -> int:
        """Return the number of samples of each input written since ACQ:START, up to now."""
        self.catch_up()
        return 0 if self._writer is None else self._writer.written

    def write_position(self, channel: int) -> int:
        """Return the position in the input's buffer where the next sample goes (Write:Pos?)."""
        samples = self.buffers[channel - 1].samples
        return self.written() % samples if samples else 0

    def trigger_position(self, channel: int) -> int:
        """Return the position of the trigger sample in the input's buffer (Trig:Pos?)."""
        buffer = self.buffers[channel - 1]
        self.catch_up()
        if buffer.trigger_index is None or not buffer.samples:
            return 0
        return buffer.trigger_index % buffer.samples

    def read(self, channel: int, position: int, size: int) -> np.ndarray:
        """Return ``size`` codes of the input's buffer from ``position``, wrapping at its end."""
        self.catch_up()
        buffer = self.buffers[channel - 1]
        if not buffer.samples:
            return np.zeros(0, dtype=np.int16)
        writer = self._writer
        if writer is not None and writer.generated < writer.written and size > 0:
            # The newest sample these slots hold: that of the last slot, unless they reach the
            # slot of the newest sample written (then that one).
            newest_slot = (writer.written - 1) % buffer.samples
            behind = (newest_slot - (position + size - 1)) % buffer.samples
            if size >= buffer.samples or (newest_slot - position) % buffer.samples < size:
                behind = 0
            with _THREADPOOLS.limit(limits=1, user_api="blas"):
                self._generate_until(writer, writer.written - behind)
        first = (buffer.address - self.region_start) // 2
        ring = self.memory[first : first + buffer.samples]
        start = position % buffer.samples
        if start + size <= buffer.samples:
            return ring[start : start + size].copy()
        return np.take(ring, np.arange(start, start + size) % buffer.samples)

    def catch_up(self) -> None:
        """Count every sample the ADCs have written by now, and generate them into the enabled
        buffers unless the ring has lapped (then a read generates what it needs)."""
        writer = self._writer
        if writer is None:
            return
        fs = writer.sample_rate_Hz
        # A part-per-million of a sample absorbs rounding in clocks that step by exact durations.
        due = math.floor((self.lab.clock.now() - writer.start_s) * fs + 1e-6) + 1
        target = int(min(due, writer.stop_index))
        if target <= writer.written:
            return
        if self.trigger is None:
            writer.written = target
            writer.lapped = writer.lapped or target - writer.generated > self._longest()
            if writer.lapped:
                return
        with _THREADPOOLS.limit(limits=1, user_api="blas"):
            self._generate_until(writer, target)

    def settle(self) -> None:
        """Count and generate every sample written by now, lapped or not."""
        self.catch_up()
        writer = self._writer
        if writer is not None and writer.generated < writer.written:
            with _THREADPOOLS.limit(limits=1, user_api="blas"):
                self._generate_until(writer, writer.written)

    def _longest(self) -> int:
        """Return the samples of the longest enabled buffer (0 with none)."""
        return max((b.samples for b in self.buffers if b.enabled), default=0)

    def _generate_until(self, writer: _Writer, target: int) -> None:
        """Write samples [generated, target) into the ring, generating chunks as needed; with
        a level trigger armed the writer stops where it fires (then ``written`` follows)."""
        longest = self._longest()
        if longest == 0:
            writer.written = writer.generated = max(writer.written, target)
            return
        # Samples that would be overwritten before the end are never seen: skip them, unless a
        # level trigger watches the signal.
        if self.trigger is None:
            writer.generated = max(writer.generated, writer.written - longest)
        while writer.generated < target:
            offset = writer.generated - writer.pending_first
            if offset < 0 or offset >= writer.pending.shape[1]:
                self._generate(writer, writer.generated)
                offset = 0
            n = min(target - writer.generated, writer.pending.shape[1] - offset)
            codes = writer.pending[:, offset : offset + n]
            if self.trigger is not None:
                n = self._watch(writer, codes)
                codes = codes[:, :n]
            self._store(writer.generated, codes)
            writer.generated += n
            if writer.generated >= writer.stop_index:
                writer.generated = int(writer.stop_index)
                break
        writer.generated = min(writer.generated, target)
        writer.written = max(writer.written, writer.generated)
        writer.lapped = writer.lapped and writer.generated < writer.written

    def _generate(self, writer: _Writer, first: int) -> None:
        """Generate the next chunk of both inputs from absolute sample ``first``."""
        fs = writer.sample_rate_Hz
        n = int(min(max(fs * CHUNK_DURATION_S, MIN_CHUNK_SAMPLES), MAX_CHUNK_SAMPLES))
        averaging = True if self.settings is None else self.settings.averaging
        chain = self.lab.detection_chain(self.decimation, averaging)
        record = self.lab.record(n, fs, writer.start_s + first / fs, chain)
        inputs = (record.v_diff, record.v_sum)
        writer.pending = np.stack(
            [adc_codes(v, j) for v, j in zip(inputs, self.jumpers, strict=True)]
        )
        writer.pending_first = first

    def _watch(self, writer: _Writer, codes: np.ndarray) -> int:
        """Look for the armed level trigger in ``codes``; return how many of them are written."""
        assert self.trigger is not None
        channel, edge, level, hysteresis = self.trigger
        signal = edge * codes[channel].astype(np.int32)
        index, self._edge_ready = schmitt_edge(signal, edge * level, hysteresis, self._edge_ready)
        if index < 0:
            return codes.shape[1]
        self._fire(writer.generated + index)
        return int(min(codes.shape[1], writer.stop_index - writer.generated))

    def _store(self, first: int, codes: np.ndarray) -> None:
        """Put the codes of absolute samples [first, first + n) into each enabled buffer."""
        n = codes.shape[1]
        for channel, buffer in enumerate(self.buffers):
            if not (buffer.enabled and buffer.samples):
                continue
            base = (buffer.address - self.region_start) // 2
            data = codes[channel, -buffer.samples :] if n > buffer.samples else codes[channel]
            start = (first + n - data.size) % buffer.samples
            head = min(data.size, buffer.samples - start)
            self.memory[base + start : base + start + head] = data[:head]
            self.memory[base : base + data.size - head] = data[head:]
