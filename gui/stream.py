"""The live signal chain, off the GUI thread: records → rotation angle → running spectrum → fit.

Three kinds of thread feed the monitor, none of them the GUI thread:

* a source (`StationSource`: the station's digitiser, record after record; or any thread that
  streams blocks, such as the benchmark's 2 MS/s generator) hands `PolarimeterRecord`s to
  `SignalProcessor.offer`, which never blocks: when the processor's bounded queue is full the
  block is *dropped and counted*, never silently skipped;
* the `SignalProcessor` thread turns each block into the rotation angle θ(t) (the station's
  calibration, as the procedures use it), adds it to a streaming Welch estimate, keeps a
  min/max-decimated rolling trace of V_diff, and publishes an immutable `LiveFrame`;
* the `ModelFitter` thread has the two-manifold model fitted to the running spectrum every
  ``interval_s``, in a child process (the apparatus comes from the station, as in the spectrum
  procedures), and publishes a `FitFrame`.

The GUI thread only reads the latest frames (a reference swap, no lock) and draws them.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import ProbeGeometry, SpinNoiseFit, fit_spin_noise, initial_values
from hotspin.analysis.spectra import Spectrum, StreamingPSD
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
    duty_cycle: float  # acquired signal time / wall time since the average began
    gaps: int  # breaks between the blocks of the average (each Welch record ends at one)


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
        self._queue: queue.Queue[tuple[Any, bool] | None] = queue.Queue(queue_blocks)
        # Held while the spectrum changes or is read; the GUI thread only takes it to reset.
        self._lock = threading.Lock()
        self._gap = False  # a block was dropped: the next one does not continue the stream
        self._thread: threading.Thread | None = None
        self._version = 0
        self._sample_rate_Hz = math.nan
        self._psd: StreamingPSD | None = None
        self._records = 0
        self._continues = False  # the last block offered went into the spectrum
        self._ring = np.zeros(self.trace_points, dtype=np.float32)
        self._ring_filled = 0
        self._ring_position = 0
        self._group = 1
        self._trace_time_s = np.zeros(0)
        self._power_W = math.nan
        self._average = 0  # counts the averages started (reset, new rate, new segment length)
        self._pending: tuple[Any, float, str] | None = None  # (block, imbalance, message) to show
        #: Called with (θ, sample rate, contiguous) of every block in the spectrum
        #: (the QND panel's filter), in the processor's thread; it must not block.
        self.theta_sink: Callable[[np.ndarray, float, bool], None] | None = None
        self._state: ApparatusState | None = None  # the apparatus the average is taken under
        self.average_reason = "monitor started"
        self._average_started = time.monotonic()
        self._acquired_s = 0.0  # signal time in the average
        self._gaps = 0

    # --- the source's side ----------------------------------------------------------------------
    def offer(
        self, record: Any, contiguous: bool = False, state: ApparatusState | None = None
    ) -> bool:
        """Queue a block for processing; return False if it was dropped (the processor is behind).

        ``contiguous``: the block follows the source's previous block without a gap in time;
        ``state``: the apparatus it was taken under (None: unknown, taken as unchanged).
        """
        self.counts.received += 1
        try:
            self._queue.put_nowait((record, contiguous and not self._gap, state))
        except queue.Full:
            self.counts.dropped += 1
            self._gap = True
            return False
        self._gap = False
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

    def reset(self, reason: str = "reset by the operator") -> None:
        """Start a new running average (the trace and the stream counts stay)."""
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
            record, contiguous, state = item
            try:
                self.add(record, contiguous, state)
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
        self, record: Any, contiguous: bool = False, state: ApparatusState | None = None
    ) -> None:
        """Add one block (see `add`) and publish the new state at once."""
        self.add(record, contiguous, state)
        self.publish()

    def add(
        self, record: Any, contiguous: bool = False, state: ApparatusState | None = None
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
            self._continues = False
            self._pending = (record, imbalance, CLIPPED_MESSAGE)
            return
        try:
            theta = self.calibration.rotation_angle_rad(record)
        except ValueError as error:  # no light, or a ratio no angle gives: not a spectrum
            self.counts.rejected += 1
            self._continues = False
            self._pending = (record, imbalance, str(error))
            return
        power = self.calibration.detected_power_W(record)
        with self._lock:
            assert self._psd is not None
            if not (contiguous and self._continues):
                self._psd.end_record()
                if self._records:
                    self._gaps += 1
            self._psd.add(theta)
            self._records += 1
            self._acquired_s += theta.size / fs
            # The fit's probe power: a running mean over the blocks of this average.
            self._power_W = (
                power
                if self._records == 1 or not math.isfinite(self._power_W)
                else self._power_W + (power - self._power_W) / self._records
            )
        if self.theta_sink is not None:
            self.theta_sink(theta, fs, contiguous and self._continues)
        self._continues = True
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


class ModelFitter:
    """Refits the running spectrum every ``interval_s`` while it has new segments.

    The fit itself runs in a child process. It is thousands of small numpy operations, each of
    which gives up and retakes the GIL; next to the GUI thread and the signal processor every
    retake waited for a thread switch, which made a 30 ms fit take half a second and starved the
    processor (the benchmark dropped blocks). The thread here only picks the spectrum, reads the
    apparatus from the instruments (that must stay in this process) and waits for the answer.
    The child starts with the first fit and is terminated on `stop`, fit or no fit in progress.
    """

    def __init__(
        self,
        processor: SignalProcessor,
        apparatus: ApparatusProvider,
        interval_s: float = 0.25,
        fields: FieldProvider | None = None,
    ) -> None:
        self.processor = processor
        self.apparatus = apparatus
        self.fields = fields
        self.interval_s = float(interval_s)
        self.enabled = threading.Event()
        self.enabled.set()
        self.latest: FitFrame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._connection: Connection | None = None
        self._version = 0

    def start(self) -> None:
        """Start the fitting thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="monitor-fitter", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the fitting thread and end the fitting process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self._end_process()

    def _end_process(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=10.0)
            self._process = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _fitting_connection(self) -> Connection:
        """Return the connection to the fitting process, starting it if need be."""
        if self._process is None or not self._process.is_alive():
            self._end_process()
            # 'spawn': a forked copy of a process running Qt and a dozen threads is not safe.
            context = get_context("spawn")
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_fitting_process, args=(theirs,), name="monitor-fit", daemon=True
            )
            # One BLAS thread in the child: the fit's matrices are small, and on a busy machine
            # BLAS threads only wait for a core (BENCHMARKS.md, the fit: 8-12 ms per call).
            previous = os.environ.get("OPENBLAS_NUM_THREADS")
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
            try:
                process.start()  # kept only once started: `stop` must not end an unborn one
            finally:
                if previous is None:
                    del os.environ["OPENBLAS_NUM_THREADS"]
                else:
                    os.environ["OPENBLAS_NUM_THREADS"] = previous
            theirs.close()
            self._process, self._connection = process, ours
        assert self._connection is not None
        return self._connection

    def _run(self) -> None:
        fitted: tuple[int, int] | None = None
        while not self._stop.wait(self.interval_s):
            if not self.enabled.is_set():
                continue
            current = self.processor.spectrum()
            if current is None or current[2] == fitted:
                continue  # nothing (new) to fit
            spectrum, power, fitted = current
            self.fit_once(spectrum, power, fitted[0])

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


# --- the station's digitiser as a source ---------------------------------------------------------
class StationSource:
    """Records the polarimeter again and again and hands each record to the processor.

    Every record takes the polarimeter's lock, so a running procedure's acquisitions and the
    monitor's alternate record by record and never interleave commands. The pause after each
    record leaves the lock free for the procedure (a lock released and retaken at once by the same
    thread would otherwise starve the other waiter).
    """

    def __init__(
        self,
        polarimeter: Any,
        processor: SignalProcessor,
        pause_s: float = 0.05,
        retry_s: float = 1.0,
        state: Callable[[], ApparatusState] | None = None,
    ) -> None:
        self.polarimeter = polarimeter
        self.processor = processor
        self.state = state
        self.pause_s = pause_s
        self.retry_s = retry_s
        self.running = threading.Event()
        self.running.set()
        #: The last acquisition error ('' after a good record).
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start acquiring."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="monitor-source", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop acquiring (after the record in progress)."""
        self._stop.set()
        self.running.set()  # wake a paused loop so it can see the stop
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.running.wait()
            if self._stop.is_set():
                return
            try:
                # The apparatus before and after the record: a record taken while it changed
                # belongs to no average.
                before = self.state() if self.state is not None else None
                record = self.polarimeter.acquire()  # one whole digitiser buffer
                after = self.state() if self.state is not None else None
            except Exception as error:  # an instrument error is shown; acquisition retries
                self.error = f"{type(error).__name__}: {error}"
                self._stop.wait(self.retry_s)
                continue
            self.error = ""
            if before is not None and after is not None and after.changes_from(before):
                self.processor.counts.received += 1
                self.processor.counts.changed += 1
            else:  # records are separate in time
                self.processor.offer(record, contiguous=False, state=before)
            self._stop.wait(self.pause_s)
