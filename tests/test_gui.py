"""The live monitor and procedure runner (`hotspin gui`), offscreen, on the simulated lab.

Each window test opens the embedded simulated station, builds the main window with every worker
thread running, and shuts them all down afterwards (the window first, then the station).
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import threading
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pyqtgraph as pg
import pytest
from hotspin.analysis.spectra import angle_from_difference_and_sum
from hotspin.gui import worker
from hotspin.gui.app import MainWindow, save_screenshot
from hotspin.gui.instrument_panel import OLD_VALUE_STYLE
from hotspin.gui.monitor import RangeFollower
from hotspin.gui.polling import POLL_INTERVAL_S, InstrumentPoller, Reading
from hotspin.gui.run_viewer import RunViewer
from hotspin.gui.stream import CLIPPED_MESSAGE, ModelFitter, SignalProcessor
from hotspin.instruments.errors import LinkLostError
from hotspin.instruments.polarimeter import PolarimeterRecord
from hotspin.instruments.station import Station
from hotspin.procedures.parameters import assign
from hotspin.procedures.recorder import RunFile
from hotspin.procedures.registry import PROCEDURES
from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import QApplication

from hotspin.cli import main as cli_main
from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

WAIT_MS = 20_000  # upper bound for anything to happen; tests pass as soon as it does


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def station():
    station = Station.from_file(None)
    station.configure()
    yield station
    station.close()


@pytest.fixture
def window(qtbot, station, tmp_path):
    window = MainWindow(station, tmp_path / "data")
    qtbot.addWidget(window)
    window.show()
    yield window
    window.shutdown()


@pytest.fixture
def live_window(qtbot, tmp_path):
    """The main window on a simulated lab whose clock moves only when code waits: the board
    writes its deep memory exactly as fast as the monitor's stream reads it (on a clock that
    follows the wall, this machine's simulated board cannot keep up at 1.95 MS/s)."""
    station = Station.from_file(None, manual_clock=True)
    station.configure()
    window = MainWindow(station, tmp_path / "data")
    qtbot.addWidget(window)
    window.show()
    yield window
    window.shutdown()
    station.close()


def light_on_balanced(window: MainWindow, qtbot) -> None:
    """Switch the probe on and turn the plate to the simulated polarimeter's balance, from the
    GUI's controls, and wait until both commands are done."""
    panel = window.panel
    zero_deg = window.station.lab.config.polarimeter.hwp_zero_deg
    with qtbot.waitSignal(window.commands.finished, timeout=WAIT_MS) as plate:
        panel.plate_edit.setText(f"{zero_deg}")
        panel.plate_button.click()
    assert plate.args[1] == ""
    qtbot.waitUntil(lambda: bool(window.poller.readings["laser"].values), timeout=WAIT_MS)
    with qtbot.waitSignal(window.commands.finished, timeout=WAIT_MS) as emission:
        panel.emission_button.click()
    assert emission.args == ["laser emission → True", ""]


def warmup_form(window: MainWindow, **values: str):
    """Choose warm-up in the runner and type ``values`` into its form."""
    form = window.runner.select_procedure("warmup")
    for key, text in values.items():
        form.set_value(key, text)
    return form


def run_status(path: Path) -> str:
    with h5py.File(path, "r") as f:
        return str(f.attrs["status"])


# --- the window ----------------------------------------------------------------------------------
def test_window_opens_with_every_procedure_and_instrument(window, qtbot):
    assert "simulated lab" in window.windowTitle()
    combo = window.runner.procedure_combo
    assert [combo.itemText(i) for i in range(combo.count())] == list(PROCEDURES)
    qtbot.waitUntil(
        lambda: (
            window.panel.states
            == {"heater": "ok", "laser": "ok", "polarimeter": "ok", "coils": "ok"}
        ),
        timeout=WAIT_MS,
    )
    heater = window.panel.groups["heater"].values
    assert heater["temperature"].text().endswith(" K")
    assert window.panel.groups["laser"].values["emission"].text() == "off, no light"


def test_live_data_flows_from_the_simulated_lab(live_window, qtbot):
    window = live_window
    view, processor = window.live_view, window.processor
    # Emission off: the detector sees no light; the blocks are counted and the reason shown.
    qtbot.waitUntil(lambda: processor.counts.rejected > 0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "no light" in view.message_label.text(), timeout=WAIT_MS)
    assert processor.counts.processed == 0

    light_on_balanced(window, qtbot)
    qtbot.waitUntil(
        lambda: processor.latest is not None and processor.latest.segments >= 4, timeout=WAIT_MS
    )
    # The first fit starts the fitting process (imports scipy: slow on a loaded machine).
    qtbot.waitUntil(lambda: window.fitter.latest is not None, timeout=3 * WAIT_MS)
    qtbot.waitUntil(lambda: view._drawn_version == processor.latest.version, timeout=WAIT_MS)
    frame = processor.latest
    frequency, psd = view.spectrum_curve.getOriginalDataset()
    # The 8193 bins of 16 384-sample segments but those that mean removal biases (DC and one).
    assert frequency.size == 8193 - window.processor._psd.mean_removed_bins
    assert frequency[-1] == pytest.approx(frame.sample_rate_Hz / 2)
    assert np.all(psd > 0)
    _, trace = view.trace_curve.getOriginalDataset()
    assert 0 < trace.size <= 100_000
    assert np.all(np.abs(trace) <= frame.full_scale_V[0])
    assert "averaged" in view.counts_label.text()
    assert view.clip_label.text() == "not clipped"
    # The deep-memory stream: every block follows the one before it, nothing lost.
    source = window.source
    assert source.streams == 1 and (source.board_gaps, source.board_missing) == (0, 0)
    assert (frame.gaps, frame.missing_samples, frame.duty_cycle) == (0, 0, 1.0)
    assert frame.sample_rate_Hz == 125e6 / 64
    assert "duty cycle 100.0 %, 0 gaps" in view.average_label.text()
    assert "board: 0 gaps, 0 samples lost" in view.counts_label.text()
    # The model fit, overlaid with its values (at room temperature there is little to fit, and
    # a failed fit must say so as plainly as a good one shows its values).
    qtbot.waitUntil(lambda: "waiting" not in view.fit_label.text(), timeout=WAIT_MS)
    if window.fitter.latest.fit is not None:
        assert "Larmor" in view.fit_label.text() and "χ²/dof" in view.fit_label.text()
        assert view.fit_curve.getOriginalDataset()[1].size > 0
    else:
        assert view.fit_label.text().startswith("fit failed")
    qtbot.waitUntil(
        lambda: window.panel.groups["laser"].values["emission"].text() == "on, emitting",
        timeout=WAIT_MS,
    )
    qtbot.waitUntil(
        lambda: "mW" in window.panel.groups["polarimeter"].values["power"].text(), timeout=WAIT_MS
    )
    # Reset starts a new average; the stream's counts go on.
    received = processor.counts.received
    view.reset_button.click()
    assert processor.spectrum() is None
    assert processor.counts.received >= received


def test_heater_setpoint_outside_the_station_limit_is_refused(window, qtbot):
    panel = window.panel
    with qtbot.waitSignal(window.commands.finished, timeout=WAIT_MS) as refused:
        panel.setpoint_edit.setText("600")
        panel.setpoint_button.click()
    assert "InterlockError" in refused.args[1]
    assert "heater.max_temperature_K" in panel.message.text()
    panel.setpoint_edit.setText("hot")
    panel.setpoint_button.click()
    assert "is not a number" in panel.message.text()
    with qtbot.waitSignal(window.commands.finished, timeout=WAIT_MS) as accepted:
        panel.setpoint_edit.setText("350")
        panel.setpoint_button.click()
    assert accepted.args[1] == ""
    qtbot.waitUntil(
        lambda: window.poller.readings["heater"].values.get("setpoint_K") == 350.0,
        timeout=WAIT_MS,
    )


def test_a_failed_instrument_keeps_its_last_values_marked_with_the_error(window, qtbot):
    group = window.panel.groups["heater"]
    qtbot.waitUntil(lambda: window.panel.states.get("heater") == "ok", timeout=WAIT_MS)
    last_good = group.values["temperature"].text()
    lock, _ = window.poller.readers["heater"]

    def lost() -> dict:
        raise LinkLostError("heater", "connection reset by peer")

    window.poller.readers["heater"] = (lock, lost)
    qtbot.waitUntil(lambda: window.panel.states.get("heater") == "failed", timeout=WAIT_MS)
    assert "LinkLostError: heater: connection reset by peer" in group.state_label.text()
    assert group.values["temperature"].text() == last_good
    assert group.values["temperature"].styleSheet() == OLD_VALUE_STYLE
    assert window.panel.states["laser"] == "ok"  # one instrument's failure is its own


def test_a_held_instrument_is_busy_then_stale():
    lock = threading.RLock()
    poller = InstrumentPoller({"coils": (lock, lambda: {"field_T": 0.0})}, lock_timeout_s=0.01)
    good = poller.poll("coils")
    assert good.state(good.time_s) == "ok"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        busy = poller.poll("coils")
    finally:
        release.set()
        holder.join()
    assert busy.busy and busy.values == {"field_T": 0.0}
    assert busy.state(good.time_s + 0.5) == "busy"
    assert busy.state(good.time_s + 10.0) == "stale"
    assert Reading().state(0.0) == "stale"
    assert 1.0 / POLL_INTERVAL_S >= 2.0  # every instrument is read at 2 Hz or more


def test_plot_ranges_follow_the_data_until_the_operator_zooms(qtbot):
    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    follower = RangeFollower(plot, pg.ViewBox.YAxis)
    view = plot.getViewBox()
    follower.follow(0.0, 1.0)
    assert view.viewRange()[1] == pytest.approx([-0.05, 1.05])
    follower.follow(0.1, 0.9)  # still inside and filling most of the view: no change
    assert view.viewRange()[1] == pytest.approx([-0.05, 1.05])
    follower.follow(0.0, 3.0)
    assert view.viewRange()[1] == pytest.approx([-0.15, 3.15])
    view.sigRangeChangedManually.emit([False, True])  # the operator zoomed
    follower.follow(0.0, 10.0)
    assert view.viewRange()[1] == pytest.approx([-0.15, 3.15])
    view.enableAutoRange(pg.ViewBox.YAxis)  # the plot's 'A' button
    follower.follow(0.0, 10.0)
    assert view.viewRange()[1] == pytest.approx([-0.5, 10.5])
    assert not view.autoRangeEnabled()[pg.ViewBox.YAxis]


# --- the procedure runner ------------------------------------------------------------------------
def test_a_procedure_runs_from_the_gui_to_completion_and_its_file_appears(window, qtbot):
    warmup_form(
        window, target_temperature_K="295", tolerance_K="1", dwell_s="0", sample_interval_s="0.1"
    )
    window.runner.queue_button.click()
    [run] = window.runner.queue.runs
    qtbot.waitUntil(lambda: run.status == "completed", timeout=WAIT_MS)
    assert run.path is not None and run.path.exists()
    assert run.path.is_relative_to(Path(window.runner.directory_edit.text()))
    assert run_status(run.path) == "completed"
    qtbot.waitUntil(lambda: window.runner.table.item(0, 2).text() == "completed", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.panel.setpoint_button.isEnabled(), timeout=WAIT_MS)

    window.runner.table.selectRow(0)
    with qtbot.waitSignal(window.viewer.loaded, timeout=WAIT_MS):  # read off the GUI thread
        window.runner.open_button.click()
    assert window.tabs.currentWidget() is window.viewer
    contents = window.viewer.contents
    assert contents is not None and contents.status == "completed"
    assert window.viewer.results_table.rowCount() == contents.steps >= 1
    assert "final_temperature_K" in contents.summary


def test_abort_stops_the_run_safely_and_cancels_the_queue(window, qtbot):
    warmup_form(window, target_temperature_K="450", dwell_s="60", sample_interval_s="0.1")
    window.runner.queue_button.click()
    window.runner.queue_button.click()
    first, second = window.runner.queue.runs
    qtbot.waitUntil(lambda: first.status == "running" and first.steps >= 1, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.runner.abort_button.isEnabled(), timeout=WAIT_MS)
    assert not window.panel.setpoint_button.isEnabled()  # the run owns the instruments
    window.runner.abort_button.click()
    qtbot.waitUntil(lambda: first.status == "aborted", timeout=WAIT_MS)
    assert second.status == "cancelled" and second.path is None
    assert run_status(first.path) == "aborted"
    with h5py.File(first.path, "r") as f:
        assert f["results/temperature_K"].shape[0] >= 1  # the finished steps stay
    qtbot.waitUntil(lambda: window.panel.setpoint_button.isEnabled(), timeout=WAIT_MS)
    assert not window.runner.abort_button.isEnabled()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000", "target_temperature_K = 1000 is outside the allowed range [290, 700] K"),
        ("warm", "target_temperature_K = 'warm' is not a number"),
        ("600", "heater.max_temperature_K of the station"),
    ],
)
def test_a_bad_parameter_shows_an_error_and_starts_nothing(window, text, expected):
    form = warmup_form(window, target_temperature_K=text)
    window.runner.queue_button.click()
    assert expected in window.runner.error_label.text()
    assert window.runner.error_label.text().startswith("not queued")
    assert window.runner.queue.runs == []
    assert window.runner.table.rowCount() == 0
    assert not Path(window.runner.directory_edit.text()).exists()  # no run file, no directory
    if text != "600":  # in range for the parameter, refused only by the station's limit
        assert form.inputs["target_temperature_K"].styleSheet() != ""


def test_screenshot_of_the_monitor_during_a_run(live_window, qtbot, tmp_path):
    window = live_window
    light_on_balanced(window, qtbot)
    qtbot.waitUntil(
        lambda: window.processor.latest is not None and window.processor.latest.segments >= 4,
        timeout=WAIT_MS,
    )
    # A warm-up leaves the digitiser alone: the stream goes on while it runs (on this manual
    # clock its waits move time on faster than the board is read: gaps, shown as such).
    warmup_form(window, target_temperature_K="450", dwell_s="60", sample_interval_s="0.1")
    window.runner.queue_button.click()
    [run] = window.runner.queue.runs
    qtbot.waitUntil(lambda: run.status == "running" and run.steps >= 1, timeout=WAIT_MS)
    assert window.source.streaming
    path = save_screenshot(window, tmp_path / "monitor-during-run.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(str(path))
    assert (image.width(), image.height()) == (window.width(), window.height())
    window.runner.abort_button.click()
    try:
        qtbot.waitUntil(lambda: run.status == "aborted", timeout=WAIT_MS)
    except Exception:
        # Once (of many runs, under load) the abort did not end the run within WAIT_MS: say
        # where every thread was, so that the next time shows why.
        faulthandler.dump_traceback(all_threads=True)
        raise AssertionError(f"run still {run.status!r}: {run.message!r}") from None


def test_a_recording_procedure_takes_the_digitiser_from_the_stream_and_gives_it_back(
    live_window, qtbot
):
    window = live_window
    source, polarimeter = window.source, window.station.polarimeter
    light_on_balanced(window, qtbot)
    qtbot.waitUntil(lambda: window.processor.counts.processed > 0, timeout=WAIT_MS)
    streaming_during_acquire = []
    acquire = polarimeter.acquire

    def spy(*args, **kwargs):
        streaming_during_acquire.append(source.streaming)
        return acquire(*args, **kwargs)

    polarimeter.acquire = spy
    form = window.runner.select_procedure("balance")
    form.set_value("coarse_step_deg", "10")
    form.set_value("fine_points", "3")
    window.runner.queue_button.click()
    [run] = window.runner.queue.runs
    qtbot.waitUntil(lambda: run.status in ("completed", "failed"), timeout=3 * WAIT_MS)
    assert run.status == "completed", run.message
    assert streaming_during_acquire and not any(streaming_during_acquire)
    # After the run a new stream starts, placed after the first: the run's time is a gap.
    qtbot.waitUntil(lambda: source.streams == 2 and source.streaming, timeout=WAIT_MS)
    received = window.processor.counts.received
    qtbot.waitUntil(lambda: window.processor.counts.received > received, timeout=WAIT_MS)
    assert source.board_missing > 0


# --- the run viewer ------------------------------------------------------------------------------
def test_the_run_viewer_shows_spectra_model_and_results(qtbot, tmp_path):
    path = tmp_path / "run.h5"
    frequency = np.linspace(0.0, 5000.0, 101)
    with RunFile(path, "spin_noise", {"averages": 20}) as run:
        for step, larmor in enumerate((1000.0, 2000.0)):
            psd = 1e-14 + 1e-12 / (1 + ((frequency - larmor) / 50.0) ** 2)
            model = np.where(frequency > 0, psd, np.nan)
            run.append_spectrum(frequency, psd, 0.1 * psd, {"window": "hann"}, model=model)
            run.append_results({"larmor_frequency_Hz": (larmor, "Hz"), "step": (step, "")})
        run.write_summary({"larmor_frequency_Hz": (1500.0, 2.0, "Hz")})
    viewer = RunViewer(tmp_path)
    qtbot.addWidget(viewer)
    contents = viewer.open_run(path)
    assert contents is not None and contents.status == "completed"
    assert "spin_noise" in viewer.header.text() and "completed" in viewer.header.text()
    assert viewer.row_spin.maximum() == 1
    curves = viewer.spectrum_plot.getPlotItem().listDataItems()
    assert len(curves) == 3  # the other row, the chosen row, the model
    assert viewer.results_table.rowCount() == 2
    assert viewer.results_table.horizontalHeaderItem(0).text() == "larmor_frequency_Hz [Hz]"
    assert viewer.summary_table.item(0, 1).text() == "1500.0 ± 2.0 Hz"
    assert viewer.open_run(tmp_path / "missing.h5") is None
    assert "cannot open" in viewer.header.text()


def test_the_run_viewer_reads_a_file_off_the_gui_thread(qtbot, tmp_path):
    path = tmp_path / "run.h5"
    with RunFile(path, "balance", {"points": 3}) as run:
        run.append_results({"angle_deg": (12.0, "deg")})
    viewer = RunViewer(tmp_path)
    qtbot.addWidget(viewer)
    with qtbot.waitSignal(viewer.loaded, timeout=WAIT_MS):
        viewer.open_in_background(path)
        assert viewer.header.text() == f"reading {path} …"  # until the worker has read it
    assert viewer.contents.procedure == "balance" and "completed" in viewer.header.text()
    assert viewer.results_table.rowCount() == 1
    with qtbot.waitSignal(viewer.loaded, timeout=WAIT_MS):
        viewer.open_in_background(tmp_path / "missing.h5")
    assert viewer.header.text().startswith(f"cannot open {tmp_path / 'missing.h5'}")


def test_the_run_viewer_analyses_a_record_off_the_gui_thread(qtbot, tmp_path):
    values = assign(SIMULATE_PARAMETERS, ["seed=3", "probe_power_W=5e-3", "field_nT=100,0,0"])
    path = simulate_record(tmp_path / "record.h5", 0.5, 100e3, values)
    viewer = RunViewer(tmp_path)
    qtbot.addWidget(viewer)
    assert not viewer.analyse_button.isEnabled()  # nothing open yet
    assert viewer.open_run(path).psd.shape[0] == 0  # a raw record: no spectrum yet
    with qtbot.waitSignal(viewer.analysed, timeout=WAIT_MS):
        viewer.analyse_button.click()
        assert not viewer.analyse_button.isEnabled()  # one analysis at a time
    report = viewer.analysis_text.toPlainText()
    assert "larmor" in report.lower() and "results written to" in report
    assert viewer.contents.psd.shape[0] == 1  # the spectrum the analysis stored is shown
    assert viewer.analyse_button.isEnabled()
    path.write_bytes(b"not hdf5")
    with qtbot.waitSignal(viewer.analysed, timeout=WAIT_MS):
        viewer.analyse_button.click()
    assert "cannot analyse" in viewer.analysis_text.toPlainText()


# --- the signal chain without Qt ------------------------------------------------------------------
class Gains:
    """The calibration of a polarimeter with equal gains on both outputs."""

    def rotation_angle_rad(self, record: PolarimeterRecord) -> np.ndarray:
        return angle_from_difference_and_sum(record.v_diff, record.v_sum, 1.0, 1.0)

    def imbalance(self, record: PolarimeterRecord) -> float:
        return float(np.mean(record.v_diff) / np.mean(record.v_sum))

    def detected_power_W(self, record: PolarimeterRecord) -> float:
        return float(np.mean(record.v_sum))


def block(n: int = 512, light_V: float = 0.5, offset_V: float = 0.0, seed: int = 0):
    noise = 1e-3 * np.random.default_rng(seed).standard_normal(n)
    return PolarimeterRecord(1e6, noise + offset_V, np.full(n, light_V), (1.0, 1.0))


def test_the_processor_counts_dropped_blocks_and_never_joins_across_them():
    processor = SignalProcessor(Gains(), segment_length=1024, queue_blocks=1)
    assert processor.offer(block(seed=1), first_index=0)
    assert not processor.offer(block(seed=2), first_index=512)  # the queue is full: dropped
    assert (processor.counts.received, processor.counts.dropped) == (2, 1)
    processor.start()
    processor.stop()  # processes what was queued, then ends
    assert processor.offer(block(seed=3), first_index=1024)
    processor.start()
    processor.stop()
    assert processor.counts.processed == 2
    # Two half-segment blocks around a dropped one: no segment spans the gap, which the
    # average counts (one gap, the dropped block's 512 samples missing of 1536).
    frame = processor.latest
    assert frame is not None and frame.segments == 0
    assert (frame.gaps, frame.missing_samples) == (1, 512)
    assert frame.duty_cycle == pytest.approx(1024 / 1536)

    joined = SignalProcessor(Gains(), segment_length=1024)
    joined.process(block(seed=1), first_index=0)
    joined.process(block(seed=3), first_index=512)
    assert joined.latest.segments == 1
    assert (joined.latest.gaps, joined.latest.duty_cycle) == (0, 1.0)


def test_the_processor_leaves_clipped_and_dark_blocks_out_of_the_spectrum():
    processor = SignalProcessor(Gains(), segment_length=256)
    processor.process(block(light_V=0.0))
    assert processor.latest.message.startswith("v_sum must be > 0 V")
    assert np.isnan(processor.latest.imbalance)
    processor.process(block(offset_V=1.0))  # V_diff at the full scale
    assert processor.latest.clipped and processor.latest.message == CLIPPED_MESSAGE
    assert processor.latest.segments == 0
    processor.process(block())
    assert processor.latest.segments == 3 and not processor.latest.clipped
    c = processor.counts
    assert (c.processed, c.clipped, c.rejected) == (1, 1, 1)
    # A new sample rate (a procedure changed the decimation) starts a new average.
    faster = block()
    processor.process(PolarimeterRecord(2e6, faster.v_diff, faster.v_sum, faster.full_scale_V))
    assert processor.latest.sample_rate_Hz == 2e6 and processor.latest.records == 1


# --- the command line ----------------------------------------------------------------------------
def test_hotspin_gui_opens_the_station_and_closes_it_safe(monkeypatch, qapp, tmp_path):
    closed = []
    original = Station.from_file

    def from_file(path=None, transport=None, clock=None, *, persist=False):
        assert persist  # the embedded lab is the kept one, as for hotspin run
        station = original(path, transport, clock, persist=persist)
        close = station.close
        station.close = lambda: (closed.append(station), close())
        return station

    monkeypatch.setattr(Station, "from_file", from_file)
    stations = []
    original_configure = Station.configure

    def configure(self):
        original_configure(self)
        stations.append(self)
        self.coils.set_field([200e-9, 0.0, 0.0])  # as an operator might from the panel

    monkeypatch.setattr(Station, "configure", configure)
    # The event loop returns at once, as if the operator had closed the window.
    monkeypatch.setattr(QApplication, "exec_", lambda self: 0)
    assert cli_main(["gui", "--data", str(tmp_path)]) == 0
    assert len(closed) == 1
    lab = stations[0].lab
    assert np.all(lab.coils.currents_A == 0.0)  # the GUI's exit ramped the coils down


def test_hotspin_gui_help_names_the_station_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["gui", "--help"])
    assert exit_.value.code == 0
    assert "--station" in capsys.readouterr().out


def test_a_fitting_process_that_cannot_start_is_reported_and_stop_still_works(monkeypatch):
    class RefusingProcess:
        def __init__(self, **_):
            pass

        def start(self):
            raise RuntimeError("no new processes here")

    spawn = multiprocessing.get_context("spawn")
    context = SimpleNamespace(
        Pipe=spawn.Pipe, Process=RefusingProcess, set_forkserver_preload=lambda modules: None
    )
    monkeypatch.setattr(worker, "get_context", lambda method: context)
    fitter = ModelFitter(processor=None, apparatus=lambda power: "the apparatus")
    frame = fitter.fit_once(SimpleNamespace(segments=3), detected_power_W=1e-3)
    assert frame.fit is None and frame.error == "RuntimeError: no new processes here"
    fitter.stop()  # no process was born: nothing to end, no error
