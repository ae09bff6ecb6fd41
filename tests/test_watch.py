"""`hotspin gui --watch FILE` follows a run file another process is writing with h5py SWMR."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hotspin.gui.run_viewer import RunViewer
from hotspin.gui.watch import RunFileWatcher

WAIT_MS = 20_000

# A writer in its own process: SWMR file with the run file's groups (root status, spectra rows,
# a results column); it appends one row per line read on stdin and answers when it is flushed.
WRITER = textwrap.dedent(
    """
    import sys
    import h5py
    import numpy as np

    f = h5py.File(sys.argv[1], "w", libver="latest")
    f.attrs["procedure"] = "spin_noise"
    f.attrs["status"] = "running"
    f.create_group("parameters").attrs["averages"] = 20
    spectra = f.create_group("spectra")
    frequency = np.linspace(0.0, 5000.0, 101)
    spectra.create_dataset("frequency", data=frequency)
    psd = spectra.create_dataset("psd", shape=(0, 101), maxshape=(None, 101), chunks=(1, 101))
    step = f.create_group("results").create_dataset("step", shape=(0,), maxshape=(None,),
                                                    chunks=(64,))
    step.attrs["units"] = ""
    f.swmr_mode = True
    for line in sys.stdin:
        n = psd.shape[0]
        larmor = 1000.0 * (n + 1)
        psd.resize((n + 1, 101))
        psd[n] = 1e-14 + 1e-12 / (1 + ((frequency - larmor) / 50.0) ** 2)
        step.resize((n + 1,))
        step[n] = n
        psd.flush()
        step.flush()
        print(f"row {n + 1}", flush=True)
    f.close()
    """
)


@pytest.fixture
def writer(tmp_path):
    path = tmp_path / "growing.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def append() -> str:
        process.stdin.write("next\n")
        process.stdin.flush()
        return process.stdout.readline().strip()

    yield path, append
    process.stdin.close()
    process.wait(timeout=20)


def test_watch_follows_a_file_that_another_process_is_writing(qtbot, writer):
    path, append = writer
    assert append() == "row 1"
    viewer = RunViewer(path.parent)
    qtbot.addWidget(viewer)
    watcher = RunFileWatcher(path, viewer, interval_s=0.05)
    watcher.start()
    try:
        qtbot.waitUntil(
            lambda: viewer.contents is not None and viewer.contents.steps == 1, timeout=WAIT_MS
        )
        assert "running" in viewer.header.text()
        for rows in (2, 3):
            assert append() == f"row {rows}"
            qtbot.waitUntil(lambda r=rows: viewer.contents.steps == r, timeout=WAIT_MS)
        assert viewer.contents.psd.shape == (3, 101)
        assert list(viewer.contents.results["step"].values) == [0, 1, 2]
        assert viewer.results_table.rowCount() == 3
    finally:
        watcher.stop()


def test_hotspin_gui_help_names_the_watch_option(capsys):
    from hotspin.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["gui", "--help"])
    assert "--watch FILE" in capsys.readouterr().out


# `hotspin run record`'s procedure in its own process, on the embedded simulated lab with a
# clock that moves only when code waits: a hot cell, the field along x (across the probe), the
# polarimeter balanced. After every flush it says how many samples per channel are on disk and
# waits for a line on stdin, so the test paces the record without sleeping.
RECORD_WRITER = textwrap.dedent(
    """
    import sys
    from hotspin.instruments.station import Station
    from hotspin.procedures.base import run_procedure
    from hotspin.procedures.recorder import ContinuousRecord
    from hotspin.procedures.registry import PROCEDURES

    flush = ContinuousRecord.flush

    def flush_and_wait(record):
        flush(record)
        print(record.stored, flush=True)
        sys.stdin.readline()

    ContinuousRecord.flush = flush_and_wait
    station = Station.from_file(None, manual_clock=True)
    station.configure()
    station.lab.oven.temperature_K = 450.0
    station.heater.setpoint_K = 450.0
    station.polarimeter.plate_angle_deg = station.lab.config.polarimeter.hwp_zero_deg
    station.coils.set_field((float(sys.argv[2]) * 1e-9, 0.0, 0.0))
    values = {"duration_s": 3.0, "decimation": 1024}
    run_procedure(PROCEDURES["record"].from_values(values), station, sys.argv[1])
    station.close()
    print("done", flush=True)
    """
)
FIELD_nT = 100.0


def test_watch_shows_the_monitor_view_of_a_record_another_process_writes(
    qtbot, tmp_path, quiet_root_logger
):
    import h5py
    from hotspin.gui.record_source import holds_record
    from hotspin.gui.watch import RecordWatchWindow

    path = tmp_path / "record.h5"
    writer = subprocess.Popen(
        [sys.executable, "-c", RECORD_WRITER, str(path), str(FIELD_nT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    window = None
    try:
        first = int(writer.stdout.readline())  # one second of the lab's time on disk
        assert holds_record(path)
        window = RecordWatchWindow(path, interval_s=0.05)
        qtbot.addWidget(window)
        source, view = window.source, window.live_view
        qtbot.waitUntil(lambda: source.samples == first, timeout=WAIT_MS)
        assert source.status == "running"  # read while the other process writes
        seen = [source.samples]
        writer.stdin.write("go\n")
        writer.stdin.flush()
        second = int(writer.stdout.readline())
        qtbot.waitUntil(lambda: source.samples == second, timeout=WAIT_MS)
        seen.append(source.samples)
        assert second > first and seen == [first, second]  # the watch followed it growing
        # The live view's average of the record's angle, with its duty cycle and no gaps.
        qtbot.waitUntil(
            lambda: (
                window.processor.latest is not None
                and window.processor.latest.records * source.block_samples >= second - first
            ),
            timeout=WAIT_MS,
        )
        frame = window.processor.latest
        assert frame.sample_rate_Hz == pytest.approx(125e6 / 1024)
        assert frame.duty_cycle == 1.0 and frame.gaps == 0 and source.board_gaps == 0
        assert "record record.h5:records/polarimeter" in frame.average_reason
        # The fit of that spectrum finds the Larmor line where the run's field puts it.
        qtbot.waitUntil(
            lambda: window.fitter.latest is not None and window.fitter.latest.fit is not None,
            timeout=60_000,  # a bound: the fitting child starts and fits
        )
        fit = window.fitter.latest.fit
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            truth = f["snapshot/start/simulation_truth"].attrs
            expected_Hz = float(truth["serf_larmor_frequency_Hz"])
            # The coils' field and the lab's residual one (a few nT).
            assert np.linalg.norm(truth["field_nT"]) == pytest.approx(FIELD_nT, abs=5.0)
        larmor = fit.larmor_frequency_Hz
        assert abs(larmor.value - expected_Hz) < max(5 * larmor.uncertainty, 0.03 * expected_Hz)
        view.refresh()
        assert view.larmor_line.isVisible()
        assert "Larmor" in view.fit_label.text()
        assert "duty cycle 100" in view.average_label.text()
        # The rest of the record: the QND panel is fed from the file's samples (the filter of
        # the fitted model over the record's θ blocks).
        writer.stdin.write("go\ngo\n")
        writer.stdin.flush()
        final = int(writer.stdout.readline())
        qtbot.waitUntil(lambda: source.samples == final, timeout=WAIT_MS)
        assert final == round(3.0 * 125e6 / 1024)
        qtbot.waitUntil(
            lambda: (
                window.qnd_tracker.latest is not None
                and window.qnd_tracker.latest.witness is not None
                and window.qnd_tracker.latest.spin.shape[0] > 0
            ),
            timeout=120_000,  # a bound: the QND child starts, solves the model and filters
        )
        qnd = window.qnd_tracker.latest
        assert qnd.error == "" and math.isfinite(qnd.xi2[-1]) and qnd.xi2[-1] > 0
        assert np.all(np.isfinite(qnd.spin)) and window.qnd_worker.dropped == 0
    finally:
        if window is not None:
            window.shutdown()
        _, err = writer.communicate("go\n" * 4, timeout=60)
    assert writer.returncode == 0, err


def test_stored_pieces_place_stored_samples_by_the_gap_table():
    from hotspin.procedures.analyze import stored_pieces

    positions, lengths = np.array([3, 3, 7]), np.array([5, 2, 4])
    # The rule of docs/data-file.md, sample by sample: index = first + k + Σ lengths(pos ≤ k).
    index = [100 + k + int(lengths[positions <= k].sum()) for k in range(12)]
    pieces = stored_pieces(100, positions, lengths, 1, 12)
    assert [(a, b) for a, b, _ in pieces] == [(1, 3), (3, 7), (7, 12)]
    for a, b, first in pieces:
        assert [first + (k - a) for k in range(a, b)] == index[a:b]


def test_a_record_with_a_gap_is_averaged_with_its_duty_cycle_and_gap(tmp_path):
    import h5py
    from hotspin.gui.record_source import RecordSource
    from hotspin.gui.stream import SignalProcessor
    from hotspin.procedures.recorder import ContinuousRecord

    path = tmp_path / "gap.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs.update(procedure="record", status="completed", hotspin_version="0")
        f.create_group("parameters").attrs.update(gain_diff_V_per_A=1e5, gain_sum_V_per_A=1e3)
        record = ContinuousRecord(
            f, "polarimeter", {"v_diff": 1 / 8192, "v_sum": 1 / 8192}, 1e5, 1250, 0.0
        )
        light = np.full(8192, 4096, dtype=np.int16)  # 0.5 V on the sum output
        for _ in range(2):
            noise = rng.normal(0, 20, 8192).astype(np.int16)
            record.append(record.next_index, np.stack([noise, light]))
        record.add_gap(record.next_index, 1000)
        noise = rng.normal(0, 20, 8192).astype(np.int16)
        record.append(record.next_index, np.stack([noise, light]))
        record.flush()
    processor = SignalProcessor(None, segment_length=1024)
    source = RecordSource(path, processor, block_samples=4096)
    processor.calibration = source
    processor.start()
    try:
        assert source.read_once() == 0  # the first reading only sees what is flushed
        assert source.read_once() == 3 * 8192
    finally:
        processor.stop()
    frame = processor.latest
    assert processor.counts.processed == 6 and processor.counts.dropped == 0
    assert frame.gaps == 1 and frame.missing_samples == 1000
    assert frame.duty_cycle == pytest.approx(3 * 8192 / (3 * 8192 + 1000))
    assert (source.board_gaps, source.board_missing) == (1, 1000)
    # A watch that begins on a record already written reads only its last catch_up_s.
    late = SignalProcessor(None, segment_length=1024)
    follower = RecordSource(path, late, block_samples=4096, catch_up_s=8192 / 1e5)
    late.calibration = follower
    late.start()
    try:
        assert follower.read_once() == 0 and follower.read_once() == 8192
    finally:
        late.stop()
    assert late.counts.processed == 2 and "from stored sample 16384" in late.average_reason
    # The light on the detector: V_sum / (G_sum · responsivity), the file's gain (0.52 A/W).
    assert frame.detected_power_W == pytest.approx(0.5 / (1e3 * 0.52))


def test_hotspin_gui_watch_opens_the_monitor_view_on_a_record_and_the_viewer_otherwise(
    qtbot, tmp_path, monkeypatch, writer
):
    from hotspin.gui import watch
    from hotspin.procedures.parameters import assign
    from PyQt5.QtWidgets import QApplication

    from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

    shown = []

    def run_event_loop() -> int:  # records the shown windows and returns at once
        shown.extend(w for w in QApplication.topLevelWidgets() if w.isVisible())
        return 0

    monkeypatch.setattr(QApplication.instance(), "exec_", run_event_loop)
    record = simulate_record(tmp_path / "record.h5", 0.1, 1e5, assign(SIMULATE_PARAMETERS, []))
    assert watch.main(record) == 0
    window = next(w for w in shown if isinstance(w, watch.RecordWatchWindow))
    assert window._shut_down  # its threads and children were stopped on the way out
    assert window.source._thread is None and window.fitter._process is None
    shown.clear()
    path, append = writer  # a run file without a record: the run viewer follows it
    append()
    assert watch.main(path) == 0
    assert any(isinstance(w, RunViewer) for w in shown)
    assert not any(isinstance(w, watch.RecordWatchWindow) for w in shown)
