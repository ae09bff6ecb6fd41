"""The run viewer: a finished HDF5 run's status, summary, spectra (with the fitted model) and
per-step results, as table and plot; and `hotspin analyze` on it, off the GUI thread."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from hotspin.analysis.fits import Estimate
from hotspin.procedures.analyze import analyze_file, format_report
from hotspin.procedures.run_file import RunContents, load_run
from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

STEP = "step"


def _value_text(value: float, uncertainty: float, units: str) -> str:
    if math.isfinite(uncertainty) and uncertainty > 0:
        return str(Estimate(value, uncertainty, units))
    return f"{value:.6g} {units}".rstrip()


class RunViewer(QWidget):
    """Opens a run file and shows what it holds; analyses it again on request."""

    #: (path, report): an analysis started by `analyse` has ended (emitted from its thread).
    analysed = pyqtSignal(object, str)
    #: The RunContents read by `open_in_background`, or why it could not be (emitted from its
    #: thread).
    loaded = pyqtSignal(object)

    def __init__(self, start_directory: str | Path = "data", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.start_directory = str(start_directory)
        self.contents: RunContents | None = None

        self.open_button = QPushButton("Open run file…")
        self.open_button.clicked.connect(self._choose_file)
        self.analyse_button = QPushButton("Analyse again")
        self.analyse_button.setToolTip(
            "fit every spectrum of this run again (hotspin analyze) and write the results into it"
        )
        self.analyse_button.setEnabled(False)
        self.analyse_button.clicked.connect(self.analyse)
        self.analysed.connect(self._show_analysis)
        self.loaded.connect(self._show_loaded)
        self.analysis_text = QPlainTextEdit()
        self.analysis_text.setReadOnly(True)
        self.analysis_text.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.analysis_text.setPlaceholderText("'Analyse again' shows the report here")
        self.header = QLabel("no run file open")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.summary_table = QTableWidget(0, 2)
        self.summary_table.setHorizontalHeaderLabels(["summary", "value"])
        self.summary_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.summary_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.parameters_tree = QTreeWidget()
        self.parameters_tree.setHeaderLabels(["parameter", "value"])

        # spectra
        self.spectrum_plot = pg.PlotWidget(title="spectra/psd")
        self.spectrum_plot.setLabel("bottom", "frequency", units="Hz")
        self.spectrum_plot.setLabel("left", "PSD (rad²/Hz)")
        self.spectrum_plot.getAxis("left").enableAutoSIPrefix(False)  # log axis: decades
        self.spectrum_plot.showGrid(x=True, y=True, alpha=0.2)
        self.spectrum_plot.addLegend()
        self.row_spin = QSpinBox()
        self.row_spin.setPrefix("row ")
        self.row_spin.valueChanged.connect(lambda _: self._draw_spectrum())
        self.spectrum_log_x = QCheckBox("log f")
        self.spectrum_log_y = QCheckBox("log PSD")
        self.spectrum_log_y.setChecked(True)
        for box in (self.spectrum_log_x, self.spectrum_log_y):
            box.toggled.connect(lambda _: self._draw_spectrum())
        spectra = QWidget()
        spectra_controls = QHBoxLayout()
        for widget in (self.row_spin, self.spectrum_log_x, self.spectrum_log_y):
            spectra_controls.addWidget(widget)
        spectra_controls.addStretch(1)
        spectra_layout = QVBoxLayout(spectra)
        spectra_layout.addLayout(spectra_controls)
        spectra_layout.addWidget(self.spectrum_plot, 1)

        # results
        self.results_table = QTableWidget(0, 0)
        self.results_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.results_plot = pg.PlotWidget(title="results")
        self.results_plot.showGrid(x=True, y=True, alpha=0.2)
        self.x_combo = QComboBox()
        self.y_combo = QComboBox()
        self.x_combo.currentTextChanged.connect(lambda _: self._draw_results())
        self.y_combo.currentTextChanged.connect(lambda _: self._draw_results())
        results = QWidget()
        results_controls = QHBoxLayout()
        results_controls.addWidget(QLabel("x"))
        results_controls.addWidget(self.x_combo, 1)
        results_controls.addWidget(QLabel("y"))
        results_controls.addWidget(self.y_combo, 1)
        results_split = QSplitter(Qt.Vertical)
        results_split.addWidget(self.results_plot)
        results_split.addWidget(self.results_table)
        results_layout = QVBoxLayout(results)
        results_layout.addLayout(results_controls)
        results_layout.addWidget(results_split, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(spectra, "Spectra")
        self.tabs.addTab(results, "Results")
        self.tabs.addTab(self.parameters_tree, "Parameters")
        self.tabs.addTab(self.analysis_text, "Analysis")

        side = QSplitter(Qt.Vertical)
        side.addWidget(self.header)
        side.addWidget(self.summary_table)
        side.setSizes([220, 600])
        main = QSplitter(Qt.Horizontal)
        main.addWidget(side)
        main.addWidget(self.tabs)
        main.setSizes([450, 900])
        top = QHBoxLayout()
        top.addWidget(self.open_button)
        top.addWidget(self.analyse_button)
        top.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(main, 1)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a run file", self.start_directory, "HDF5 run files (*.h5 *.hdf5)"
        )
        if path:
            self.open_in_background(path)

    def open_in_background(self, path: str | Path) -> None:
        """Read the run file ``path`` in a worker thread (a long sweep's file is tens of MB) and
        show it when read; `loaded` says when."""
        self.header.setText(f"reading {path} …")
        self.header.setStyleSheet("")
        threading.Thread(target=self._read, args=(path,), name="read-run", daemon=True).start()

    def _read(self, path: str | Path) -> None:
        try:
            outcome: RunContents | str = load_run(path)
        except (OSError, KeyError, ValueError) as error:
            outcome = f"cannot open {path}: {error}"
        self.loaded.emit(outcome)

    def _show_loaded(self, outcome: RunContents | str) -> None:
        if isinstance(outcome, RunContents):
            self._show(outcome)
        else:
            self._show_error(outcome)

    def open_run(self, path: str | Path) -> RunContents | None:
        """Read and show the run file ``path`` now (a file that cannot be read is said so in the
        header)."""
        try:
            contents = load_run(path)
        except (OSError, KeyError, ValueError) as error:
            self._show_error(f"cannot open {path}: {error}")
            return None
        self._show(contents)
        return contents

    def _show_error(self, message: str) -> None:
        self.header.setText(message)
        self.header.setStyleSheet("color: #cf222e;")

    def _show(self, contents: RunContents) -> None:
        """Show everything a run file holds."""
        self.contents = contents
        self.header.setStyleSheet("")
        self._show_header(contents)
        self._show_summary(contents)
        self._show_parameters(contents)
        self.row_spin.blockSignals(True)
        self.row_spin.setRange(0, max(0, contents.psd.shape[0] - 1))
        self.row_spin.setValue(max(0, contents.psd.shape[0] - 1))
        self.row_spin.blockSignals(False)
        self.row_spin.setEnabled(contents.psd.shape[0] > 0)
        self._draw_spectrum()
        self._show_results(contents)
        self.tabs.setCurrentIndex(0 if contents.psd.shape[0] else 1)
        self.analyse_button.setEnabled(True)

    def analyse(self) -> None:
        """Fit every spectrum of the open run again in a worker thread; show the report after."""
        if self.contents is None:
            return
        path = self.contents.path
        self.analyse_button.setEnabled(False)
        self.analysis_text.setPlainText(f"analysing {path} …")
        self.tabs.setCurrentWidget(self.analysis_text)
        threading.Thread(target=self._analyse, args=(path,), name="analyse", daemon=True).start()

    def _analyse(self, path: Path) -> None:
        try:
            report = format_report(analyze_file(path))
        except Exception as error:  # shown to the operator: the GUI must go on
            report = f"cannot analyse {path}: {type(error).__name__}: {error}"
        self.analysed.emit(path, report)

    def _show_analysis(self, path: Path, report: str) -> None:
        """Show the report and the file as the analysis left it (it may have added spectra)."""
        if self.open_run(path) is None:
            self.analyse_button.setEnabled(True)
        self.analysis_text.setPlainText(report)
        self.tabs.setCurrentWidget(self.analysis_text)

    def _show_header(self, c: RunContents) -> None:
        a = c.attributes
        lines = [
            f"<b>{c.procedure}</b>: <b>{c.status}</b>",
            f"file: {c.path}",
            f"started {a.get('started', '?')}, finished {a.get('finished', '–')}",
            f"{c.steps} steps, {c.psd.shape[0]} spectra",
        ]
        for key in ("error", "safe_state_failures"):
            if key in a:
                lines.append(f"<span style='color:#cf222e'>{key}: {a[key]}</span>")
        lines.extend(f"note: {note}" for note in str(a.get("notes", "")).splitlines() if note)
        self.header.setText("<br>".join(lines))

    def _show_summary(self, c: RunContents) -> None:
        self.summary_table.setRowCount(len(c.summary))
        for row, (name, (value, uncertainty, units)) in enumerate(c.summary.items()):
            self.summary_table.setItem(row, 0, QTableWidgetItem(name))
            self.summary_table.setItem(
                row, 1, QTableWidgetItem(_value_text(value, uncertainty, units))
            )

    def _show_parameters(self, c: RunContents) -> None:
        self.parameters_tree.clear()

        def add(parent: QTreeWidget | QTreeWidgetItem, values: dict) -> None:
            for key, value in values.items():
                if isinstance(value, dict):
                    item = QTreeWidgetItem([str(key), ""])
                    add(item, value)
                else:
                    item = QTreeWidgetItem([str(key), str(value)])
                if isinstance(parent, QTreeWidget):
                    parent.addTopLevelItem(item)
                else:
                    parent.addChild(item)

        add(self.parameters_tree, c.parameters)

    def _draw_spectrum(self) -> None:
        plot = self.spectrum_plot
        plot.clear()
        c = self.contents
        if c is None or c.psd.shape[0] == 0:
            return
        plot.setLogMode(x=self.spectrum_log_x.isChecked(), y=self.spectrum_log_y.isChecked())
        # DC carries only what mean removal left: off the (log) axes.
        f = c.frequency_Hz[1:]
        row = self.row_spin.value()
        for other in range(c.psd.shape[0]):
            if other != row:
                plot.plot(f, c.psd[other, 1:], pen=pg.mkPen((140, 149, 159, 80)))
        plot.plot(f, c.psd[row, 1:], pen=pg.mkPen("#0969da"), name=f"row {row}")
        if c.model is not None:
            model = c.model[row, 1:]
            fitted = np.isfinite(model)
            plot.plot(f[fitted], model[fitted], pen=pg.mkPen("#cf222e", width=2), name="model")
        larmor = c.results.get("larmor_frequency_Hz")
        if larmor is not None and row < larmor.values.size and larmor.values[row] > 0:
            position = larmor.values[row]
            plot.addItem(
                pg.InfiniteLine(
                    math.log10(position) if self.spectrum_log_x.isChecked() else position,
                    angle=90,
                    pen=pg.mkPen("#8250df", style=Qt.DashLine),
                    label="ν_L",
                ),
                ignoreBounds=True,
            )

    def _show_results(self, c: RunContents) -> None:
        names = list(c.results)
        self.results_table.clear()
        self.results_table.setColumnCount(len(names))
        self.results_table.setRowCount(c.steps)
        self.results_table.setHorizontalHeaderLabels([self._caption(c, n) for n in names])
        for column, name in enumerate(names):
            for row, value in enumerate(c.results[name].values):
                self.results_table.setItem(row, column, QTableWidgetItem(f"{value:.6g}"))
        for combo, choices in ((self.x_combo, [STEP, *names]), (self.y_combo, names)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(choices)
            combo.blockSignals(False)
        if "time_s" in names:
            self.x_combo.setCurrentText("time_s")
        self._draw_results()

    def _draw_results(self) -> None:
        plot = self.results_plot
        plot.clear()
        c = self.contents
        y_name, x_name = self.y_combo.currentText(), self.x_combo.currentText()
        if c is None or y_name not in c.results:
            return
        y = c.results[y_name].values
        x = np.arange(y.size) if x_name == STEP else c.results[x_name].values
        plot.plot(x, y, pen=pg.mkPen("#0969da"), symbol="o", symbolSize=5)
        # Units in the text: pyqtgraph would put SI prefixes on compound units (rad²/Hz).
        plot.setLabel("left", self._caption(c, y_name))
        plot.setLabel("bottom", self._caption(c, x_name))

    @staticmethod
    def _caption(c: RunContents, name: str) -> str:
        units = "" if name == STEP else c.results[name].units
        return f"{name} [{units}]" if units else name
