"""The QND panel: the entanglement witness and the continuous Kalman filter, live.

A fit of the running spectrum (at most one every REFILTER_INTERVAL_S) gives the model of the
readout: the panel's tracker takes its witness (ξ², the entangled atoms and τ_ent, computed as
`hotspin analyze` computes them, by ``entanglement_witness``) and builds the continuous Kalman
filter of that model, which then filters the θ blocks of the stream: the conditional spin
estimate against time, and the innovations' normalised variance and running whiteness test,
which say whether the model (and so the witness) describes the signal. ξ²(t) is drawn with the
separable bound (ξ² = 1: below it the state is entangled). A new model restarts the filter; the
stream's gaps are the filter's missing samples. The tracker runs off the GUI thread (off by
default: see QndWorker); the panel only draws its frames.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pyqtgraph as pg
from hotspin.analysis.fits import Estimate, SpinNoiseFit
from hotspin.analysis.qnd import (
    ContinuousKalmanFilter,
    ContinuousReadout,
    Whiteness,
    WitnessResult,
    entanglement_witness,
    separable_bound,
)
from hotspin.gui.stream import FitFrame
from hotspin.gui.worker import end_child, start_child
from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtWidgets import QCheckBox, QGridLayout, QLabel, QVBoxLayout, QWidget

#: Points of the conditional spin trace (one per block, the block's last estimate, decimated).
SPIN_POINTS = 2000
#: Points of the ξ²(t) history (one per fit).
HISTORY_POINTS = 1000
#: Between two draws of the panel: at 10 Hz its curves' painting (≈ 13 ms a draw, holding the
#: GIL) left the deep-memory reader of the monitor's process behind its ring, and the served
#: stream at decimation 64 lost 80–310 gaps in 20 s; at 5 Hz none in two runs (BENCHMARKS.md).
REDRAW_INTERVAL_MS = 200
#: Shortest time between two frames the tracking process sends back.
PUBLISH_INTERVAL_S = 0.05
#: Shortest time between two models taken from the fits: the witness (its uncertainties need
#: dozens of Riccati solutions) and a new filter (which runs in again from the prior, a
#: per-sample loop) hold the GIL for long; with every fit (2/s) the monitor missed its targets.
REFILTER_INTERVAL_S = 5.0


@dataclass(frozen=True)
class QndFrame:
    """What the panel draws."""

    version: int
    witness: WitnessResult | None
    error: str  # why there is no witness or filter ('' when there is)
    history_s: np.ndarray  # wall time of each fit since the tracker started
    xi2: np.ndarray  # ξ² of each fit
    entangled_atoms: np.ndarray  # (1 − ξ²) N of each fit
    spin_time_s: np.ndarray  # stream time of each spin point
    spin: np.ndarray  # (n, 3) E[F | record], ħ
    whiteness: Whiteness | None
    filter_squeezing: float  # the filter's current ξ² (rises in a gap)


class QndTracker:
    """Follows the fits (witness, filter model) and filters θ blocks with the latest model."""

    def __init__(
        self, refilter_interval_s: float = REFILTER_INTERVAL_S, exact_run_in: bool = False
    ) -> None:
        self.refilter_interval_s = float(refilter_interval_s)
        # A live view: the steady filter at once from the prior and after every gap (each new
        # model, every few seconds, and each gap of a busy stream would otherwise cost an exact
        # run-in, about a second of CPU at 2 MS/s); ``exact_run_in`` for the exact filter.
        self.exact_run_in = exact_run_in
        self._filtered_at = -math.inf
        self.latest: QndFrame | None = None
        self._lock = threading.Lock()
        self._filter: ContinuousKalmanFilter | None = None
        self._witness: WitnessResult | None = None
        self._error = "waiting for a fit of the spectrum"
        self._started = time.monotonic()
        self._history: deque[tuple[float, float, float]] = deque(maxlen=HISTORY_POINTS)
        self._spin: deque[tuple[float, np.ndarray]] = deque(maxlen=SPIN_POINTS)
        self._whiteness: Whiteness | None = None
        self._squeezing = math.nan
        self._version = 0
        self._offset = 0  # the first index the present filter saw (its sample 0)

    def update_fit(self, fit: SpinNoiseFit, sample_rate_Hz: float) -> None:
        """Take a new model: its witness and a new filter for the blocks that follow (at most
        every ``refilter_interval_s``, or at once at a new sample rate)."""
        now = time.monotonic()
        current = self._filter
        if (
            current is not None
            and current.sample_rate_Hz == sample_rate_Hz
            and now - self._filtered_at < self.refilter_interval_s
        ):
            return
        try:
            witness = entanglement_witness(fit)
            kalman = ContinuousKalmanFilter.from_readout(
                ContinuousReadout.from_fit(fit),
                sample_rate_Hz,
                bound=witness.bound,
                exact_run_in=self.exact_run_in,
            )
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            with self._lock:
                self._error = f"witness failed: {type(error).__name__}: {error}"
                self._filter = None
            self._publish()
            return
        with self._lock:
            self._witness, self._error = witness, ""
            self._filter, self._offset, self._filtered_at = kalman, -1, now
            self._spin.clear()
            xi2 = witness.squeezing_parameter.value
            self._history.append((now - self._started, xi2, witness.entangled_atoms.value))
        self._publish()

    def add(self, first_index: int, theta_rad: np.ndarray) -> None:
        """Filter one block of the stream (absolute index of its first sample, θ in rad)."""
        with self._lock:
            kalman = self._filter
            if kalman is None:
                return
            if self._offset < 0:
                self._offset = int(first_index)
        out = kalman.filter_block(int(first_index) - self._offset, theta_rad)
        t = (out.first_index + out.spin.shape[0] - 1) / kalman.sample_rate_Hz
        with self._lock:
            if kalman is not self._filter:
                return  # a new model arrived meanwhile
            self._spin.append((t, out.spin[-1].copy()))
            self._whiteness = out.whiteness
            self._squeezing = out.squeezing_parameter
        self._publish()

    def fail(self, error: str) -> None:
        """Drop the filter and show why (the next fit builds a new one)."""
        with self._lock:
            self._filter, self._error = None, error
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            history = np.array(self._history).reshape(-1, 3)
            spin = list(self._spin)
            self._version += 1
            self.latest = QndFrame(
                version=self._version,
                witness=self._witness,
                error=self._error,
                history_s=history[:, 0],
                xi2=history[:, 1],
                entangled_atoms=history[:, 2],
                spin_time_s=np.array([t for t, _ in spin]),
                spin=np.array([s for _, s in spin]).reshape(-1, 3),
                whiteness=self._whiteness,
                filter_squeezing=self._squeezing,
            )


def _tracking_process(connection: Connection) -> None:
    """Track in a child process: take ("fit", fit, rate) and ("block", first, θ) messages and
    answer with the tracker's newest frame."""
    tracker = QndTracker()
    sent, sent_at = -1, 0.0
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the monitor has gone
            return
        try:
            if message[0] == "fit":
                tracker.update_fit(message[1], message[2])
            else:
                tracker.add(message[1], message[2])
        except Exception as error:  # shown on the panel; the stream goes on
            tracker.fail(f"filter: {type(error).__name__}: {error}")
        frame = tracker.latest
        now = time.monotonic()
        # Every PUBLISH_INTERVAL_S while messages keep coming, and always when none waits (the
        # newest state is never held back).
        due = now - sent_at >= PUBLISH_INTERVAL_S or not connection.poll()
        if frame is not None and frame.version != sent and due:
            connection.send(frame)
            sent, sent_at = frame.version, now


class QndWorker:
    """Feeds a tracker off the GUI thread: the fitter's new fits and the stream's θ blocks
    (bounded queue; a block offered while the worker is behind is dropped and counted, and is
    a gap to the filter).

    ``in_child``: the tracker's work runs in a child process (as the fitter's does) and its
    frames come back through a pipe; in this process the filter's sections, run-ins and the
    witness held the GIL so long that the monitor missed its redraw and latency targets.
    """

    def __init__(
        self,
        tracker: QndTracker,
        fits: Callable[[], FitFrame | None],
        blocks: int = 8,
        in_child: bool = False,
        lossless: bool = False,
    ):
        self.tracker = tracker
        self.fits = fits
        self.in_child = in_child
        #: A file's blocks wait for the worker instead of being dropped (nothing is live there:
        #: a dropped block would only be a gap, and a run-in, for the filter).
        self.lossless = lossless
        self._stopping = threading.Event()
        self.dropped = 0
        #: Off by default (a checkbox on the QND tab): see BENCHMARKS.md for its cost.
        self.enabled = threading.Event()
        self._process: Any = None
        self._connection: Connection | None = None
        self._queue: queue.Queue[tuple[int, np.ndarray, float] | None] = queue.Queue(blocks)
        self._thread: threading.Thread | None = None
        self._fit_version = -1

    def offer(self, first_index: int, theta_rad: np.ndarray, sample_rate_Hz: float) -> None:
        """Queue a θ block (absolute index of its first sample), or drop it if behind (wait
        for room if ``lossless``, until the worker stops)."""
        if not self.enabled.is_set():
            return
        item = (first_index, theta_rad, sample_rate_Hz)
        while self.lossless and not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        """Start the worker thread."""
        self._stopping.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="qnd-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the worker thread (after the block in progress)."""
        self._stopping.set()
        if self._thread is not None:
            while True:
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
            self._thread.join(timeout=10.0)
            self._thread = None
        end_child(self._process, self._connection)
        self._process = self._connection = None

    def _child(self) -> Connection:
        """Return the connection to the tracking process, starting it if need be."""
        if self._process is None or not self._process.is_alive():
            end_child(self._process, self._connection)
            self._process, self._connection = start_child(_tracking_process, "monitor-qnd")
        assert self._connection is not None
        return self._connection

    def _send(self, message: tuple[Any, ...]) -> None:
        """Hand one message to the child and take every frame it has answered meanwhile."""
        connection = self._child()
        connection.send(message)
        self._take_frames()

    def _take_frames(self) -> None:
        """Take every frame the child has answered (the newest is the tracker's latest)."""
        connection = self._connection
        while connection is not None and connection.poll():
            self.tracker.latest = connection.recv()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                # No block waits: the child's answers to the last ones must still be shown.
                if self.in_child:
                    try:
                        self._take_frames()
                    except (EOFError, OSError) as error:
                        self._process = None
                        self.tracker.fail(f"the QND process stopped: {error}")
                continue
            if item is None:
                return
            first, theta, rate = item
            frame = self.fits()
            new_fit = (
                frame is not None and frame.version != self._fit_version and frame.fit is not None
            )
            if self.in_child:
                try:
                    if new_fit:
                        self._fit_version = frame.version
                        self._send(("fit", frame.fit, rate))
                    self._send(("block", first, theta))
                except (EOFError, OSError) as error:  # the child died: the next block restarts it
                    self._process = None
                    self.tracker.fail(f"the QND process stopped: {type(error).__name__}: {error}")
                continue
            if new_fit:
                self._fit_version = frame.version
                self.tracker.update_fit(frame.fit, rate)
            try:
                self.tracker.add(first, theta)
            except Exception as error:  # shown on the panel; the stream goes on
                self.tracker.fail(f"filter: {type(error).__name__}: {error}")


class QndPanel(QWidget):
    """ξ²(t) with the separable bound, N_ent, τ_ent, the innovations and the conditional spin."""

    def __init__(
        self, tracker: QndTracker, worker: QndWorker | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.tracker = tracker
        self.worker = worker
        self._drawn = -1
        self.enable_box = QCheckBox("witness and Kalman filter on the live stream")
        self.enable_box.setEnabled(worker is not None)
        self.enable_box.toggled.connect(self._enable)
        self.witness_label = QLabel("witness: waiting for a fit of the spectrum")
        self.witness_label.setWordWrap(True)
        self.innovations_label = QLabel("innovations: –")
        self.xi2_plot = pg.PlotWidget(title="ξ² of the conditional state (a point per model)")
        self.xi2_plot.setLabel("bottom", "time", units="s")
        self.xi2_plot.setLabel("left", "ξ²")
        self.xi2_curve = self.xi2_plot.plot(pen=None, symbol="o", symbolSize=5)
        self.bound_line = pg.InfiniteLine(
            pos=1.0,
            angle=0,
            pen=pg.mkPen("#cf222e", style=Qt.DashLine),
            label=f"separable bound ξ² = 1 (b = {separable_bound():.4g} per atom)",
            labelOpts={"position": 0.1, "color": "#cf222e"},
        )
        self.xi2_plot.addItem(self.bound_line)
        self.atoms_plot = pg.PlotWidget(title="entangled atoms (1 − ξ²) N")
        self.atoms_plot.setLabel("bottom", "time", units="s")
        self.atoms_curve = self.atoms_plot.plot(pen=None, symbol="o", symbolSize=5)
        self.spin_plot = pg.PlotWidget(title="conditional spin estimate E[F | record]")
        self.spin_plot.setLabel("bottom", "stream time", units="s")
        self.spin_plot.setLabel("left", "F (ħ)")
        self.spin_curves = [
            self.spin_plot.plot(pen=pg.mkPen(colour, width=1), name=axis)
            for colour, axis in zip(("#0969da", "#1a7f37", "#8250df"), "xyz", strict=True)
        ]
        grid = QGridLayout()
        grid.addWidget(self.xi2_plot, 0, 0)
        grid.addWidget(self.atoms_plot, 0, 1)
        grid.addWidget(self.spin_plot, 1, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.enable_box)
        layout.addWidget(self.witness_label)
        layout.addWidget(self.innovations_label)
        layout.addLayout(grid, 1)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REDRAW_INTERVAL_MS)

    def _enable(self, enabled: bool) -> None:
        if self.worker is not None:
            if enabled:
                self.worker.enabled.set()
            else:
                self.worker.enabled.clear()

    def refresh(self) -> None:
        """Draw the tracker's newest frame if it changed."""
        frame = self.tracker.latest
        if frame is None or frame.version == self._drawn:
            return
        self._drawn = frame.version
        self.xi2_curve.setData(frame.history_s, frame.xi2)
        self.atoms_curve.setData(frame.history_s, frame.entangled_atoms)
        for k, curve in enumerate(self.spin_curves):
            curve.setData(frame.spin_time_s, frame.spin[:, k])
        if frame.witness is None:
            self.witness_label.setText(f"witness: {frame.error}")
        else:
            w = frame.witness
            # ξ² is the conditional variance over b N: the line at 1 is the bound b.
            self.bound_line.label.setFormat(f"separable bound ξ² = 1 (b = {w.bound:.4g} per atom)")
            tau = Estimate(1e3 * w.lifetime.value, 1e3 * w.lifetime.uncertainty, "ms")
            self.witness_label.setText(
                f"ξ² = {w.squeezing_parameter} (b = {w.bound:.4g} per atom), "
                f"N_ent = {w.entangled_atoms}, τ_ent = {tau}"
                + ("" if not frame.error else f" — {frame.error}")
            )
        white = frame.whiteness
        if white is None:
            self.innovations_label.setText("innovations: too few yet for the whiteness test")
        else:
            variance = Estimate(white.normalised_variance, white.variance_uncertainty)
            self.innovations_label.setText(
                f"innovations: normalised variance {variance}"
                f", Ljung–Box Q = {white.ljung_box:.1f} over {white.lags} lags (p = "
                f"{white.p_value:.2g}), {white.samples} samples; filter ξ² now "
                f"{frame.filter_squeezing:.4g}"
            )

    def squeezing_parameter(self) -> float:
        """Return the ξ² the panel shows last (NaN before a witness)."""
        frame = self.tracker.latest
        return math.nan if frame is None or frame.xi2.size == 0 else float(frame.xi2[-1])
