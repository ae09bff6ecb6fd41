"""The live monitor under a 2 MS/s stream: redraw rate, GUI event-loop latency, dropped blocks.

The whole main window runs offscreen on the simulated station (instrument panel polling, fitter
refitting, runner idle), but the live view is fed by a simulated streaming digitiser instead of
record-by-record acquisition: a thread that generates the polarimeter's V_diff and V_sum at
2 MS/s in blocks of one Red Pitaya buffer (16 384 samples), paced by the wall clock, from the
fast exact generator (`FastAngleNoise`, a SERF cell at 450 K in 500 nT, 5 mW probe) and the
detector model (`BalancedPolarimeter`), and offers each block to the monitor, which counts a
block it cannot take as dropped.

Measured over the run:
* redraws/s: frames the live view drew (a 10⁵-point V_diff trace and the 8193-bin spectrum set
  on the plots), and paint events of the two plot viewports (what Qt actually rendered);
* GUI event-loop latency: a probe thread posts a queued signal every 5 ms carrying its send
  time; the GUI thread's slot records how long it waited (median, p99, max), with the same
  window idle for 3 s before the stream starts as the baseline;
* blocks received, averaged and dropped, the input rate achieved, the fits done and their time,
  and the process's CPU use.

With ``--served`` the live view is fed instead by the real stream: `hotspin sim serve` runs the
embedded simulated lab (its clock at wall speed) as a child process, and the window's station
reaches it over TCP as real instruments (`--client-station`); the monitor streams the Red
Pitaya's deep memory at decimation 64 (1.95 MS/s) as it does on hardware. With ``--qnd`` the QND
tab is on; in the served mode its filter is given the model of a fit of a simulated entangling
record (a cold served cell has no spin noise to fit a model to). Then the blocks the *board*
lost (its ring overwritten before they were read: the served board not keeping real time) are
reported apart from those the *monitor* dropped, and the CPU of the GUI process, of its children
(fitter, QND tracker) and of the server.

Run: QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py [--seconds 20]
     [--screenshot out/bench_gui.png] [--qnd] [--served]
     [--qnd-cost GAP_EVERY]: only the QND tracker's CPU per block of the stream (no window)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.gui.app import MainWindow, save_screenshot
from hotspin.gui.stream import SignalProcessor
from hotspin.instruments.polarimeter import PolarimeterRecord
from hotspin.instruments.redpitaya import check_axi_decimation
from hotspin.instruments.station import Station
from hotspin.simulators.polarimeter_optics import BalancedPolarimeter, PolarimeterConfig
from hotspin.simulators.spin_noise import FastAngleNoise
from PyQt5.QtCore import QEvent, QObject, Qt, QTimer, pyqtSignal
from PyQt5.QtWidgets import QApplication

SAMPLE_RATE_HZ = 2e6
BLOCK = 1 << 14  # one Red Pitaya buffer
APPARATUS = ApparatusParameters(
    temperature_K=450.0, field_T=(500e-9, 0.0, 0.0), probe_power_W=5e-3, probe_detuning_Hz=60e9
)
PROBE_INTERVAL_S = 0.005
BASELINE_S = 3.0
TARGET_REDRAWS_PER_S = 30.0
TARGET_P99_LATENCY_S = 0.050


class StreamingDigitiser(threading.Thread):
    """Offers contiguous blocks of V_diff, V_sum at SAMPLE_RATE_HZ to the monitor, in real time."""

    def __init__(self, processor: SignalProcessor, station: Station) -> None:
        super().__init__(name="bench-digitiser", daemon=True)
        self.processor = processor
        d = derive(APPARATUS)
        self.angle = FastAngleNoise.from_derived(d, SAMPLE_RATE_HZ, seed=1)
        pol = station.config.polarimeter
        self.detector = BalancedPolarimeter(
            PolarimeterConfig(
                responsivity_A_per_W=pol.responsivity_A_per_W,
                gain_diff_V_per_A=pol.gain_diff_V_per_A,
                gain_sum_V_per_A=pol.gain_sum_V_per_A,
                nep_W_per_rtHz=pol.nep_W_per_rtHz,
            )
        )
        self.power_W = d.detected_power_W
        self.rng = np.random.default_rng(2)
        self.stop = threading.Event()
        self.blocks = 0
        self.late_s = 0.0  # how far generation fell behind the digitiser's clock, at worst
        self.elapsed_s = 0.0

    def run(self) -> None:
        start = time.perf_counter()
        block_s = BLOCK / SAMPLE_RATE_HZ
        while not self.stop.is_set():
            theta = self.angle.block(BLOCK)
            v_diff = self.detector.difference_voltage_at_balance(theta, self.power_W)
            v_sum = self.detector.sum_voltage(BLOCK, self.power_W, SAMPLE_RATE_HZ, self.rng)
            self.processor.offer(
                PolarimeterRecord(SAMPLE_RATE_HZ, v_diff, v_sum, (1.0, 1.0)),
                first_index=self.blocks * BLOCK,  # one block after the other, no gap
            )
            self.blocks += 1
            due = start + self.blocks * block_s
            wait = due - time.perf_counter()
            self.late_s = max(self.late_s, -wait)
            if wait > 0:
                self.stop.wait(wait)
        self.elapsed_s = time.perf_counter() - start


class LatencyProbe(QObject):
    """Posts a time stamp to the GUI thread every PROBE_INTERVAL_S; records the wait of each."""

    stamped = pyqtSignal(float)

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stamped.connect(self._arrived, Qt.QueuedConnection)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._post, name="bench-probe", daemon=True)

    def _post(self) -> None:
        while not self.stop.wait(PROBE_INTERVAL_S):
            self.stamped.emit(time.perf_counter())

    def _arrived(self, sent: float) -> None:
        self.waits.append(time.perf_counter() - sent)


class PaintCounter(QObject):
    """Counts the paint events of the widgets it filters."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Count a paint event; let every event through."""
        if event.type() == QEvent.Paint:
            self.count += 1
        return False


def cpu_seconds(pid: int) -> float:
    """Return the CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Return the living children of process ``pid``, from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found += [int(child) for child in task.read_text().split()]
    return found


def children_cpu_seconds(but: int | None = None) -> float:
    """Return the CPU seconds of this process's living descendants (the forkserver and the
    fitter and QND tracker it forked) but the process ``but`` (the server) and its own."""
    total, pending = 0.0, [pid for pid in _children(os.getpid()) if pid != but]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(pid)
        pending += _children(pid)
    return total


class ServedLab:
    """`hotspin sim serve` of the embedded lab at wall speed, as a child process, with the
    station file that reaches it over TCP."""

    def __init__(self, directory: Path, port_base: int = 47300) -> None:
        from hotspin.instruments.station_config import station_file_text

        text = station_file_text(None)
        lab = tomllib.loads(text)["simulation"]["lab"]["polarimeter"]
        self.balance_deg = float(lab["hwp_zero_deg"])  # where its polarimeter balances
        served = directory / "served.toml"
        served.write_text(text.replace("clock_speed = 100.0", "clock_speed = 1.0", 1))
        self.client = directory / "client.toml"
        self.log = directory / "serve.log"
        with self.log.open("w") as log:  # a file: a pipe nobody reads would stall the server
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "hotspin.cli", "sim", "serve"),
                    *("--station", str(served), "--client-station", str(self.client)),
                    *("--port-base", str(port_base)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120.0
        while "clients:" not in self.log.read_text():  # announced once it serves
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hotspin sim serve did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it closes every connection) and wait for it."""
        self.process.terminate()
        self.process.wait(timeout=30)


def entangling_fit_frame():
    """Return a fit frame of a simulated entangling record (the QND panel's model)."""
    from hotspin.gui.stream import FitFrame
    from hotspin.procedures.analyze import analyze_file
    from hotspin.procedures.parameters import assign

    from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

    values = assign(
        SIMULATE_PARAMETERS,
        ["seed=4", "temperature_K=450", "probe_power_W=2e-3", "field_nT=57.7,57.7,57.7"],
    )
    with tempfile.TemporaryDirectory() as directory:
        path = simulate_record(Path(directory) / "record.h5", 1.0, 100e3, values)
        (result,) = analyze_file(path, write=False).spectra
    return FitFrame(1, result.fit, "", 0, None, 0.0)


def qnd_cost(decimation: int, gap_every: int = 0) -> None:
    """Print the CPU the QND tracker spends (in this process, one thread) on the entangling model
    at the stream's rate: the new model (witness, filter), each block of the stream, and the
    run-ins after gaps of one block every ``gap_every`` blocks (0: none)."""
    from hotspin.gui.qnd_panel import QndTracker
    from hotspin.gui.stream import stream_block_samples

    fs = 125e6 / decimation
    block = stream_block_samples(decimation)
    tracker = QndTracker()
    frame = entangling_fit_frame()
    started = time.process_time()
    tracker.update_fit(frame.fit, fs)
    model_s = time.process_time() - started
    theta = np.random.default_rng(0).normal(0.0, 1e-7, block)
    costs, index = [], 0
    for k in range(120):
        if gap_every and k and k % gap_every == 0:
            index += block  # one block missing: a gap to the filter
        started = time.process_time()
        tracker.add(index, theta)
        costs.append(time.process_time() - started)
        index += block
    blocks_per_s = fs / block
    total = sum(costs) / len(costs) * blocks_per_s
    print(
        f"QND tracker at decimation {decimation} ({fs / 1e6:.4g} MS/s, {block}-sample blocks, "
        f"{blocks_per_s:.0f} blocks/s), gap every {gap_every or 'never'} blocks:\n"
        f"  new model (witness + filter):  {model_s:.3f} s CPU\n"
        f"  first 8 blocks (run-in):       {', '.join(f'{c * 1e3:.0f}' for c in costs[:8])} ms\n"
        f"  median block after them:       {1e3 * float(np.median(costs[8:])):.2f} ms\n"
        f"  over the 120 blocks:           {total:.2f} cores to keep up with the stream"
    )


def _percentile(ordered: list[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of the sorted values lie."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    """Stream for a while into the offscreen monitor and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measurement")
    parser.add_argument("--screenshot", help="save a PNG of the window at the end")
    parser.add_argument(
        "--qnd", action="store_true", help="QND tab on: witness and Kalman filter on the stream"
    )
    parser.add_argument(
        "--served",
        action="store_true",
        help="the real stream of a served lab (hotspin sim serve)",
    )
    parser.add_argument(
        "--decimation", type=int, default=64, help="the served stream's decimation (default 64)"
    )
    parser.add_argument(
        "--qnd-cost",
        type=int,
        metavar="GAP_EVERY",
        help="only time the QND tracker on the stream's blocks (a gap every GAP_EVERY blocks; "
        "0: none) and exit",
    )
    args = parser.parse_args()
    if args.qnd_cost is not None:
        qnd_cost(check_axi_decimation(args.decimation), args.qnd_cost)
        return

    app = QApplication.instance() or QApplication([])
    scratch = tempfile.TemporaryDirectory()
    served = ServedLab(Path(scratch.name)) if args.served else None
    server_pid = None if served is None else served.process.pid
    station = Station.from_file(None if served is None else served.client)
    station.configure()
    if served is not None:
        # Light on a balanced polarimeter, as after a balance (the served lab's own zero).
        station.laser.emission_enabled = True
        station.polarimeter.plate_angle_deg = served.balance_deg
    window = MainWindow(
        station,
        "out/bench-gui-data",
        acquire=served is not None,
        stream_decimation=check_axi_decimation(args.decimation),
    )
    if served is None:
        window.fitter.apparatus = lambda _power_W: APPARATUS  # the stream's own apparatus
    elif args.qnd:
        model = entangling_fit_frame()
        window.qnd_worker.fits = lambda: model
    window.qnd_panel.enable_box.setChecked(args.qnd)
    window.show()
    view = window.live_view
    painter = PaintCounter()
    for plot in (view.trace_plot, view.spectrum_plot):
        plot.viewport().installEventFilter(painter)
    digitiser = None if served is not None else StreamingDigitiser(window.processor, station)
    source = window.source
    probe = LatencyProbe()
    fit_times: list[float] = []
    last_fit = [0]

    def note_fit() -> None:
        frame = window.fitter.latest
        if frame is not None and frame.version != last_fit[0]:
            last_fit[0] = frame.version
            fit_times.append(frame.duration_s)

    fit_watch = QTimer()
    fit_watch.timeout.connect(note_fit)
    fit_watch.start(50)

    # Baseline: the same window, idle (no stream), for BASELINE_S; then the stream starts, one
    # second fills the trace and starts the average, and the measured stretch follows.
    probe.thread.start()
    measured: dict[str, float] = {}
    baseline: list[float] = []

    def stream() -> None:
        baseline.extend(probe.waits)
        probe.waits.clear()
        if digitiser is not None:
            digitiser.start()

    def begin() -> None:
        probe.waits.clear()
        fit_times.clear()
        measured.update(
            wall=time.perf_counter(),
            cpu=time.process_time(),
            redraws=view.redraws,
            paints=painter.count,
            received=window.processor.counts.received,
            children=children_cpu_seconds(server_pid),
            server=0.0 if served is None else cpu_seconds(served.process.pid),
            board_missing=0 if source is None else source.board_missing,
            board_gaps=0 if source is None else source.board_gaps,
            samples=0 if source is None else source._next_index,
        )

    if served is not None:
        # The stream runs from the start (the window streams as it opens): the baseline is the
        # window with its stream, before the measured stretch.
        source.running.clear()
        QTimer.singleShot(round(1000 * BASELINE_S), source.running.set)
    QTimer.singleShot(round(1000 * BASELINE_S), stream)
    QTimer.singleShot(round(1000 * (BASELINE_S + 1.0)), begin)
    QTimer.singleShot(round(1000 * (BASELINE_S + 1.0 + args.seconds)), app.quit)
    app.exec_()
    wall = time.perf_counter() - measured["wall"]
    cpu = time.process_time() - measured["cpu"]
    children = children_cpu_seconds(server_pid) - measured["children"]
    server_cpu = 0.0 if served is None else cpu_seconds(served.process.pid) - measured["server"]
    if source is not None:
        board_missing = source.board_missing - measured["board_missing"]
        board_gaps = source.board_gaps - measured["board_gaps"]
        streamed = source._next_index - measured["samples"]
    redraws = (view.redraws - measured["redraws"]) / wall
    paints = (painter.count - measured["paints"]) / wall
    received = window.processor.counts.received - measured["received"]
    frame = window.processor.latest
    if args.screenshot:
        save_screenshot(window, args.screenshot)
    probe.stop.set()
    if digitiser is not None:
        digitiser.stop.set()
        digitiser.join()
    probe.thread.join()
    counts = window.processor.counts
    window.shutdown()
    station.close()
    if served is not None:
        served.stop()
    scratch.cleanup()

    waits = sorted(probe.waits)
    p99 = _percentile(waits, 0.99)
    idle = sorted(baseline)
    bins = 0 if frame is None else frame.psd.size + window.processor._psd.mean_removed_bins
    points = 0 if frame is None else frame.trace_V.size
    if served is None:
        print(
            f"offscreen monitor, {wall:.1f} s measured; stream {SAMPLE_RATE_HZ / 1e6:g} MS/s in "
            f"{BLOCK}-sample blocks; trace {points} points, spectrum {bins} bins"
        )
        print(
            f"  input achieved:   {received * BLOCK / wall / 1e6:.3f} MS/s "
            f"(generator at worst {1e3 * digitiser.late_s:.1f} ms behind the digitiser clock)"
        )
    else:
        rate = source.sample_rate_Hz
        print(
            f"offscreen monitor on a served lab (hotspin sim serve, clock x1), {wall:.1f} s "
            f"measured; Red Pitaya deep-memory stream at decimation {source.decimation} "
            f"({rate / 1e6:.3f} MS/s) in {source.block_samples}-sample blocks; trace {points} "
            f"points, spectrum {bins} bins; QND tab {'on' if args.qnd else 'off'}"
        )
        print(
            f"  board:            {streamed} samples written in {wall:.1f} s "
            f"({streamed / wall / rate:.3f} x real time), of them {board_missing} lost in "
            f"{board_gaps} gaps before they were read (the board's shortfall), "
            f"{streamed - board_missing} streamed"
        )
    print(
        f"  redraws:          {redraws:.1f} frames/s drawn, {paints:.1f} plot paints/s "
        f"(target >= {TARGET_REDRAWS_PER_S:g} frames/s: "
        f"{'met' if redraws >= TARGET_REDRAWS_PER_S else 'MISSED'})"
    )
    print(
        f"  event-loop wait:  median {1e3 * statistics.median(waits):.2f} ms, "
        f"p99 {1e3 * p99:.2f} ms, max {1e3 * waits[-1]:.1f} ms over {len(waits)} probes "
        f"(target p99 < {1e3 * TARGET_P99_LATENCY_S:.0f} ms: "
        f"{'met' if p99 < TARGET_P99_LATENCY_S else 'MISSED'})"
    )
    print(
        f"  baseline, idle:   median {1e3 * statistics.median(idle):.2f} ms, "
        f"p99 {1e3 * _percentile(idle, 0.99):.2f} ms, max {1e3 * idle[-1]:.1f} ms over "
        f"{len(idle)} probes (the same window before the stream started)"
    )
    print(
        f"  blocks:           {counts.received} received, {counts.processed} averaged, "
        f"{counts.clipped} clipped, {counts.rejected} unusable, {counts.dropped} dropped "
        f"(target 0 dropped: {'met' if counts.dropped == 0 else 'MISSED'})"
    )
    if fit_times:
        print(
            f"  model fits:       {len(fit_times)} ({len(fit_times) / wall:.1f}/s), median "
            f"{1e3 * statistics.median(fit_times):.0f} ms, max {1e3 * max(fit_times):.0f} ms"
        )
    print(f"  CPU:              {cpu / wall:.2f} cores of {os.cpu_count()} (the whole process)")
    if served is not None:
        print(
            f"  CPU, children:    {children / wall:.2f} cores (fitter, QND tracker); GUI process "
            f"with its children {(cpu + children) / wall:.2f} (target <= 1.5); the served lab "
            f"{server_cpu / wall:.2f} cores"
        )
    if args.qnd:
        qnd = window.qnd_tracker.latest
        spins = 0 if qnd is None else qnd.spin.shape[0]
        print(
            f"  QND:              {window.qnd_worker.dropped} blocks dropped by the tracker's "
            f"queue, {spins} spin points back; {'' if qnd is None else qnd.error}"
        )


if __name__ == "__main__":
    main()
