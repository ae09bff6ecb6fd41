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


@dataclass
class StreamCounts:
    """Blocks of the stream since the monitor started: every block is in exactly one bin."""

    received: int = 0  # offered by the source
    dropped: int = 0  # refused because the processor was behind (queue full)
    processed: int = 0  # added to the spectrum
    clipped: int = 0  # reached the digitiser's full scale: on the trace, not in the spectrum
    rejected: int = 0  # could not be calibrated (no light, impossible ratio)


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

    # --- the source's side ----------------------------------------------------------------------
    def offer(self, record: Any, contiguous: bool = False) -> bool:
        """Queue a block for processing; return False if it was dropped (the processor is behind).

        ``contiguous``: the block follows the source's previous block without a gap in time.
        """
        self.counts.received += 1
        try:
            self._queue.put_nowait((record, contiguous and not self._gap))
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

    def reset(self) -> None:
        """Start a new running average (the trace and the stream counts stay)."""
        with self._lock:
            if self._psd is not None:
                self._psd.reset()
            self._average += 1
            self._records = 0

    def set_segment_length(self, segment_length: int) -> None:
        """Average spectra of ``segment_length``-sample segments from now on (a new average)."""
        with self._lock:
            self.segment_length = int(segment_length)
            if self._psd is not None:
                self._psd = self._new_psd(self._sample_rate_Hz)
            self._average += 1
            self._records = 0

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
            record, contiguous = item
            try:
                self.add(record, contiguous)
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

    def process(self, record: Any, contiguous: bool = False) -> None:
        """Add one block (see `add`) and publish the new state at once."""
        self.add(record, contiguous)
        self.publish()

    def add(self, record: Any, contiguous: bool = False) -> None:
        """Add one block to the trace and, unless it is clipped or cannot be calibrated, to the
        spectrum; the next `publish` shows it."""
        fs = float(record.sample_rate_Hz)
        if fs != self._sample_rate_Hz:
            self._configure(fs)
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
            self._psd.add(theta)
            self._records += 1
            # The fit's probe power: a running mean over the blocks of this average.
            self._power_W = (
                power
                if self._records == 1 or not math.isfinite(self._power_W)
                else self._power_W + (power - self._power_W) / self._records
            )
        self._continues = True
        self.counts.processed += 1
        self._pending = (record, imbalance, "")

    def _configure(self, sample_rate_Hz: float) -> None:
        """Follow a new sample rate: a new average and a new trace decimation."""
        with self._lock:
            self._sample_rate_Hz = sample_rate_Hz
            self._psd = self._new_psd(sample_rate_Hz)
            self._average += 1
            self._records = 0
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


ApparatusProvider = Callable[[float], ApparatusParameters]
"""detected probe power (W) → the apparatus to start the fit from (may read instruments)."""


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
    ) -> None:
        self.processor = processor
        self.apparatus = apparatus
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
            self.fit_once(spectrum, power)

    def fit_once(self, spectrum: Spectrum, detected_power_W: float) -> FitFrame | None:
        """Fit the model to ``spectrum`` (probe power from the detector), publish and return it;
        None if the fitter was stopped meanwhile."""
        started = time.perf_counter()
        apparatus = None
        fit, error = None, ""
        try:
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
            self._version, fit, error, spectrum.segments, apparatus, time.perf_counter() - started
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
    ) -> None:
        self.polarimeter = polarimeter
        self.processor = processor
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
                record = self.polarimeter.acquire()  # one whole digitiser buffer
            except Exception as error:  # an instrument error is shown; acquisition retries
                self.error = f"{type(error).__name__}: {error}"
                self._stop.wait(self.retry_s)
                continue
            self.error = ""
            self.processor.offer(record, contiguous=False)  # records are separate in time
            self._stop.wait(self.pause_s)
