"""The procedure runner: pick a procedure, edit its checked parameters, queue runs, watch, abort.

Runs go through `procedures.base.run_procedure` on a worker thread, exactly as `hotspin run`
runs them: every parameter and station limit is checked before anything moves, the HDF5 run
file is written step by step, the instruments end in their safe state whatever happens, and
the file's status says how the run ended. pymeasure's `ManagedWindow` is not used: it runs
procedures through its `Worker` into CSV `Results` (a second data file beside the HDF5 run file;
see `procedures/base.py`), its inputs clamp an out-of-range value to the limit instead of
refusing it with the allowed range, and it leaves a log handler on the root logger.

Parameters are typed as text and checked with `procedures.parameters.parse_value`, the same
check as the command line's, so an error names the parameter, the value and the allowed range;
a bad value queues nothing. An abort or a failure cancels the runs queued after it: they were
planned on the assumption that this one would work.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotspin.analysis.checks import ParameterError
from hotspin.procedures.base import HotspinProcedure, run_procedure
from hotspin.procedures.parameters import parse_value, range_text
from hotspin.procedures.recorder import RunAborted, default_path
from hotspin.procedures.registry import PROCEDURES
from pymeasure.experiment import BooleanParameter, ListParameter, Parameter
from PyQt5.QtCore import QObject, Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #cf222e;"
BAD_INPUT_STYLE = "background: #ffebe9;"
FINISHED = ("completed", "aborted", "failed", "cancelled")


def unique_run_path(directory: str | Path, name: str) -> Path:
    """Return the default run file path in ``directory``, suffixed if that file exists already."""
    path = default_path(name, directory)
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
    return candidate


@dataclass
class QueuedRun:
    """One run: its procedure (parameters checked), where it goes, and how it is going."""

    number: int
    procedure: HotspinProcedure
    directory: Path
    status: str = "queued"  # queued, running, completed, aborted, failed, cancelled
    percent: float = 0.0
    message: str = ""
    path: Path | None = None
    steps: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        """Return the procedure's name."""
        return self.procedure.NAME


class RunQueue(QObject):
    """Runs queued procedures one after another on a worker thread."""

    #: a run's status, progress or message changed (its number)
    changed = pyqtSignal(int)
    #: whether a run is in progress
    running_changed = pyqtSignal(bool)

    def __init__(self, station: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.station = station
        self.runs: list[QueuedRun] = []
        self._pending: deque[QueuedRun] = deque()
        self._current: QueuedRun | None = None
        self._condition = threading.Condition()
        self._closing = False
        self._numbers = itertools.count(1)
        self._thread = threading.Thread(target=self._work, name="procedure-runner", daemon=True)
        self._thread.start()

    @property
    def current(self) -> QueuedRun | None:
        """Return the run in progress, if any."""
        return self._current

    def submit(self, procedure: HotspinProcedure, directory: str | Path) -> QueuedRun:
        """Queue a checked procedure; its file goes to ``directory`` (named when it starts)."""
        run = QueuedRun(next(self._numbers), procedure, Path(directory))
        with self._condition:
            self.runs.append(run)
            self._pending.append(run)
            self._condition.notify()
        self.changed.emit(run.number)
        return run

    def remove(self, number: int) -> bool:
        """Cancel a run that has not started; return whether it was waiting."""
        with self._condition:
            for run in self._pending:
                if run.number == number:
                    self._pending.remove(run)
                    run.status, run.message = "cancelled", "removed by the operator"
                    break
            else:
                return False
        self.changed.emit(number)
        return True

    def abort(self) -> None:
        """Stop the run in progress (it ends safely, status 'aborted') and cancel the queue."""
        self._cancel_pending("cancelled: the run before it was aborted")
        current = self._current
        if current is not None:
            current.stop.set()
            current.message = "stopping…"
            self.changed.emit(current.number)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Abort everything and wait for the worker to finish (the instruments end safe)."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self.abort()
        self._thread.join(timeout=timeout_s)

    def _cancel_pending(self, reason: str) -> None:
        with self._condition:
            cancelled = list(self._pending)
            self._pending.clear()
        for run in cancelled:
            run.status, run.message = "cancelled", reason
            self.changed.emit(run.number)

    # --- the worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                run = self._pending.popleft()
                self._current = run
            self.running_changed.emit(True)
            try:
                self._execute(run)
            finally:
                self._current = None
                self.running_changed.emit(False)

    def _execute(self, run: QueuedRun) -> None:
        run.status, run.message = "running", "starting"
        run.path = unique_run_path(run.directory, run.name)
        self.changed.emit(run.number)

        def progress(percent: float, message: str) -> None:
            run.percent, run.message = percent, message
            self.changed.emit(run.number)

        def step(_: dict[str, float]) -> None:
            run.steps += 1

        try:
            run_procedure(
                run.procedure,
                self.station,
                run.path,
                progress=progress,
                on_step=step,
                stop=run.stop,
            )
        except RunAborted:
            run.status, run.message = "aborted", "stopped by the operator"
            self._cancel_pending("cancelled: the run before it was aborted")
        except Exception as error:  # the run file says 'failed'; the operator must see why
            log.exception("run %d (%s) failed", run.number, run.name)
            run.status, run.message = "failed", f"{type(error).__name__}: {error}"
            if not (run.path.exists()):
                run.path = None  # refused before its file was made (a station limit)
            self._cancel_pending("cancelled: the run before it failed")
        else:
            run.status, run.percent = "completed", 100.0
            run.message = run.message or "done"
        self.changed.emit(run.number)


def _default_text(value: Any) -> str:
    """Return a parameter's default as it is typed."""
    if isinstance(value, list | tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float | int) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


class ParameterForm(QWidget):
    """One input per parameter of a procedure, each checked as it is typed."""

    def __init__(self, procedure: type[HotspinProcedure], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.procedure = procedure
        self.parameters = procedure.parameter_map()
        self.inputs: dict[str, QWidget] = {}
        layout = QFormLayout(self)
        for key, parameter in self.parameters.items():
            widget = self._input(key, parameter)
            self.inputs[key] = widget
            units = getattr(parameter, "units", None)
            caption = f"{key}" + (f" [{units}]" if units else "")
            widget.setToolTip(f"{parameter.name}; allowed {range_text(parameter)}")
            layout.addRow(caption, widget)

    def _input(self, key: str, parameter: Parameter) -> QWidget:
        if isinstance(parameter, ListParameter):
            combo = QComboBox()
            for choice in parameter.choices:
                combo.addItem(str(choice), choice)
            if parameter.default is not None:
                combo.setCurrentIndex(max(0, combo.findText(str(parameter.default))))
            return combo
        if isinstance(parameter, BooleanParameter):
            box = QCheckBox()
            box.setChecked(bool(parameter.default))
            return box
        edit = QLineEdit(_default_text(parameter.default))
        edit.textChanged.connect(lambda _: self.check(key))
        return edit

    def values(self) -> dict[str, Any]:
        """Return every input as typed or chosen (checked by the procedure's `from_values`)."""
        values: dict[str, Any] = {}
        for key, widget in self.inputs.items():
            if isinstance(widget, QComboBox):
                values[key] = widget.currentData()
            elif isinstance(widget, QCheckBox):
                values[key] = widget.isChecked()
            else:
                assert isinstance(widget, QLineEdit)
                values[key] = widget.text()
        return values

    def set_value(self, key: str, text: str) -> None:
        """Type ``text`` into the input of ``key`` (or choose it)."""
        widget = self.inputs[key]
        if isinstance(widget, QComboBox):
            widget.setCurrentIndex(widget.findText(text))
        elif isinstance(widget, QCheckBox):
            widget.setChecked(text.lower() == "true")
        else:
            assert isinstance(widget, QLineEdit)
            widget.setText(text)

    def check(self, key: str) -> str:
        """Mark the input of ``key`` if its text is not allowed; return the error ('' if fine)."""
        widget = self.inputs[key]
        if not isinstance(widget, QLineEdit):
            return ""
        try:
            parse_value(key, self.parameters[key], widget.text())
        except ParameterError as error:
            widget.setStyleSheet(BAD_INPUT_STYLE)
            widget.setToolTip(str(error))
            return str(error)
        widget.setStyleSheet("")
        widget.setToolTip(
            f"{self.parameters[key].name}; allowed {range_text(self.parameters[key])}"
        )
        return ""


class ProcedureRunner(QWidget):
    """Procedure choice, parameters, the run queue with progress, abort and open."""

    #: the operator wants to look at a run file
    open_requested = pyqtSignal(str)

    COLUMNS = ("#", "procedure", "status", "progress", "message", "file")

    def __init__(
        self, station: Any, data_directory: str | Path = "data", parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.station = station
        self.queue = RunQueue(station, self)
        self.queue.changed.connect(self._show_run)
        self.queue.running_changed.connect(self._running_changed)

        self.procedure_combo = QComboBox()
        for name in PROCEDURES:
            self.procedure_combo.addItem(name)
        self.procedure_combo.currentTextChanged.connect(self._choose)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        self.form_holder = QVBoxLayout()
        self.form: ParameterForm | None = None
        self.directory_edit = QLineEdit(str(data_directory))
        self.queue_button = QPushButton("Queue run")
        self.queue_button.clicked.connect(self.queue_run)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)

        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(lambda _: self.open_selected())
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_label = QLabel("no run in progress")
        self.abort_button = QPushButton("Abort")
        self.abort_button.setEnabled(False)
        self.abort_button.clicked.connect(self.queue.abort)
        self.remove_button = QPushButton("Remove queued")
        self.remove_button.clicked.connect(self.remove_selected)
        self.open_button = QPushButton("Open in viewer")
        self.open_button.clicked.connect(self.open_selected)

        top = QHBoxLayout()
        top.addWidget(QLabel("procedure"))
        top.addWidget(self.procedure_combo, 1)
        where = QHBoxLayout()
        where.addWidget(QLabel("run files in"))
        where.addWidget(self.directory_edit, 1)
        where.addWidget(self.queue_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.abort_button)
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary_label)
        layout.addLayout(self.form_holder)
        layout.addLayout(where)
        layout.addWidget(self.error_label)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.progress_bar)
        layout.addLayout(buttons)
        self._rows: dict[int, int] = {}
        self._choose(self.procedure_combo.currentText())

    # --- choosing and queueing -------------------------------------------------------------------
    def _choose(self, name: str) -> None:
        cls = PROCEDURES[name]
        if self.form is not None:
            self.form_holder.removeWidget(self.form)
            self.form.setParent(None)  # off the screen now, deleted when Qt next can
            self.form.deleteLater()
        self.form = ParameterForm(cls)
        self.form_holder.addWidget(self.form)
        self.summary_label.setText(cls.SUMMARY)
        self.error_label.setText("")

    def select_procedure(self, name: str) -> ParameterForm:
        """Choose the procedure ``name`` and return its parameter form."""
        self.procedure_combo.setCurrentText(name)
        assert self.form is not None and self.form.procedure is PROCEDURES[name]
        return self.form

    def queue_run(self) -> QueuedRun | None:
        """Check the parameters against their ranges and the station's limits and queue a run.

        A bad value is shown with its allowed range and nothing is queued.
        """
        assert self.form is not None
        cls = self.form.procedure
        for key in self.form.inputs:
            self.form.check(key)
        try:
            procedure = cls.from_values(self.form.values())
            # The station's limits (a cell temperature, a coil current) are read from the station
            # file by every check_limits, not from the instruments, so this is quick.
            procedure.check_limits(self.station)
        except ParameterError as error:
            self.error_label.setText(f"not queued: {error}")
            return None
        self.error_label.setText("")
        return self.queue.submit(procedure, self.directory_edit.text().strip() or "data")

    # --- the queue -------------------------------------------------------------------------------
    def _show_run(self, number: int) -> None:
        run = next(r for r in self.queue.runs if r.number == number)
        if number not in self._rows:
            self._rows[number] = self.table.rowCount()
            self.table.insertRow(self.table.rowCount())
        row = self._rows[number]
        texts = (
            str(run.number),
            run.name,
            run.status,
            f"{run.percent:.0f} %",
            run.message,
            "" if run.path is None else str(run.path),
        )
        for column, text in enumerate(texts):
            item = QTableWidgetItem(text)
            if column == 2 and run.status in ("failed", "aborted"):
                item.setForeground(Qt.red)
            self.table.setItem(row, column, item)
        if run.status == "running" or run is self.queue.current:
            self.progress_bar.setValue(round(10 * run.percent))
            self.progress_label.setText(f"run {run.number} ({run.name}): {run.message}")
        elif run.status in FINISHED and run.path is not None:
            self.progress_label.setText(f"run {run.number} ({run.name}) {run.status}: {run.path}")

    def _running_changed(self, running: bool) -> None:
        self.abort_button.setEnabled(running)
        if not running:
            self.progress_bar.setValue(0)

    def selected_run(self) -> QueuedRun | None:
        """Return the run selected in the table, if any."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        number = int(self.table.item(rows[0].row(), 0).text())
        return next(r for r in self.queue.runs if r.number == number)

    def remove_selected(self) -> None:
        """Cancel the selected run if it has not started."""
        run = self.selected_run()
        if run is not None:
            self.queue.remove(run.number)

    def open_selected(self) -> None:
        """Ask for the selected run's file to be shown in the run viewer."""
        run = self.selected_run()
        if run is not None and run.path is not None and run.status in FINISHED:
            self.open_requested.emit(str(run.path))

    def shutdown(self) -> None:
        """Abort the run in progress and stop the runner's thread."""
        self.queue.shutdown()
