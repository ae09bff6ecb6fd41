"""`hotspin gui --watch FILE`: follow a run file that another process is writing.

The writer keeps the file open in HDF5's single-writer/multiple-reader mode (SWMR: written with
the latest file format, ``swmr_mode`` on); this reader opens it with ``swmr=True``, which takes
no lock and so never disturbs the run, and refreshes the datasets that grow (the spectra rows,
the results columns) every ``interval_s``, off the GUI thread. What it reads is shown in a
`RunViewer`, as a finished run is. A file written without SWMR is read the ordinary way once
the writer has closed it (until then the viewer says it is being written). Watching needs no
station: it is always allowed, whatever process drives the apparatus.

A file that holds a continuous record (`records/polarimeter`: `hotspin run record`) is shown as
the live monitor shows the station's stream (`RecordWatchWindow`): the same signal processor,
model fitter, live view and QND panel, fed by a `RecordSource` that reads the record's samples
behind the writer's flushes (gui/record_source.py), beside the run viewer of the same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
from hotspin.gui.monitor import LiveView
from hotspin.gui.qnd_panel import QndPanel, QndTracker, QndWorker
from hotspin.gui.record_source import READ_INTERVAL_S, RecordSource, holds_record
from hotspin.gui.run_viewer import RunViewer
from hotspin.gui.stream import ModelFitter, SignalProcessor
from hotspin.gui.worker import Loop
from hotspin.procedures.run_file import Column, RunContents, load_run, plain
from PyQt5.QtCore import QTimer
from PyQt5.QtGui import QCloseEvent
from PyQt5.QtWidgets import QApplication, QLabel, QMainWindow, QTabWidget, QWidget

#: Seconds between two reads of the watched file.
WATCH_INTERVAL_S = 0.5


def _refreshed(node: h5py.Dataset) -> np.ndarray:
    """Return a growing dataset's values as the writer last flushed them."""
    node.refresh()
    return node[...]


def read_growing(f: h5py.File, path: Path) -> RunContents:
    """Return what an open SWMR file holds now: attributes, parameters, spectra and results."""
    parameters = f.get("parameters")
    contents = RunContents(
        path=path,
        attributes={k: plain(v) for k, v in f.attrs.items()},
        parameters={k: plain(v) for k, v in parameters.attrs.items()} if parameters else {},
    )
    spectra = f.get("spectra")
    if isinstance(spectra, h5py.Group) and "psd" in spectra:
        contents.frequency_Hz = _refreshed(spectra["frequency"])
        contents.psd = _refreshed(spectra["psd"])
        if "psd_standard_error" in spectra:
            contents.psd_standard_error = _refreshed(spectra["psd_standard_error"])
        if "model" in spectra:
            contents.model = _refreshed(spectra["model"])
    results = f.get("results")
    if isinstance(results, h5py.Group):
        for name, column in results.items():
            if isinstance(column, h5py.Dataset) and column.ndim == 1:
                contents.results[name] = Column(
                    _refreshed(column), str(plain(column.attrs.get("units", "")))
                )
    return contents


class RunFileWatcher(Loop):
    """Reads a run file again and again in a thread and hands each reading to a viewer
    (`start` follows the file, `stop` ends following it and closes it)."""

    THREAD_NAME = "watch-run"

    def __init__(
        self, path: str | Path, viewer: RunViewer, interval_s: float = WATCH_INTERVAL_S
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.viewer = viewer
        self.interval_s = float(interval_s)
        self.reads = 0  # readings handed to the viewer

    def _run(self) -> None:
        handle: h5py.File | None = None
        try:
            while not self._stop.is_set():
                outcome: RunContents | str
                try:
                    if handle is None:
                        handle = h5py.File(self.path, "r", swmr=True)
                    outcome = read_growing(handle, self.path)
                except OSError as error:
                    # Not (yet) an SWMR file: read it whole if its writer has closed it.
                    if handle is not None:
                        handle.close()
                        handle = None
                    try:
                        outcome = load_run(self.path)
                    except (OSError, KeyError, ValueError) as final:
                        outcome = f"watching {self.path}: {final} ({error})"
                except (KeyError, ValueError) as error:
                    outcome = f"watching {self.path}: {type(error).__name__}: {error}"
                self.reads += 1
                self.viewer.loaded.emit(outcome)
                self._stop.wait(self.interval_s)
        finally:
            if handle is not None:
                handle.close()


class RecordWatchWindow(QMainWindow):
    """The live monitor's view of a continuous record another process writes: live spectrum,
    model fit, duty cycle and gaps, the QND panel, and the run viewer of the same file."""

    def __init__(
        self,
        path: str | Path,
        *,
        interval_s: float = READ_INTERVAL_S,
        qnd: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        """``interval_s``: seconds between two readings of the file; ``qnd``: the witness and
        the Kalman filter run on the record from the start (the panel's checkbox)."""
        super().__init__(parent)
        self.path = Path(path)
        self.setWindowTitle(f"hotspin — watching {self.path}")
        self.resize(1600, 1000)
        self._shut_down = False
        self.processor = SignalProcessor(calibration=None)  # type: ignore[arg-type]
        self.source = RecordSource(self.path, self.processor, interval_s=interval_s)
        self.processor.calibration = self.source  # the file's detector gains
        self.fitter = ModelFitter(self.processor, self.source.apparatus, fields=self.source.fields)
        self.qnd_tracker = QndTracker()
        self.qnd_worker = QndWorker(
            self.qnd_tracker, lambda: self.fitter.latest, in_child=True, lossless=True
        )
        self.processor.theta_sink = self.qnd_worker.offer
        self.qnd_panel = QndPanel(self.qnd_tracker, self.qnd_worker)
        self.qnd_panel.enable_box.setChecked(qnd)
        self.live_view = LiveView(self.processor, self.fitter, self.source)
        self.viewer = RunViewer(self.path.parent)
        self.run_watcher = RunFileWatcher(self.path, self.viewer)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.live_view, "Live (record)")
        self.tabs.addTab(self.qnd_panel, "QND")
        self.tabs.addTab(self.viewer, "Run file")
        self.setCentralWidget(self.tabs)
        self.record_label = QLabel("record: –")
        self.statusBar().addWidget(self.record_label)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._show_record)
        self.timer.start(200)
        self.processor.start()
        self.qnd_worker.start()
        self.fitter.start()
        self.source.start()
        self.run_watcher.start()

    def _show_record(self) -> None:
        s = self.source
        text = (
            f"record {self.path.name}: {s.samples} samples read of {s.flushed} flushed, "
            f"run status '{s.status or '–'}'; no station opened (SWMR reader)"
        )
        if s.context is not None and s.context.notes:
            text += "; " + "; ".join(s.context.notes)
        self.record_label.setText(text + (f" — {s.error}" if s.error else ""))

    def shutdown(self) -> None:
        """Stop every thread, timer and child process (the file is left as it is)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.timer.stop()
        self.live_view.timer.stop()
        self.qnd_panel.timer.stop()
        self.source.stop()  # before the processor: it may wait for the processor's room
        self.fitter.stop()
        self.processor.stop()
        self.qnd_worker.stop()
        self.run_watcher.stop()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Shut everything down before the window goes."""
        self.shutdown()
        event.accept()


def main(path: str | Path) -> int:
    """Show the run file ``path`` while another process writes it: a continuous record in the
    live monitor's view, any other run in a viewer that follows it."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if holds_record(path):
        window = RecordWatchWindow(path)
        window.show()
        try:
            return app.exec_()
        finally:
            window.close()  # stops every thread and child (closeEvent)
            # Qt deletes the widgets, children first (left to Python's collector, pyqtgraph's
            # items could go before a paint event that still draws them).
            window.deleteLater()
    viewer = RunViewer(Path(path).parent)
    viewer.setWindowTitle(f"hotspin — watching {path}")
    viewer.resize(1400, 900)
    watcher = RunFileWatcher(path, viewer)
    watcher.start()
    viewer.show()
    try:
        return app.exec_()
    finally:
        watcher.stop()
        viewer.close()
        viewer.deleteLater()
