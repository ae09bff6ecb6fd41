"""The live monitor follows the apparatus: an average never mixes states; the banner names what
is missing and its button fixes it (pytest-qt, offscreen)."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import Estimate
from hotspin.gui.monitor import LiveView, estimate_text
from hotspin.gui.stream import ApparatusState, ModelFitter, SignalProcessor, StreamSource
from hotspin.instruments.polarimeter import PolarimeterRecord
from hotspin.simulators.spin_noise import ExactSpinNoise

from tests.test_gui import (  # noqa: F401
    WAIT_MS,
    light_on_balanced,
    live_window,
    station,
    window,
)

RATE = 100e3
SEGMENT = 4096


def hot(field_nT: float) -> ApparatusParameters:
    """A hot cell (SERF line well above the shot noise) with the field along z."""
    return ApparatusParameters(
        temperature_K=430.0, field_T=(0.0, 0.0, 1e-9 * field_nT), probe_power_W=1e-3
    )


class AngleIsDifference:
    """A polarimeter whose V_diff is the rotation angle itself (V_sum the detected power)."""

    def rotation_angle_rad(self, record: PolarimeterRecord) -> np.ndarray:
        return np.asarray(record.v_diff, dtype=float)

    def imbalance(self, record: PolarimeterRecord) -> float:
        return 0.0

    def detected_power_W(self, record: PolarimeterRecord) -> float:
        return float(np.mean(record.v_sum))


def records(apparatus: ApparatusParameters, count: int, seed: int):
    spins = ExactSpinNoise.from_derived(derive(apparatus), RATE, seed=seed)
    for _ in range(count):
        b = spins.block(2 * SEGMENT)
        theta = b.atomic_angle_rad + b.white_noise_rad
        yield PolarimeterRecord(RATE, theta, np.full(theta.size, 1e-3), (1.0, 1.0))


def state(currents_A: float) -> ApparatusState:
    return ApparatusState((0.0, 0.0, currents_A), 430.0, 0.1, True, 12.0)


def test_a_field_change_mid_stream_starts_a_new_average_and_the_fit_finds_the_new_line(
    qtbot, quiet_root_logger
):
    processor = SignalProcessor(AngleIsDifference(), segment_length=SEGMENT)
    current = {"apparatus": hot(200.0)}
    fitter = ModelFitter(processor, lambda power_W: current["apparatus"])
    view = LiveView(processor, fitter)
    qtbot.addWidget(view)
    try:
        for record in records(hot(200.0), 6, seed=1):
            processor.process(record, state=state(0.1))
        assert processor.latest.records == 6
        first = processor.latest.average
        # The coils change the field to 400 nT: the next block starts a new average.
        current["apparatus"] = hot(400.0)
        for record in records(hot(400.0), 6, seed=2):
            processor.process(record, state=state(0.2))
        frame = processor.latest
        assert frame.average == first + 1 and frame.records == 6
        assert frame.average_reason == "field (coil currents) changed"
        view.refresh()
        assert "field (coil currents) changed" in view.average_label.text()
        spectrum, power, (average, _) = processor.spectrum()
        fit = fitter.fit_once(spectrum, power, average)
        assert fit.fit is not None, fit.error
        # The fitted field is the new one, and far from the old one.
        field = fit.fit.parameters["field_T"]
        assert abs(field.value - 400e-9) < 5 * field.uncertainty + 0.02 * 400e-9
        assert abs(field.value - 200e-9) > 10 * field.uncertainty
        view.refresh()
        assert "Larmor" in view.fit_label.text()
        # A fit of the earlier average is never shown over the new one.
        stale = fitter.fit_once(spectrum, power, average - 1)
        assert stale.fit is not None
        view.refresh()
        assert view.fit_label.text() == "fit: waiting for the new average"
    finally:
        fitter.stop()


def test_on_the_real_stream_a_field_change_starts_a_new_average_without_a_mixed_block(
    live_window,  # noqa: F811
    qtbot,
):
    gui = live_window
    lab, processor, source = gui.station, gui.processor, gui.source
    offered = []  # (first sample's station time, last sample's, the state it was averaged under)
    offer = processor.offer

    def spy(record, first_index=None, state=None):
        t0 = source._first_start_s + first_index / record.sample_rate_Hz
        offered.append((t0, t0 + record.v_diff.size / record.sample_rate_Hz, state))
        return offer(record, first_index, state)

    processor.offer = spy
    light_on_balanced(gui, qtbot)
    qtbot.waitUntil(lambda: processor.counts.processed >= 4, timeout=WAIT_MS)
    before = processor.latest.average
    # The coils change the field (from this thread, as a script would): a new average.
    began = lab.clock.now()
    lab.coils.set_currents([0.0, 0.0, 2e-3])
    ended = lab.clock.now()
    qtbot.waitUntil(
        lambda: processor.latest.average > before and processor.latest.records >= 2,
        timeout=WAIT_MS,
    )
    frame = processor.latest
    assert frame.average_reason == "field (coil currents) changed"
    qtbot.waitUntil(
        lambda: "field (coil currents) changed" in gui.live_view.average_label.text(),
        timeout=WAIT_MS,
    )
    new = [(t0, t1) for t0, t1, state in offered if state.coil_currents_A[2] == 2e-3]
    old = [(t0, t1) for t0, t1, state in offered if state.coil_currents_A[2] != 2e-3]
    assert new and old
    # No block under the new state began before the change did, none under the old one ended
    # after it was over: the blocks across the change are counted and left out.
    assert min(t0 for t0, _ in new) >= began
    assert max(t1 for _, t1 in old) <= ended
    counts = processor.counts  # every block accounted for: averaged, refused or across a change
    assert counts.received == (
        counts.processed + counts.rejected + counts.clipped + counts.changed + counts.dropped
    )
    assert len(offered) <= counts.received


def test_the_missing_light_banner_appears_with_emission_off_and_its_button_clears_it(
    live_window,  # noqa: F811
    qtbot,
):
    window = live_window  # noqa: F811
    view = window.live_view
    qtbot.waitUntil(lambda: view.banner.isVisible(), timeout=WAIT_MS)
    assert view.banner_button.text() == "Emission on"
    assert "no light" in view.banner_label.text()
    # The plate at the balance first, so that light brings a balanced polarimeter.
    zero_deg = window.station.lab.config.polarimeter.hwp_zero_deg
    with qtbot.waitSignal(window.commands.finished, timeout=WAIT_MS):
        window.panel.plate_edit.setText(f"{zero_deg}")
        window.panel.plate_button.click()
    qtbot.waitUntil(lambda: bool(window.poller.readings["laser"].values), timeout=WAIT_MS)
    with qtbot.waitSignal(window.commands.finished, timeout=WAIT_MS) as emission:
        view.banner_button.click()
    assert emission.args == ["laser emission → True", ""]
    # Light on: the next condition is the room-temperature cell, and its button is Warm up.
    qtbot.waitUntil(lambda: view.banner_button.text() == "Warm up", timeout=WAIT_MS)
    assert "cell cold" in view.banner_label.text()
    view.banner_button.click()
    assert window.runner.procedure_combo.currentText() == "warmup"


def test_log_frequency_is_the_default_and_flags_do_not_take_the_plot_width(window):  # noqa: F811
    view = window.live_view
    assert view.log_x.isChecked()
    assert view.fit_label.maximumWidth() == view.fit_label.minimumWidth()  # fixed width
    assert not view.flags_label.isVisible()
    view.flags_button.click()
    assert view.flags_label.isVisible()


def test_apparatus_states_name_what_changed():
    a = ApparatusState((0.0, 0.0, 0.1), 430.0, 0.1, True, 12.0)
    b = ApparatusState((0.0, 0.0, 0.1), 440.0, 0.1, False, 12.0)
    assert b.changes_from(a) == ["heater setpoint", "laser emission"]
    assert a.changes_from(a) == []
    assert math.isclose(a.plate_angle_deg, 12.0)


def test_the_qnd_tab_switches_the_live_filter_on_and_off(window):  # noqa: F811
    tabs = window.tabs
    assert "QND" in [tabs.tabText(i) for i in range(tabs.count())]
    worker = window.qnd_worker
    assert not worker.enabled.is_set()  # off by default (BENCHMARKS.md, issue 14)
    window.qnd_panel.enable_box.click()
    assert worker.enabled.is_set()
    window.qnd_panel.enable_box.click()
    assert not worker.enabled.is_set()


def test_on_a_fast_simulated_clock_the_banner_offers_the_real_time_clock(window, qtbot):  # noqa: F811
    view = window.live_view
    qtbot.waitUntil(lambda: view.banner.isVisible(), timeout=WAIT_MS)
    assert view.banner_button.text() == "Real-time clock"
    assert "runs 100 times faster than the wall" in view.banner_label.text()
    assert window.source.streams == 0  # no stream of a ring overwritten before it is read
    view.banner_button.click()
    assert window.station.clock.speed == 1.0
    assert window.source.warning() == ""
    view.refresh()
    assert not view.banner.isVisible() or view.banner_button.text() != "Real-time clock"


def test_fitted_values_are_rounded_to_their_uncertainty_and_a_degenerate_sigma_is_not_shown():
    assert estimate_text(Estimate(1.2345678, 0.0123, "Hz")) == "1.235 ± 0.012 Hz"
    # The Larmor 4e-06 ± 1.8e-03 Hz: a value below its σ has no digits of its own.
    assert estimate_text(Estimate(4e-06, 1.8e-03, "Hz")) == "0.0000 ± 0.0018 Hz"
    assert estimate_text(Estimate(-3e-3, 0.25, "nT")) == "-0.00 ± 0.25 nT"
    # The issue's |B| 7.564e-07 ± 1.6e-21 nT: no digits the fit cannot have.
    text = estimate_text(Estimate(7.564e-07, 1.6e-21, "nT"))
    assert text == "7.564e-07 nT (σ not resolved: the fit is degenerate)"
    assert estimate_text(Estimate(1.042550452128, 2.3e-11, "Hz")).startswith("1.04255 Hz (σ not")


class HangingBoard:
    """A digitiser whose stream never writes a block: its reader waits until the link closes."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.closed = threading.Event()
        self.written: list[str] = []

    def stream(self, **_):
        def items():
            self.waiting.set()
            self.closed.wait(60.0)  # a bound for the test; the real reader has none
            raise OSError("the session was closed")
            yield  # a generator

        return IterableStream(
            sample_rate_Hz=125e6 / 64,
            start_time_s=0.0,
            volts_per_code=(1 / 8192, 1 / 8192),
            items=items(),
            close=lambda: None,
        )

    def write(self, command: str) -> None:
        self.written.append(command)


class HangingLink:
    def __init__(self, board: HangingBoard) -> None:
        self.board = board

    def call(self, operation):
        return operation(self.board)

    def disconnect(self) -> None:
        self.board.closed.set()


def test_a_board_that_writes_no_block_is_cut_off_when_a_procedure_needs_the_digitiser():
    board = HangingBoard()
    polarimeter = SimpleNamespace(
        lock=threading.RLock(),
        config=SimpleNamespace(diff_channel=1, sum_channel=2),
        digitiser=HangingLink(board),
    )
    source = StreamSource(polarimeter, SignalProcessor(AngleIsDifference()), retry_s=0.01)
    source.start()
    try:
        assert board.waiting.wait(10.0)
        assert source.streaming and source.stalled_s() >= 0.0
        # The stream holds the polarimeter while it waits; suspending closes the link.
        assert source.suspend(timeout_s=0.2)
        assert board.closed.is_set() and not source.streaming
        assert "OSError" in source.error
        assert polarimeter.lock.acquire(timeout=1.0)  # free for the procedure
        polarimeter.lock.release()
    finally:
        source.stop()


class IterableStream:
    """The stream object the driver returns: iterable, with its rates and scales."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)

    def __iter__(self):
        return self.items
