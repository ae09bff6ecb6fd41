"""The live view: rolling polarimeter trace, running spin-noise spectrum with the model fit.

The view only draws: a timer takes the processor's and the fitter's latest frames (immutable,
swapped in by their threads) and hands them to pyqtgraph when they changed. The trace is V_diff,
the polarimeter's signal as the digitiser sees it, with its full scale drawn, so clipping shows;
the spectrum is that of the calibrated rotation angle θ, with the fitted model, the Larmor line
and the fitted values. The stream's health is always on screen: blocks received, averaged,
clipped, unusable (no light) and dropped (the monitor could not keep up), apart from the
board's own gaps (its ring overwritten before it was read); the average's duty cycle and gaps.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyqtgraph as pg
from hotspin.analysis.fits import Estimate
from hotspin.gui.stream import FitFrame, LiveFrame, ModelFitter, SignalProcessor, StreamSource
from hotspin.procedures.spectroscopy import MIN_SPECTRUM_TEMPERATURE_K, SEGMENT_LENGTHS
from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from hotspin.gui.record_source import RecordSource

#: Redraw period of the live view (a new frame is drawn at most this often).
REDRAW_INTERVAL_MS = 20
ALERT_STYLE = "background: #cf222e; color: white; font-weight: bold; padding: 2px;"
QUIET_STYLE = "color: #57606a; padding: 2px;"


#: Seconds without a block after which the stream is shown as stalled.
STALLED_S = 2.0
#: |imbalance| of the polarimeter above which the banner asks for a balance.
UNBALANCED = 0.2


def _nT(field_T: tuple[float, float, float] | None) -> str:
    """Return a field vector and its magnitude in nT."""
    if field_T is None:
        return "–"
    b = [1e9 * x for x in field_T]
    return f"({b[0]:.3g}, {b[1]:.3g}, {b[2]:.3g}) |{math.hypot(*b):.3g}| nT"


#: Relative uncertainty below which a fit's σ says nothing (a double carries ≈ 16 digits, and
#: a fit's curvature is not known to anything like them): shown as unresolved, not as digits.
UNRESOLVED_RELATIVE = 1e-9


def estimate_text(estimate: Estimate) -> str:
    """Return a fitted value rounded to two significant digits of its uncertainty, or, where the
    uncertainty is below what the fit can resolve, the value to 6 digits marked so."""
    value, sigma = estimate.value, estimate.uncertainty
    unit = f" {estimate.unit}" if estimate.unit else ""
    if math.isfinite(sigma) and 0 <= sigma < UNRESOLVED_RELATIVE * abs(value):
        return f"{value:.6g}{unit} (σ not resolved: the fit is degenerate)"
    if math.isfinite(sigma) and 0 < sigma and abs(value) < sigma:
        # A value smaller than its σ has no digit of its own below σ's second one.
        decimals = 1 - math.floor(math.log10(sigma))
        if 0 <= decimals <= 8:
            return f"{value:.{decimals}f} ± {sigma:.{decimals}f}{unit}"
        return f"{value:.1e} ± {sigma:.1e}{unit}"
    return str(estimate)


def _fit_text(frame: FitFrame | None) -> str:
    """Return the fitted values, one per line, rounded to two significant digits of their
    uncertainty, for the label beside the spectrum (the flags go to their own area)."""
    if frame is None:
        return "fit: waiting for the spectrum"
    if frame.fit is None:
        return f"fit failed ({frame.segments} segments):\n{frame.error}"
    fit = frame.fit
    p = fit.parameters
    field = p["field_T"]
    lines = [
        f"fit of {frame.segments} segments ({1e3 * frame.duration_s:.0f} ms)",
        f"Larmor  {estimate_text(fit.larmor_frequency_Hz)}",
        f"HWHM    {estimate_text(fit.linewidth_hwhm_Hz)}",
        f"|B| fit {estimate_text(Estimate(1e9 * field.value, 1e9 * field.uncertainty, 'nT'))}",
        f"applied {_nT(frame.applied_field_T)}",
        f"residual {_nT(frame.residual_field_T)}",
        f"R_SE    {estimate_text(p['spin_exchange_rate'])}",
        f"R_SD′   {estimate_text(p['spin_destruction_rate'])}",
        f"N       {estimate_text(p['atom_number'])}",
        f"floor   {estimate_text(p['white_noise_psd'])}",
        f"χ²/dof  {fit.reduced_chi2:.3f}",
    ]
    if frame.apparatus is not None:
        lines.append(f"T (heater) {frame.apparatus.temperature_K:.1f} K")
    return "\n".join(lines)


def _percent(fraction: float) -> str:
    """Return a fraction as a percentage, with a decimal where it is near one."""
    if not math.isfinite(fraction):
        return "–"
    return f"{100 * fraction:.1f} %" if fraction > 0.99 else f"{100 * fraction:.0f} %"


class RangeFollower:
    """Keeps one axis of a plot around the data, changing it only when the data leave the view
    or fill less than half of it.

    pyqtgraph's own auto-range sets the range again with every frame, which re-ticks the axis and
    paints the plot twice; a live view that moves its axes only now and then draws twice as many
    frames. A zoom or pan with the mouse stops the following; the plot's auto-range button ('A')
    resumes it.
    """

    def __init__(self, plot: pg.PlotWidget, axis: int) -> None:
        self.view = plot.getViewBox()
        self.axis = axis  # ViewBox.XAxis or ViewBox.YAxis
        self.following = True
        self._forced = True
        self.view.enableAutoRange(axis, False)
        self.view.sigRangeChangedManually.connect(self._stop_following)

    def _stop_following(self, changed: list[bool]) -> None:
        if changed[self.axis]:
            self.following = False

    def resume(self) -> None:
        """Follow the data again and set the range at the next frame (new units, new data)."""
        self.following = True
        self._forced = True

    def follow(self, low: float, high: float) -> None:
        """Show [low, high] (in the axis's own units: log10 on a log axis) if the view is off."""
        if self.view.autoRangeEnabled()[self.axis]:  # the 'A' button was pressed
            self.view.enableAutoRange(self.axis, False)
            self.resume()
        if not (self.following and math.isfinite(low) and math.isfinite(high)):
            return
        shown_low, shown_high = self.view.viewRange()[self.axis]
        span = high - low
        inside = low >= shown_low and high <= shown_high
        if inside and span >= 0.5 * (shown_high - shown_low) and not self._forced:
            return
        self._forced = False
        pad = 0.05 * span if span > 0 else max(abs(high), 1e-12)
        if self.axis == pg.ViewBox.XAxis:
            self.view.setXRange(low - pad, high + pad, padding=0)
        else:
            self.view.setYRange(low - pad, high + pad, padding=0)


class LiveView(QWidget):
    """Trace and spectrum plots with the controls and the counters of the live signal."""

    def __init__(
        self,
        processor: SignalProcessor,
        fitter: ModelFitter,
        source: StreamSource | RecordSource | None = None,
        parent: QWidget | None = None,
        temperature_K: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(parent)
        self.processor = processor
        self.fitter = fitter
        self.source = source
        #: The cell temperature as last read (for the cold-cell banner); None: not known.
        self.temperature_K = temperature_K
        #: What fixes a missing condition: button text → action (the window connects them).
        self.fixes: dict[str, Callable[[], None]] = {}
        self.redraws = 0  # frames drawn since the view was made
        self._drawn_version = -1
        self._drawn_fit = -1
        self._frame_times: deque[float] = deque(maxlen=50)

        # --- controls ---
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setEnabled(source is not None)
        self.pause_button.toggled.connect(self._pause)
        self.reset_button = QPushButton("Reset average")
        self.reset_button.clicked.connect(lambda: self.processor.reset())
        self.segment_combo = QComboBox()
        for length in SEGMENT_LENGTHS:
            self.segment_combo.addItem(f"{length} samples ({length // 2 + 1} bins)", length)
        self.segment_combo.setCurrentIndex(
            max(0, self.segment_combo.findData(processor.segment_length))
        )
        self.segment_combo.currentIndexChanged.connect(
            lambda _: self.processor.set_segment_length(self.segment_combo.currentData())
        )
        self.log_x = QCheckBox("log f")
        # Log frequency: a kHz line is visible beside the MHz Nyquist band.
        self.log_x.setChecked(True)
        self.log_y = QCheckBox("log PSD")
        self.log_y.setChecked(True)
        self.log_x.toggled.connect(self._apply_log_mode)
        self.log_y.toggled.connect(self._apply_log_mode)
        self.fit_box = QCheckBox("fit model")
        self.fit_box.setChecked(True)
        self.fit_box.toggled.connect(self._enable_fit)
        controls = QHBoxLayout()
        for widget in (
            self.pause_button,
            self.reset_button,
            QLabel("segment"),
            self.segment_combo,
            self.log_x,
            self.log_y,
            self.fit_box,
        ):
            controls.addWidget(widget)
        controls.addStretch(1)

        # --- status line ---
        self.clip_label = QLabel("not clipped")
        self.average_label = QLabel("average: –")
        self.counts_label = QLabel("blocks: –")
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.rate_label = QLabel("")
        status = QGridLayout()
        status.addWidget(self.clip_label, 0, 0)
        status.addWidget(self.average_label, 0, 1)
        status.addWidget(self.counts_label, 0, 2)
        status.addWidget(self.rate_label, 0, 3)
        status.addWidget(self.message_label, 1, 0, 1, 4)

        # --- the banner: what is missing for a spectrum, with the button that fixes it ---
        self.banner = QWidget()
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.setContentsMargins(0, 0, 0, 0)
        self.banner_label = QLabel("")
        self.banner_label.setStyleSheet(ALERT_STYLE)
        self.banner_label.setWordWrap(True)
        self.banner_button = QPushButton("")
        self.banner_button.clicked.connect(self._fix)
        banner_layout.addWidget(self.banner_label, 1)
        banner_layout.addWidget(self.banner_button)
        self.banner.setVisible(False)

        # --- the fit's flags: collapsed to one line, under the plots, never beside them ---
        self.flags_button = QToolButton()
        self.flags_button.setCheckable(True)
        self.flags_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.flags_button.setArrowType(Qt.RightArrow)
        self.flags_button.setText("fit flags: none")
        self.flags_button.toggled.connect(self._show_flags)
        self.flags_label = QLabel("")
        self.flags_label.setWordWrap(True)
        self.flags_label.setVisible(False)

        # --- plots ---
        self.trace_plot = pg.PlotWidget(title="polarimeter V_diff (rolling, min/max per point)")
        self.trace_plot.setLabel("bottom", "acquired time before the latest sample", units="s")
        self.trace_plot.setLabel("left", "V_diff", units="V")
        # No grids on the live plots: pyqtgraph paints them with the axes on every frame; with
        # them the benchmark's event-loop wait p99 went from 25-35 ms to 42-44 ms.
        self.trace_curve = self.trace_plot.plot(pen=pg.mkPen("#0969da", width=1))
        # pyqtgraph draws at most a few points per pixel column (peak-preserving), whatever the
        # trace length; without it a 10⁵-point trace costs more than a frame's budget.
        self.trace_curve.setDownsampling(auto=True, method="peak")
        self.trace_curve.setClipToView(True)
        self.trace_curve.setSkipFiniteCheck(True)
        self.trace_ranges = (
            RangeFollower(self.trace_plot, pg.ViewBox.XAxis),
            RangeFollower(self.trace_plot, pg.ViewBox.YAxis),
        )
        dashed = pg.mkPen("#cf222e", width=1, style=Qt.DashLine)
        self.full_scale_lines = [
            pg.InfiniteLine(angle=0, pen=dashed, movable=False) for _ in range(2)
        ]
        for line in self.full_scale_lines:
            self.trace_plot.addItem(line, ignoreBounds=True)

        self.spectrum_plot = pg.PlotWidget(title="spin-noise spectrum of the rotation angle")
        self.spectrum_plot.setLabel("bottom", "frequency", units="Hz")
        self.spectrum_plot.setLabel("left", "PSD (rad²/Hz)")
        # A log axis labels decades itself; a prefix would read as 10² × 1e-18.
        self.spectrum_plot.getAxis("left").enableAutoSIPrefix(False)
        self.spectrum_curve = self.spectrum_plot.plot(pen=pg.mkPen("#57606a", width=1))
        self.spectrum_curve.setDownsampling(auto=True, method="peak")
        self.spectrum_curve.setClipToView(True)
        self.spectrum_curve.setSkipFiniteCheck(True)
        self.fit_curve = self.spectrum_plot.plot(pen=pg.mkPen("#cf222e", width=1))
        self.larmor_line = pg.InfiniteLine(
            angle=90,
            pen=pg.mkPen("#8250df", width=1, style=Qt.DashLine),
            movable=False,
            label="ν_L",
            labelOpts={"position": 0.9, "color": "#8250df"},
        )
        self.larmor_line.setVisible(False)
        self.spectrum_plot.addItem(self.larmor_line, ignoreBounds=True)
        self.spectrum_ranges = (
            RangeFollower(self.spectrum_plot, pg.ViewBox.XAxis),
            RangeFollower(self.spectrum_plot, pg.ViewBox.YAxis),
        )
        self.fit_label = QLabel(_fit_text(None))
        self.fit_label.setStyleSheet("font-family: monospace;")
        self.fit_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        # A fixed width: no text (a long flag, an error) can squeeze the spectrum.
        self.fit_label.setFixedWidth(300)
        self.fit_label.setWordWrap(True)
        self._apply_log_mode()

        spectrum_row = QWidget()
        spectrum_layout = QHBoxLayout(spectrum_row)
        spectrum_layout.setContentsMargins(0, 0, 0, 0)
        spectrum_layout.addWidget(self.spectrum_plot, 1)
        spectrum_layout.addWidget(self.fit_label)
        plots = QSplitter(Qt.Vertical)
        plots.addWidget(self.trace_plot)
        plots.addWidget(spectrum_row)
        plots.setSizes([300, 500])

        layout = QVBoxLayout(self)
        layout.addLayout(controls)
        layout.addLayout(status)
        layout.addWidget(self.banner)
        layout.addWidget(plots, 1)
        layout.addWidget(self.flags_button)
        layout.addWidget(self.flags_label)

        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REDRAW_INTERVAL_MS)

    # --- controls --------------------------------------------------------------------------------
    def _pause(self, paused: bool) -> None:
        if self.source is None:
            return
        if paused:
            self.source.running.clear()
        else:
            self.source.running.set()
        self.pause_button.setText("Resume" if paused else "Pause")

    def _fix(self) -> None:
        action = self.fixes.get(self.banner_button.text())
        if action is not None:
            action()

    def _show_flags(self, shown: bool) -> None:
        self.flags_label.setVisible(shown)
        self.flags_button.setArrowType(Qt.DownArrow if shown else Qt.RightArrow)

    def missing(self, frame: LiveFrame | None) -> tuple[str, str] | None:
        """Return (what is missing for a spectrum, the button that fixes it), or None."""
        if self.source is not None and self.source.warning():
            return (self.source.warning(), "Real-time clock")
        if frame is None:
            return None
        if "no light" in frame.message:
            return ("no light on the detector: the probe laser's emission is off", "Emission on")
        if math.isfinite(frame.imbalance) and abs(frame.imbalance) > UNBALANCED:
            return (
                f"polarimeter unbalanced (imbalance {frame.imbalance:+.2f}): the spectrum is "
                "the laser's intensity noise",
                "Balance",
            )
        if self.temperature_K is not None:
            temperature = self.temperature_K()
            if math.isfinite(temperature) and temperature < MIN_SPECTRUM_TEMPERATURE_K:
                return (
                    f"cell cold ({temperature:.0f} K): below {MIN_SPECTRUM_TEMPERATURE_K:.0f} K "
                    "the spin noise is far under the shot noise",
                    "Warm up",
                )
        return None

    def _enable_fit(self, enabled: bool) -> None:
        if enabled:
            self.fitter.enabled.set()
        else:
            self.fitter.enabled.clear()
        self._drawn_fit = -1

    def _apply_log_mode(self) -> None:
        self.spectrum_plot.setLogMode(x=self.log_x.isChecked(), y=self.log_y.isChecked())
        for follower in getattr(self, "spectrum_ranges", ()):
            follower.resume()  # the axis's units changed
        self._drawn_fit = -1  # the Larmor marker is placed in the axis's own coordinates
        self._drawn_version = -1

    # --- drawing ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Draw the newest frames if they changed; always update the counters."""
        frame = self.processor.latest
        if frame is not None and frame.version != self._drawn_version:
            self._draw_frame(frame)
            self._drawn_version = frame.version
            self.redraws += 1
            self._frame_times.append(time.perf_counter())
        fit = self.fitter.latest
        if fit is not None and fit.version != self._drawn_fit:
            # A fit of an earlier average describes another apparatus state: not shown.
            current = fit.average < 0 or frame is None or fit.average == frame.average
            enabled = self.fitter.enabled.is_set()
            self._draw_fit(fit if enabled and current else None, stale=enabled and not current)
            self._drawn_fit = fit.version
        self._draw_counts(frame)
        self._draw_banner(frame)

    def _draw_banner(self, frame: LiveFrame | None) -> None:
        missing = self.missing(frame)
        self.banner.setVisible(missing is not None)
        if missing is not None:
            self.banner_label.setText(missing[0])
            self.banner_button.setText(missing[1])
            self.banner_button.setEnabled(missing[1] in self.fixes)

    def _draw_frame(self, frame: LiveFrame) -> None:
        self.trace_curve.setData(frame.trace_time_s, frame.trace_V)
        if frame.trace_V.size:
            self.trace_ranges[0].follow(-self.processor.trace_window_s, 0.0)
            self.trace_ranges[1].follow(float(frame.trace_V.min()), float(frame.trace_V.max()))
        positive = frame.psd[frame.psd > 0]
        if positive.size:
            f_low, f_high = float(frame.frequency_Hz[0]), float(frame.frequency_Hz[-1])
            p_low, p_high = float(positive.min()), float(positive.max())
            if self.log_x.isChecked():
                f_low, f_high = math.log10(f_low), math.log10(f_high)
            if self.log_y.isChecked():
                p_low, p_high = math.log10(p_low), math.log10(p_high)
            self.spectrum_ranges[0].follow(f_low, f_high)
            self.spectrum_ranges[1].follow(p_low, p_high)
        self.full_scale_lines[0].setValue(frame.full_scale_V[0])
        self.full_scale_lines[1].setValue(-frame.full_scale_V[0])
        self.spectrum_curve.setData(frame.frequency_Hz, frame.psd)
        self.clip_label.setText("CLIPPED" if frame.clipped else "not clipped")
        self.clip_label.setStyleSheet(ALERT_STYLE if frame.clipped else QUIET_STYLE)
        self.average_label.setText(
            f"average {frame.average} ({frame.average_reason}): {frame.records} blocks, "
            f"{frame.segments} segments, {1e-6 * frame.sample_rate_Hz:.4g} MS/s; duty cycle "
            f"{_percent(frame.duty_cycle)}, {frame.gaps} gaps"
            + (f" ({frame.missing_samples} samples missing)" if frame.missing_samples else "")
        )

    def _draw_fit(self, frame: FitFrame | None, stale: bool = False) -> None:
        fit = None if frame is None else frame.fit
        flags = [] if fit is None else list(fit.flags)
        self.flags_button.setText(f"fit flags: {len(flags)}" if flags else "fit flags: none")
        self.flags_label.setText("\n".join(f"! {flag}" for flag in flags))
        if fit is None:
            self.fit_curve.setData([], [])
            self.larmor_line.setVisible(False)
            if stale:
                self.fit_label.setText("fit: waiting for the new average")
            else:
                self.fit_label.setText(_fit_text(frame) if frame is not None else "fit: off")
            return
        self.fit_curve.setData(fit.frequency_Hz, fit.predicted)
        larmor = fit.larmor_frequency_Hz.value
        if math.isfinite(larmor) and larmor > 0:
            self.larmor_line.setValue(math.log10(larmor) if self.log_x.isChecked() else larmor)
            self.larmor_line.setVisible(True)
        else:
            self.larmor_line.setVisible(False)
        self.fit_label.setText(_fit_text(frame))

    def _draw_counts(self, frame: LiveFrame | None) -> None:
        c = self.processor.counts
        board = ""
        if self.source is not None:
            board = (
                f"; board: {self.source.board_gaps} gaps, {self.source.board_missing} samples lost"
            )
        self.counts_label.setText(
            f"blocks: {c.received} received, {c.processed} averaged, {c.clipped} clipped, "
            f"{c.rejected} unusable, {c.changed} taken while the apparatus changed, "
            f"{c.dropped} dropped by the monitor{board}"
        )
        self.counts_label.setStyleSheet(ALERT_STYLE if c.dropped else QUIET_STYLE)
        messages = []
        if self.source is not None and self.source.error:
            messages.append(f"digitiser: {self.source.error}")
        if self.source is not None and self.source.stalled_s() > STALLED_S:
            messages.append(
                f"digitiser: no block for {self.source.stalled_s():.0f} s (the board writes "
                "its deep memory slower than the stream's rate)"
            )
        if self.source is not None and self.source.watch is not None and self.source.watch.error:
            messages.append(f"apparatus not readable: {self.source.watch.error}")
        if frame is not None and frame.message:
            messages.append(f"last block not used: {frame.message}")
        self.message_label.setText("\n".join(messages))
        self.message_label.setStyleSheet(ALERT_STYLE if messages else "")
        rate = self.frame_rate()
        if math.isfinite(rate):
            self.rate_label.setText(f"{rate:.0f} frames/s")

    def frame_rate(self) -> float:
        """Return the recent rate of drawn frames per second (NaN before two frames)."""
        if len(self._frame_times) < 2:
            return math.nan
        span = self._frame_times[-1] - self._frame_times[0]
        return (len(self._frame_times) - 1) / span if span > 0 else math.nan
