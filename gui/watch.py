"""`hotspin gui --watch FILE`: follow a run file that another process is writing.

The writer keeps the file open in HDF5's single-writer/multiple-reader mode (SWMR: written with
the latest file format, ``swmr_mode`` on); this reader opens it with ``swmr=True``, which takes
no lock and so never disturbs the run, and refreshes the datasets that grow (the spectra rows,
the results columns) every ``interval_s``, off the GUI thread. What it reads is shown in a
`RunViewer`, as a finished run is. A file written without SWMR is read the ordinary way once
the writer has closed it (until then the viewer says it is being written). Watching needs no
station: it is always allowed, whatever process drives the apparatus.

Extensible: `read_growing` reads the groups known today (spectra, results, summary, the root
attributes); a group a new kind of run file adds (continuous records) is read beside them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
from hotspin.gui.run_viewer import RunViewer
from hotspin.gui.worker import Loop
from hotspin.procedures.run_file import Column, RunContents, load_run, plain
from PyQt5.QtWidgets import QApplication

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


def main(path: str | Path) -> int:
    """Show the run file ``path`` in a viewer that follows it while another process writes it."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
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
