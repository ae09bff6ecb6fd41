"""`hotspin gui`: the main window (live view, instrument panel, procedure runner, run viewer).

Threads: the digitiser's stream, the apparatus watch, the signal processor, the model fitter,
one poller per instrument, the command worker and the procedure runner all work off the GUI
thread; the GUI thread draws what they publish. While a procedure runs, the stream gives the
digitiser up (the procedure records itself). Every instrument access goes through the virtual
instruments' locks, which the procedures take too, so the monitor and a run never interleave
commands on one instrument.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Any

from hotspin.gui.commands import CommandQueue
from hotspin.gui.instrument_panel import InstrumentPanel
from hotspin.gui.monitor import LiveView
from hotspin.gui.polling import InstrumentPoller, station_readers
from hotspin.gui.qnd_panel import QndPanel, QndTracker, QndWorker
from hotspin.gui.run_viewer import RunViewer
from hotspin.gui.runner import ProcedureRunner
from hotspin.gui.stream import (
    STREAM_DECIMATION,
    ApparatusWatch,
    ModelFitter,
    SignalProcessor,
    StreamSource,
    station_fields,
    station_state,
)
from hotspin.instruments.station import Station
from hotspin.procedures.spectroscopy import apparatus_with_probe_power
from PyQt5.QtCore import Qt
from PyQt5.QtGui import QCloseEvent
from PyQt5.QtWidgets import (
    QApplication,
    QDockWidget,
    QDoubleSpinBox,
    QLabel,
    QMainWindow,
    QScrollArea,
    QTabWidget,
    QWidget,
)

#: Procedures that never use the digitiser: the live stream goes on while they run.
STREAM_DURING = frozenset({"warmup"})


class MainWindow(QMainWindow):
    """The monitor and runner of one station."""

    def __init__(
        self,
        station: Any,
        data_directory: str | Path = "data",
        *,
        acquire: bool = True,
        stream_decimation: int = STREAM_DECIMATION,
        parent: QWidget | None = None,
    ) -> None:
        """``acquire``: stream the station's digitiser into the live view (False: another
        source offers blocks to `processor`); ``stream_decimation``: the stream's decimation
        (125 MHz / decimation samples per second)."""
        super().__init__(parent)
        self.station = station
        self.setWindowTitle(f"hotspin — {station.config.station.name}")
        self.resize(1600, 1000)
        self._shut_down = False

        self.processor = SignalProcessor(station.polarimeter)
        self.fitter = ModelFitter(
            self.processor,
            lambda power_W: apparatus_with_probe_power(station, power_W),
            fields=lambda: station_fields(station),
        )
        self.source = (
            StreamSource(
                station.polarimeter,
                self.processor,
                decimation=stream_decimation,
                watch=ApparatusWatch(lambda: station_state(station), station.clock.now),
                clock_speed=self._clock_speed,
            )
            if acquire
            else None
        )
        self.poller = InstrumentPoller(station_readers(station))
        self.commands = CommandQueue(self)

        # The QND panel: the witness of each fit and the continuous filter over the θ blocks.
        self.qnd_tracker = QndTracker()
        self.qnd_worker = QndWorker(self.qnd_tracker, lambda: self.fitter.latest, in_child=True)
        self.processor.theta_sink = self.qnd_worker.offer
        self.qnd_panel = QndPanel(self.qnd_tracker, self.qnd_worker)
        self.live_view = LiveView(
            self.processor, self.fitter, self.source, temperature_K=self._cell_temperature_K
        )
        self.panel = InstrumentPanel(station, self.poller, self.commands, self.processor)
        self.runner = ProcedureRunner(station, data_directory)
        self.viewer = RunViewer(data_directory)
        self.runner.open_requested.connect(self.show_run)
        # The banner's buttons do what the instrument panel's and the runner's do.
        self.live_view.fixes = {
            "Emission on": self.panel.emission_button.click,
            "Balance": self.panel.balance_button.click,
            "Warm up": lambda: self.runner.select_procedure("warmup"),
        }
        self.runner.queue.running_changed.connect(
            lambda running: self.panel.set_controls_enabled(not running)
        )
        if self.source is not None:
            # In the runner's thread, before the run starts: a procedure records itself, so the
            # stream gives the digitiser up first (and takes it back after the run).
            self.runner.queue.running_changed.connect(self._hand_digitiser, Qt.DirectConnection)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.live_view, "Live")
        self.tabs.addTab(self.qnd_panel, "QND")
        self.tabs.addTab(self.viewer, "Run viewer")
        self.setCentralWidget(self.tabs)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        for title, widget in (("Instruments", scroll), ("Procedures", self.runner)):
            dock = QDockWidget(title, self)
            dock.setObjectName(title)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
            dock.setMinimumWidth(440)
            self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self._add_clock_control()
        if self.speed_box is not None:
            self.live_view.fixes["Real-time clock"] = lambda: self.speed_box.setValue(1.0)

        self.processor.start()
        self.qnd_worker.start()
        self.fitter.start()
        self.poller.start()
        if self.source is not None:
            self.source.start()

    def _hand_digitiser(self, running: bool) -> None:
        """Suspend the live stream while a procedure that records runs; resume it afterwards."""
        assert self.source is not None
        run = self.runner.queue.current
        if not running:
            self.source.resume()
        elif run is None or run.name not in STREAM_DURING:
            self.source.suspend()

    def _clock_speed(self) -> float:
        """Return simulated seconds per wall second (1 for a real station or a manual clock)."""
        clock = self.station.clock
        if self.station.lab is None or getattr(clock, "manual", False):
            return 1.0
        return float(clock.speed)

    def _cell_temperature_K(self) -> float:
        """Return the cell temperature of the latest heater poll (NaN before one)."""
        return float(self.poller.readings["heater"].values.get("temperature_K", math.nan))

    def _add_clock_control(self) -> None:
        """In a simulated lab, let the operator speed its clock up (the oven takes minutes)."""
        name = self.station.config.station.name
        self.speed_box: QDoubleSpinBox | None = None
        if self.station.lab is None:
            self.statusBar().addWidget(QLabel(f"station: {name} (real instruments)"))
            return
        self.statusBar().addWidget(QLabel(f"station: {name} (simulated); clock speed ×"))
        speed = QDoubleSpinBox()
        speed.setRange(0.1, 1000.0)
        speed.setDecimals(1)
        speed.setValue(self.station.clock.speed)
        speed.valueChanged.connect(lambda value: setattr(self.station.clock, "speed", value))
        self.statusBar().addWidget(speed)
        self.speed_box = speed

    def show_run(self, path: str) -> None:
        """Open a run file in the run viewer (read in the background) and show it."""
        self.viewer.open_in_background(path)
        self.tabs.setCurrentWidget(self.viewer)

    def shutdown(self) -> None:
        """Abort a run (it ends safely), stop every thread and timer; the station stays open."""
        if self._shut_down:
            return
        self._shut_down = True
        self.live_view.timer.stop()
        self.panel.timer.stop()
        self.runner.shutdown()
        if self.source is not None:
            self.source.stop()
        self.fitter.stop()
        self.processor.stop()
        self.qnd_panel.timer.stop()
        self.qnd_worker.stop()
        self.poller.stop()
        self.commands.shutdown()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Shut everything down before the window goes."""
        self.shutdown()
        event.accept()


def save_screenshot(widget: QWidget, path: str | Path) -> Path:
    """Save what ``widget`` shows as a PNG (works without a screen: it renders the widget)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not widget.grab().save(str(path), "PNG"):
        raise OSError(f"could not write the screenshot {path}")
    return path


def main(station_path: str | None = None, data_directory: str | Path = "data") -> int:
    """Open the station (default: the simulated lab), show the main window until it is closed."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    station = Station.from_file(station_path, persist=station_path is None)  # the kept lab
    window = None
    # Ctrl-C in the terminal closes the window like its close button: a run in progress is
    # aborted and ends safe. (Python runs the handler between the window's timer events.)
    interrupt = signal.signal(signal.SIGINT, lambda *_: app.quit())
    try:
        station.configure()
        window = MainWindow(station, data_directory)
        window.show()
        return app.exec_()
    finally:
        signal.signal(signal.SIGINT, interrupt)
        if window is not None:
            window.close()  # stops every thread (closeEvent)
            # Qt deletes the widgets, children first; left to Python's collector, pyqtgraph's
            # items could go before a paint event that still draws them.
            window.deleteLater()
        # Closing the GUI is an exit like any other: coils ramped to zero, digitiser stopped,
        # heater and laser as the station says, whatever the operator set from the panel.
        station.safe_state()
        station.close()
