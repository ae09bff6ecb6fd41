"""The live signal chain, off the GUI thread: stream → rotation angle → running spectrum → fit.

Four kinds of thread feed the monitor, none of them the GUI thread:

* a source (`StreamSource`: the station's digitiser streaming from its deep memory, every
  sample in a block or a gap; or any thread that offers blocks, such as a test's) hands
  `PolarimeterRecord`s with their stream index to `SignalProcessor.offer`, which never blocks:
  when the processor's bounded queue is full the block is *dropped and counted*, never silently
  skipped; the board's own gaps (its ring overwritten before a block was read) are counted by
  the source, apart from the monitor's;
* an `ApparatusWatch` reads the apparatus (field, heater setpoint, laser, plate) beside the
  stream, and a block is averaged under one state only;
* the `SignalProcessor` thread turns each block into the rotation angle θ(t) (the station's
  calibration, as the procedures use it), adds it to a streaming Welch estimate (a Welch
  record ends at every break in the stream indices), keeps a min/max-decimated rolling trace of
  V_diff, and publishes an immutable `LiveFrame`;
* the `ModelFitter` thread has the two-manifold model fitted to the running spectrum every
  ``interval_s``, in a child process (the apparatus comes from the station, as in the spectrum
  procedures), and publishes a `FitFrame`.

The GUI thread only reads the latest frames (a reference swap, no lock) and draws them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import ProbeGeometry, SpinNoiseFit, fit_spin_noise, initial_values
from hotspin.analysis.spectra import Spectrum, StreamingPSD
from hotspin.gui.worker import Loop, end_child, start_child
from hotspin.instruments.polarimeter import PolarimeterRecord
from hotspin.instruments.redpitaya import (
    CODES_PER_FULL_SCALE,
    ADC_CLOCK_Hz,
    StreamBlock,
    check_axi_decimation,
)
from hotspin.procedures.spectroscopy import OVERLAP, WINDOW

log = logging.getLogger(__name__)

#: Welch segment length of the live spectrum: 16 384 samples give 8193 bins.
DEFAULT_SEGMENT_LENGTH = 1 << 14
#: Points of the rolling trace (min/max pairs of V_diff).
TRACE_POINTS = 100_000
#: Seconds of signal the rolling trace spans.
TRACE_WINDOW_S = 1.0
#: Blocks the processor may hold before the source's next block is dropped (32 Red Pitaya
#: buffers are 0.26 s of a 2 MS/s stream: more than the GUI's worst pause).
QUEUE_BLOCKS = 32
#: Shortest time between two frames: a little under the live view's 20 ms redraw period, so
#: that nearly every redraw finds a new frame and no frame is made that no redraw shows.
PUBLISH_INTERVAL_S = 0.015
CLIPPED_MESSAGE = (
    "clipped: V_diff or V_sum reached the digitiser's full scale (balance the polarimeter); "
    "left out of the spectrum"
)
#: Segments the running spectrum needs before it is worth fitting.
MIN_FIT_SEGMENTS = 4


#: How far a reading may move before it is a change of the apparatus (read-back rounding).
STATE_TOLERANCES = {
    "field (coil currents)": 1e-7,  # A
    "heater setpoint": 1e-3,  # K
    "laser current": 1e-6,  # A
    "laser emission": 0.0,
    "plate angle": 1e-3,  # deg
}


@dataclass(frozen=True)
class ApparatusState:
    """The settings a spin-noise spectrum depends on: an average is taken under one of them."""

    coil_currents_A: tuple[float, ...]
    heater_setpoint_K: float
    laser_current_A: float
    emission: bool
    plate_angle_deg: float

    def _values(self) -> dict[str, tuple[float, ...]]:
        return {
            "field (coil currents)": tuple(self.coil_currents_A),
            "heater setpoint": (self.heater_setpoint_K,),
            "laser current": (self.laser_current_A,),
            "laser emission": (float(self.emission),),
            "plate angle": (self.plate_angle_deg,),
        }

    def changes_from(self, other: ApparatusState) -> list[str]:
        """Return the names of the settings that differ from ``other`` beyond their tolerance."""
        mine, theirs = self._values(), other._values()
        return [
            name
            for name, tolerance in STATE_TOLERANCES.items()
            if any(abs(a - b) > tolerance for a, b in zip(mine[name], theirs[name], strict=True))
        ]


def station_state(station: Any) -> ApparatusState:
    """Read the apparatus state from a station's instruments (each under its own lock)."""
    laser = station.laser.settings()
    return ApparatusState(
        coil_currents_A=tuple(float(i) for i in station.coils.currents_A),
        heater_setpoint_K=float(station.heater.setpoint_K),
        laser_current_A=float(laser["current_A"]),
        emission=bool(laser["emission_enabled"]),
        plate_angle_deg=float(station.polarimeter.plate_angle_deg),
    )


class Calibration(Protocol):
    """What the processor needs to read a record: the station's `Polarimeter` provides it."""

    def rotation_angle_rad(self, record: Any) -> np.ndarray:
        """Return θ(t) in rad of a record."""
        ...

    def imbalance(self, record: Any) -> float:
        """Return the polarimeter's normalised imbalance of a record."""
        ...

    def detected_power_W(self, record: Any) -> float:
        """Return the light power on the detector in W."""
        ...


@dataclass(frozen=True)
class LiveFrame:
    """What the monitor draws: the rolling trace, the running spectrum and the stream's health."""

    version: int
    sample_rate_Hz: float
    trace_time_s: np.ndarray  # ≤ 0: seconds of acquired signal before the latest sample
    trace_V: np.ndarray  # V_diff, min/max pairs
    full_scale_V: tuple[float, float]  # the digitiser's ranges on (V_diff, V_sum)
    frequency_Hz: np.ndarray  # the spectrum's bins, without those biased by mean removal
    psd: np.ndarray  # rad²/Hz (empty before the first complete segment)
    segments: int  # Welch segments in the running average
    records: int  # blocks in the running average
    clipped: bool  # the latest block reached the digitiser's full scale
    imbalance: float  # of the latest block (NaN without light)
    detected_power_W: float  # of the latest usable block (NaN before one)
    message: str  # why the latest block could not be used ('' when it was)
    average: int  # which average the spectrum is (counts up with each new one)
    average_reason: str  # why the current average began
    duty_cycle: float  # samples in the average / the stream's samples over its span
    gaps: int  # breaks between the blocks of the average (each Welch record ends at one)
    missing_samples: int = 0  # of the stream's span of the average, not in it


@dataclass
class StreamCounts:
    """Blocks of the stream since the monitor started: every block is in exactly one bin."""

    received: int = 0  # offered by the source
    dropped: int = 0  # refused because the processor was behind (queue full)
    processed: int = 0  # added to the spectrum
    clipped: int = 0  # reached the digitiser's full scale: on the trace, not in the spectrum
    rejected: int = 0  # could not be calibrated (no light, impossible ratio)
    changed: int = 0  # the apparatus changed while the block was taken: in no average


class SignalProcessor:
    """Calibrates blocks into θ(t), averages their spectrum and keeps the rolling trace."""

    def __init__(
        self,
        calibration: Calibration,
        *,
        segment_length: int = DEFAULT_SEGMENT_LENGTH,
        trace_points: int = TRACE_POINTS,
        trace_window_s: float = TRACE_WINDOW_S,
        queue_blocks: int = QUEUE_BLOCKS,
    ) -> None:
        self.calibration = calibration
        self.segment_length = int(segment_length)
        self.trace_points = int(trace_points) // 2 * 2
        self.trace_window_s = float(trace_window_s)
        self.counts = StreamCounts()
        self.latest: LiveFrame | None = None
        self._queue: queue.Queue[tuple[Any, int | None, Any] | None] = queue.Queue(queue_blocks)
        # Held while the spectrum changes or is read; the GUI thread only takes it to reset.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._version = 0
        self._sample_rate_Hz = math.nan
        self._psd: StreamingPSD | None = None
        self._records = 0
        self._end_index: int | None = None  # after the last block that went into the spectrum
        self._ring = np.zeros(self.trace_points, dtype=np.float32)
        self._ring_filled = 0
        self._ring_position = 0
        self._group = 1
        self._trace_time_s = np.zeros(0)
        self._power_W = math.nan
        self._average = 0  # counts the averages started (reset, new rate, new segment length)
        self._pending: tuple[Any, float, str] | None = None  # (block, imbalance, message) to show
        #: Called with (the stream index of its first sample, θ, sample rate) of every block
        #: of the stream in the spectrum (the QND panel's filter), in the processor's thread;
        #: it must not block. Blocks without a stream index (separate records) are not passed.
        self.theta_sink: Callable[[int, np.ndarray, float], None] | None = None
        self._state: ApparatusState | None = None  # the apparatus the average is taken under
        self.average_reason = "monitor started"
        self._average_started = time.monotonic()
        self._acquired_s = 0.0  # signal time in the average
        self._gaps = 0
        self._first_index: int | None = None  # the stream index the average began at
        self._missing = 0  # samples of the average's span not in it

    # --- the source's side ----------------------------------------------------------------------
    def offer(
        self,
        record: Any,
        first_index: int | None = None,
        state: ApparatusState | None = None,
        wait: bool = False,
    ) -> bool:
        """Queue a block for processing; return False if it was dropped (the processor is behind).

        ``first_index``: the stream index of the block's first sample (a block continues the
        one before it when it starts where that one ended; None: a separate record);
        ``state``: the apparatus it was taken under (None: unknown, taken as unchanged);
        ``wait``: wait for room instead of dropping (a source that can wait: a file).
        """
        self.counts.received += 1
        try:
            self._queue.put((record, first_index, state), block=wait)
        except queue.Full:
            self.counts.dropped += 1
            return False
        return True

    # --- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the processing thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="monitor-processor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the processing thread, after it has processed the blocks already queued."""
        if self._thread is not None:
            self._queue.put(None, timeout=5.0)  # wakes the thread (it makes room if full)
            self._thread.join(timeout=5.0)
            self._thread = None
            self.publish()

    def reset(
        self, reason: str = "reset by the operator", sample_rate_Hz: float | None = None
    ) -> None:
        """Start a new running average (the trace and the stream counts stay); with
        ``sample_rate_Hz`` (a source that knows its rate before its first block, called while
        no block is queued), an average at that rate."""
        if sample_rate_Hz is not None and sample_rate_Hz != self._sample_rate_Hz:
            self._configure(float(sample_rate_Hz))
        with self._lock:
            if self._psd is not None:
                self._psd.reset()
            self._new_average(reason)

    def _new_average(self, reason: str) -> None:
        """Count a new average and say why it began (the lock is held)."""
        self._average += 1
        self._records = 0
        self.average_reason = reason
        self._average_started = time.monotonic()
        self._acquired_s = 0.0
        self._gaps = 0
        self._first_index = None
        self._missing = 0

    def set_segment_length(self, segment_length: int) -> None:
        """Average spectra of ``segment_length``-sample segments from now on (a new average)."""
        with self._lock:
            self.segment_length = int(segment_length)
            if self._psd is not None:
                self._psd = self._new_psd(self._sample_rate_Hz)
            self._new_average(f"segment length {self.segment_length}")

    def spectrum(self) -> tuple[Spectrum, float, tuple[int, int]] | None:
        """Return the running spectrum, the mean detected power and (average number, segments)
        that identify it; None while it has too few segments to fit."""
        with self._lock:
            if self._psd is None or self._psd.segments < MIN_FIT_SEGMENTS:
                return None
            return self._psd.spectrum(), self._power_W, (self._average, self._psd.segments)

    # --- the processing thread -------------------------------------------------------------------
    def _run(self) -> None:
        published = 0.0
        while True:
            try:
                item = self._queue.get(timeout=PUBLISH_INTERVAL_S)
            except queue.Empty:  # a pause in the stream: show what came last
                self.publish()
                continue
            if item is None:
                return
            record, first_index, state = item
            try:
                self.add(record, first_index, state)
            except Exception as error:  # the stream must survive one bad block: say so instead
                log.exception("monitor: block not processed")
                self.counts.rejected += 1
                self._pending = (record, math.nan, f"{type(error).__name__}: {error}")
            # A frame costs a copy of the trace and the averaged spectrum; the GUI draws at most
            # every REDRAW interval, so frames for blocks that arrive faster would never be seen.
            now = time.monotonic()
            if now - published >= PUBLISH_INTERVAL_S:
                self.publish()
                published = now

    def _new_psd(self, sample_rate_Hz: float) -> StreamingPSD:
        return StreamingPSD(self.segment_length, sample_rate_Hz, window=WINDOW, overlap=OVERLAP)

    def process(
        self, record: Any, first_index: int | None = None, state: ApparatusState | None = None
    ) -> None:
        """Add one block (see `add`) and publish the new state at once."""
        self.add(record, first_index, state)
        self.publish()

    def add(
        self, record: Any, first_index: int | None = None, state: ApparatusState | None = None
    ) -> None:
        """Add one block to the trace and, unless it is clipped or cannot be calibrated, to the
        spectrum; the next `publish` shows it. A block taken under another apparatus ``state``
        than the average's starts a new average, which says what changed."""
        fs = float(record.sample_rate_Hz)
        if fs != self._sample_rate_Hz:
            self._configure(fs)
        if state is not None:
            changed = [] if self._state is None else state.changes_from(self._state)
            self._state = state
            if changed:
                with self._lock:
                    assert self._psd is not None
                    self._psd.reset()
                    self._new_average(f"{', '.join(changed)} changed")
        self._append_trace(np.asarray(record.v_diff, dtype=np.float32))
        with np.errstate(divide="ignore", invalid="ignore"):  # no light: no balance to show
            imbalance = float(self.calibration.imbalance(record))
        if not math.isfinite(imbalance):
            imbalance = math.nan
        if record.clipped:
            # A clipped block's spectrum is the clipping's, far above the spin noise: in a live
            # average it would hide everything else. It is counted and shown instead.
            self.counts.clipped += 1
            self._pending = (record, imbalance, CLIPPED_MESSAGE)
            return
        try:
            theta = self.calibration.rotation_angle_rad(record)
        except ValueError as error:  # no light, or a ratio no angle gives: not a spectrum
            self.counts.rejected += 1
            self._pending = (record, imbalance, str(error))
            return
        power = self.calibration.detected_power_W(record)
        with self._lock:
            assert self._psd is not None
            if first_index is None or first_index != self._end_index:
                self._psd.end_record()
                if self._records:
                    self._gaps += 1
            if first_index is not None:
                if self._first_index is None or not self._records:
                    self._first_index = first_index
                elif self._end_index is not None and first_index > self._end_index:
                    self._missing += first_index - self._end_index
            self._end_index = None if first_index is None else first_index + theta.size
            self._psd.add(theta)
            self._records += 1
            self._acquired_s += theta.size / fs
            # The fit's probe power: a running mean over the blocks of this average.
            self._power_W = (
                power
                if self._records == 1 or not math.isfinite(self._power_W)
                else self._power_W + (power - self._power_W) / self._records
            )
        if self.theta_sink is not None and first_index is not None:
            self.theta_sink(first_index, theta, fs)
        self.counts.processed += 1
        self._pending = (record, imbalance, "")

    def _configure(self, sample_rate_Hz: float) -> None:
        """Follow a new sample rate: a new average and a new trace decimation."""
        with self._lock:
            self._sample_rate_Hz = sample_rate_Hz
            self._psd = self._new_psd(sample_rate_Hz)
            self._new_average(f"sample rate {1e-6 * sample_rate_Hz:.4g} MS/s")
        pairs = self.trace_points // 2
        self._group = max(1, round(sample_rate_Hz * self.trace_window_s / pairs))
        self._ring_filled = 0
        self._ring_position = 0
        # Each min/max pair spans `group` samples; the newest point sits at t = 0.
        point_s = self._group / (2.0 * sample_rate_Hz)
        self._trace_time_s = (np.arange(self.trace_points) - (self.trace_points - 1)) * point_s

    def _append_trace(self, v_diff: np.ndarray) -> None:
        """Append the block's min/max pairs to the rolling trace (a partial group is left out)."""
        g = self._group
        usable = v_diff[: v_diff.size - v_diff.size % g].reshape(-1, g)
        points = np.empty(2 * usable.shape[0], dtype=np.float32)
        points[0::2] = usable.min(axis=1)
        points[1::2] = usable.max(axis=1)
        n = self.trace_points
        if points.size >= n:
            self._ring[:] = points[-n:]
            self._ring_position, self._ring_filled = 0, n
            return
        end = self._ring_position + points.size
        if end <= n:
            self._ring[self._ring_position : end] = points
        else:
            split = n - self._ring_position
            self._ring[self._ring_position :] = points[:split]
            self._ring[: end - n] = points[split:]
        self._ring_position = end % n
        self._ring_filled = min(n, self._ring_filled + points.size)

    def _trace(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (time, V_diff) of the rolling trace, oldest first."""
        n, filled = self.trace_points, self._ring_filled
        if filled < n:
            values = self._ring[:filled].copy()
        else:
            values = np.concatenate(
                (self._ring[self._ring_position :], self._ring[: self._ring_position])
            )
        return self._trace_time_s[n - filled :], values

    def publish(self) -> None:
        """Make the state after the latest block the GUI's next frame (if not shown yet)."""
        if self._pending is None:
            return
        record, imbalance, message = self._pending
        self._pending = None
        with self._lock:
            psd = self._psd
            if psd is not None and psd.segments > 0:
                first = psd.mean_removed_bins
                frequency, density = psd.frequency_Hz[first:], psd.mean()[first:]
            else:
                frequency = density = np.zeros(0)
            segments = 0 if psd is None else psd.segments
            records, power = self._records, self._power_W
            average, reason, gaps = self._average, self.average_reason, self._gaps
            missing = self._missing
            if self._first_index is not None and records:
                # A stream: the samples averaged against the stream's span (gaps, blocks lost).
                taken = self._acquired_s * self._sample_rate_Hz
                duty = taken / (taken + missing)
            else:  # separate records: the signal time against the wall time
                elapsed = time.monotonic() - self._average_started
                duty = min(1.0, self._acquired_s / elapsed) if elapsed > 0 else math.nan
        time_s, trace = self._trace()
        self._version += 1
        self.latest = LiveFrame(
            version=self._version,
            sample_rate_Hz=self._sample_rate_Hz,
            trace_time_s=time_s,
            trace_V=trace,
            full_scale_V=(float(record.full_scale_V[0]), float(record.full_scale_V[1])),
            frequency_Hz=frequency,
            psd=density,
            segments=segments,
            records=records,
            clipped=bool(record.clipped),
            imbalance=imbalance,
            detected_power_W=power,
            message=message,
            average=average,
            average_reason=reason,
            duty_cycle=duty,
            gaps=gaps,
            missing_samples=missing,
        )


# --- the model fit -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitFrame:
    """The latest fit of the running spectrum, or why there is none."""

    version: int
    fit: SpinNoiseFit | None
    error: str
    segments: int  # of the spectrum that was fitted
    apparatus: ApparatusParameters | None
    duration_s: float  # wall time the fit took
    average: int = -1  # which of the processor's averages was fitted (-1: not known)
    applied_field_T: tuple[float, float, float] | None = None  # the coils' K·I
    residual_field_T: tuple[float, float, float] | None = None  # what the zeroing cancels


ApparatusProvider = Callable[[float], ApparatusParameters]
"""detected probe power (W) → the apparatus to start the fit from (may read instruments)."""
FieldProvider = Callable[[], tuple[np.ndarray, np.ndarray]]
"""() → (the coils' applied field K·I, the residual field −K·I₀ the zeroing found), in T."""


def station_fields(station: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return the coils' applied field K·I and the residual field −K·I₀ (zeroing) in T."""
    coils = station.coils
    return coils.matrix @ coils.currents_A, -(coils.matrix @ coils.zero_field_currents_A)


def fit_model(spectrum: Spectrum, apparatus: ApparatusParameters) -> SpinNoiseFit:
    """Fit the two-manifold model to a spectrum, started from the apparatus's values."""
    derived = derive(apparatus)
    return fit_spin_noise(spectrum, ProbeGeometry.from_apparatus(derived), initial_values(derived))


def _fitting_process(connection: Connection) -> None:
    """Fit every (spectrum, apparatus) that arrives; answer (fit, '') or (None, the error)."""
    while True:
        try:
            spectrum, apparatus = connection.recv()
        except EOFError:  # the monitor has gone
            return
        try:
            connection.send((fit_model(spectrum, apparatus), ""))
        except Exception as error:  # the monitor shows why the fit failed
            connection.send((None, f"{type(error).__name__}: {error}"))


class ModelFitter(Loop):
    """Refits the running spectrum every ``interval_s`` (or, after a longer fit, as long as
    the fit took) while it has new segments.

    The fit itself runs in a child process. It is thousands of small numpy operations, each of
    which gives up and retakes the GIL; next to the GUI thread and the signal processor every
    retake waited for a thread switch, which made a 30 ms fit take half a second and starved the
    processor (the benchmark dropped blocks). The thread here only picks the spectrum, reads the
    apparatus from the instruments (that must stay in this process) and waits for the answer.
    The child starts with the first fit and is terminated on `stop`, fit or no fit in progress.
    """

    THREAD_NAME = "monitor-fitter"

    def __init__(
        self,
        processor: SignalProcessor,
        apparatus: ApparatusProvider,
        interval_s: float = 0.25,
        fields: FieldProvider | None = None,
    ) -> None:
        super().__init__()
        self.processor = processor
        self.apparatus = apparatus
        self.fields = fields
        self.interval_s = float(interval_s)
        self.enabled = threading.Event()
        self.enabled.set()
        self.latest: FitFrame | None = None
        self._process: Any = None
        self._connection: Connection | None = None
        self._version = 0

    def _stopped(self) -> None:
        self._end_process()

    def _end_process(self) -> None:
        end_child(self._process, self._connection)
        self._process = self._connection = None

    def _fitting_connection(self) -> Connection:
        """Return the connection to the fitting process, starting it if need be."""
        if self._process is None or not self._process.is_alive():
            self._end_process()
            # Kept only once started: `stop` must not end an unborn one.
            self._process, self._connection = start_child(_fitting_process, "monitor-fit")
        assert self._connection is not None
        return self._connection

    def _run(self) -> None:
        fitted: tuple[int, int] | None = None
        wait = self.interval_s
        while not self._stop.wait(wait):
            wait = self.interval_s
            if not self.enabled.is_set():
                continue
            current = self.processor.spectrum()
            if current is None or current[2] == fitted:
                continue  # nothing (new) to fit
            spectrum, power, fitted = current
            frame = self.fit_once(spectrum, power, fitted[0])
            if frame is not None:
                # The child fits at most half the time: a fit behind the detection chain takes
                # ~0.4 s, and with a 0.25 s pause they took 0.6 of a core.
                wait = max(self.interval_s, frame.duration_s)

    def fit_once(
        self, spectrum: Spectrum, detected_power_W: float, average: int = -1
    ) -> FitFrame | None:
        """Fit the model to ``spectrum`` (probe power from the detector), publish and return it;
        None if the fitter was stopped meanwhile."""
        started = time.perf_counter()
        apparatus = None
        fit, error = None, ""
        applied = residual = None
        try:
            if self.fields is not None:
                applied, residual = (tuple(float(b) for b in f) for f in self.fields())
            apparatus = self.apparatus(detected_power_W)
            connection = self._fitting_connection()
            connection.send((spectrum, apparatus))
            while not connection.poll(0.05):
                if self._stop.is_set():
                    return None
            fit, error = connection.recv()
        except (EOFError, OSError) as failure:  # the fitting process died: the next fit restarts it
            error = f"the fitting process stopped: {type(failure).__name__}: {failure}"
            self._end_process()
        except Exception as failure:  # reading the apparatus failed: shown, the monitor goes on
            error = f"{type(failure).__name__}: {failure}"
        self._version += 1
        frame = FitFrame(
            self._version,
            fit,
            error,
            spectrum.segments,
            apparatus,
            time.perf_counter() - started,
            average,
            applied,  # type: ignore[arg-type]
            residual,  # type: ignore[arg-type]
        )
        self.latest = frame
        return frame


# --- the apparatus, read beside the stream -------------------------------------------------------
#: Seconds between two readings of the apparatus state (a block is averaged only once a reading
#: after its last sample says nothing changed: this is also the live view's delay).
STATE_INTERVAL_S = 0.05
#: Readings kept to classify the blocks that wait for one.
STATE_HISTORY = 256


class ApparatusWatch(Loop):
    """Reads the apparatus state again and again, each reading stamped with the station clock's
    time before and after it, so that a block of the stream can be placed between readings."""

    THREAD_NAME = "monitor-apparatus"

    def __init__(
        self,
        read: Callable[[], ApparatusState],
        now: Callable[[], float],
        interval_s: float = STATE_INTERVAL_S,
    ) -> None:
        super().__init__()
        self.read, self.now, self.interval_s = read, now, float(interval_s)
        self.error = ""  # the latest reading's failure ('' after a good one)
        #: Called after every good reading (the stream source releases the blocks it covers).
        self.on_reading: Callable[[], None] | None = None
        self._readings: deque[tuple[float, float, ApparatusState]] = deque(maxlen=STATE_HISTORY)
        self._lock = threading.Lock()

    def read_once(self) -> None:
        """Take one reading of the apparatus now."""
        before = self.now()
        try:
            state = self.read()
        except Exception as error:  # shown with the stream; blocks wait for a good reading
            self.error = f"{type(error).__name__}: {error}"
            return
        self.error = ""
        with self._lock:
            self._readings.append((before, self.now(), state))
        if self.on_reading is not None:
            self.on_reading()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.read_once()
            self._stop.wait(self.interval_s)

    def state_over(self, start_s: float, end_s: float) -> ApparatusState | bool | None:
        """Return the apparatus state over [start_s, end_s] of the station clock: the state if
        every reading from the last one begun before ``start_s`` to the first one ended after
        ``end_s`` agrees, False if they differ (it changed meanwhile), None while no reading
        has ended after ``end_s`` yet."""
        with self._lock:
            readings = list(self._readings)
        if not readings or readings[-1][1] < end_s:
            return None
        first = 0
        for k, (began, _, _) in enumerate(readings):
            if began <= start_s:
                first = k
        last = next(k for k, (_, ended, _) in enumerate(readings) if ended >= end_s)
        states = [state for _, _, state in readings[first : last + 1]]
        if any(state.changes_from(states[0]) for state in states[1:]):
            return False
        return states[0]


# --- the station's digitiser as a source ---------------------------------------------------------
#: The monitor's stream: 125 MHz / 64 = 1.95 MS/s, the continuous record's default.
STREAM_DECIMATION = 64
#: Blocks per second the stream is read in (and so frames the view can draw): the block is the
#: power of two nearest a 60th of a second (32 768 samples, 16.8 ms, at decimation 64); the
#: deep memory's ring holds many times more.
STREAM_BLOCKS_PER_S = 60.0


def stream_block_samples(decimation: int) -> int:
    """Return the samples per input of one block of the stream at ``decimation``."""
    per_block = ADC_CLOCK_Hz / decimation / STREAM_BLOCKS_PER_S
    return 1 << max(10, round(math.log2(per_block)))


#: Seconds the stream leaves the polarimeter's lock free between two blocks (the ring holds
#: ≥ 0.13 s: a pause of a block's duration or less loses nothing).
LOCK_GAP_S = 0.002


class StreamSource(Loop):
    """Streams the station's digitiser from its deep memory (`RedPitaya.stream`: every sample
    in a block or in a gap) and hands each block to the processor with its stream index.

    Every exchange with the board takes the polarimeter's lock, block by block, so the poller's
    reads pass between blocks; a procedure, which records itself, first `suspend`s the stream
    (the board's writer stopped, the lock free) and `resume`s it afterwards. A new stream (after
    a pause, a run or a link fault) is placed after the last one by the time between their
    starts, so what was not streamed meanwhile is a gap, as in the record procedure.

    With an `ApparatusWatch`, a block is handed over only once a reading after its last sample
    exists: under the state of the readings around it, or, if they differ, not at all (counted
    as taken while the apparatus changed), so an average never mixes states.
    """

    THREAD_NAME = "monitor-stream"

    def __init__(
        self,
        polarimeter: Any,
        processor: SignalProcessor,
        *,
        decimation: int = STREAM_DECIMATION,
        block_samples: int | None = None,
        watch: ApparatusWatch | None = None,
        retry_s: float = 1.0,
        clock_speed: Callable[[], float] | None = None,
    ) -> None:
        """``clock_speed``: simulated seconds per wall second of the station's clock (a
        simulated lab on a fast clock writes faster than any board could be read)."""
        super().__init__()
        self.clock_speed = clock_speed
        self.polarimeter = polarimeter
        self.processor = processor
        self.decimation = check_axi_decimation(decimation)
        self.block_samples = (
            stream_block_samples(self.decimation) if block_samples is None else int(block_samples)
        )
        self.watch = watch
        self.retry_s = float(retry_s)
        self.running = threading.Event()  # cleared: paused by the operator
        self.running.set()
        self.error = ""  # the latest stream failure ('' while streaming)
        self.board_gaps = 0  # gaps the board's ring reported (samples overwritten unread)
        self.board_missing = 0  # samples in those gaps and between streams
        self.streams = 0  # streams started
        self.last_item_s = math.nan  # time.monotonic() of the latest block or gap
        self.sample_rate_Hz = math.nan
        self._suspended = threading.Event()  # set by `suspend`: a procedure has the digitiser
        self._idle = threading.Event()  # set while no stream is open
        self._idle.set()
        self._first_start_s: float | None = None
        self._next_index = 0  # after the last index accounted for
        self._pending: deque[tuple[PolarimeterRecord, int, float, float]] = deque()
        self._pending_lock = threading.Lock()
        if watch is not None:
            watch.on_reading = self.release

    # --- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start streaming (and the apparatus watch)."""
        if self.watch is not None:
            self.watch.start()
        super().start()

    def _wake(self) -> None:
        self.running.set()  # a paused loop sees the stop

    def _stopped(self) -> None:
        if self.watch is not None:
            self.watch.stop()

    def suspend(self, timeout_s: float = 10.0) -> bool:
        """Stop the stream and keep it stopped until `resume` (a procedure uses the digitiser);
        return True once no stream is open.

        The stream ends after the block being read. A board that writes no block (a simulated
        one slower than real time: `RedPitaya.stream` then waits without end, holding the
        polarimeter) gets ``timeout_s``; then its connection is closed under the waiting
        reader, whose next query fails and so ends the stream (the link reconnects on its next
        use)."""
        self._suspended.set()
        if self._idle.wait(timeout_s):
            return True
        log.warning("monitor stream: no block in %g s; closing the digitiser's link", timeout_s)
        self.polarimeter.digitiser.disconnect()
        return self._idle.wait(timeout_s)

    def resume(self) -> None:
        """Stream again after `suspend`."""
        self._suspended.clear()

    def warning(self) -> str:
        """Return why the digitiser cannot stream now ('' when it can)."""
        speed = 1.0 if self.clock_speed is None else self.clock_speed()
        if speed > 1.0:
            # Its deep memory would be overwritten many times before any block could be read,
            # and the simulated board would spend this process's time generating it.
            return (
                f"the simulated clock runs {speed:g} times faster than the wall: the digitiser "
                "cannot stream (its ring would be overwritten before it is read)"
            )
        return ""

    def stalled_s(self) -> float:
        """Return the seconds an open stream has gone without a block or gap (0 when none is
        open or it moves)."""
        if not self.streaming or not math.isfinite(self.last_item_s):
            return 0.0
        return time.monotonic() - self.last_item_s

    @property
    def streaming(self) -> bool:
        """Return True while a stream is open."""
        return not self._idle.is_set()

    def _may_stream(self) -> bool:
        return (
            not self._stop.is_set()
            and self.running.is_set()
            and not self._suspended.is_set()
            and not self.warning()
        )

    # --- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._may_stream():
                self._stop.wait(0.05)  # paused, suspended, clock too fast: wait (or stop)
                continue
            try:
                self._stream_once()
                self.error = ""
            except Exception as error:  # shown on the live view; the stream starts again
                self.error = f"{type(error).__name__}: {error}"
                log.warning("monitor stream: %s", self.error)
                with contextlib.suppress(Exception):
                    self.polarimeter.digitiser.disconnect()
                self._stop.wait(self.retry_s)

    def _stream_once(self) -> None:
        """Open a stream, hand over its blocks until paused, suspended or stopped, close it."""
        polarimeter = self.polarimeter
        config = polarimeter.config
        channels = (config.diff_channel - 1, config.sum_channel - 1)
        with polarimeter.lock:
            if not self._may_stream():
                return
            stream = polarimeter.digitiser.call(
                lambda board: board.stream(
                    decimation=self.decimation, block_samples=self.block_samples
                )
            )
            self._idle.clear()
        try:
            self.streams += 1
            self.last_item_s = time.monotonic()
            fs = stream.sample_rate_Hz
            if fs != self.sample_rate_Hz or self._first_start_s is None:
                self.sample_rate_Hz, self._first_start_s, self._next_index = fs, None, 0
            if self._first_start_s is None:
                self._first_start_s, offset = stream.start_time_s, 0
            else:  # placed by its start; the time since the last stream ended is a gap
                offset = round((stream.start_time_s - self._first_start_s) * fs)
                offset = max(offset, self._next_index)
                self.board_missing += offset - self._next_index
                self._next_index = offset
            scales = [stream.volts_per_code[c] for c in channels]
            full_scale = (scales[0] * CODES_PER_FULL_SCALE, scales[1] * CODES_PER_FULL_SCALE)
            items = iter(stream)
            while self._may_stream():
                with polarimeter.lock:
                    item = next(items, None)
                # Python's locks are not fair: retaken at once, this one would starve every
                # other user of the polarimeter (the poller, the fitter's apparatus reading).
                time.sleep(LOCK_GAP_S)
                if item is None:
                    return
                self.last_item_s = time.monotonic()
                first = offset + item.first_index
                if not isinstance(item, StreamBlock):  # samples the ring lost: a gap
                    self.board_gaps += 1
                    self.board_missing += item.length
                    self._next_index = first + item.length
                    continue
                codes = item.codes
                record = PolarimeterRecord(
                    fs, codes[channels[0]] * scales[0], codes[channels[1]] * scales[1], full_scale
                )
                self._next_index = first + codes.shape[1]
                self._hand_over(record, first)
        finally:
            with polarimeter.lock, contextlib.suppress(Exception):
                # The driver decodes later buffer reads in the byte order the stream left.
                stream.close()
            self._idle.set()

    def _hand_over(self, record: PolarimeterRecord, first: int) -> None:
        """Offer a block at once, or keep it until a reading of the apparatus covers it."""
        if self.watch is None or self._first_start_s is None:
            self.processor.offer(record, first, None)
            return
        fs = record.sample_rate_Hz
        t0 = self._first_start_s + first / fs  # station-clock time of its first sample
        with self._pending_lock:
            self._pending.append((record, first, t0, t0 + record.v_diff.size / fs))
        self.release()

    def release(self) -> None:
        """Hand over the waiting blocks that a reading of the apparatus now covers, in order."""
        assert self.watch is not None
        with self._pending_lock:
            while self._pending:
                record, first, t0, t1 = self._pending[0]
                state = self.watch.state_over(t0, t1)
                if state is None:
                    return  # no reading after it yet (the ones after it wait too)
                self._pending.popleft()
                if state is False:
                    self.processor.counts.received += 1
                    self.processor.counts.changed += 1
                else:
                    self.processor.offer(record, first, state)
