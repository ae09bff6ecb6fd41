"""Operator commands to instruments (setpoint, emission, plate, field), run off the GUI thread.

A command can wait on an instrument's lock (a procedure is using it) or on a slow answer; the GUI
must not. Commands run one at a time, in the order given, on one worker thread; each outcome comes
back to the GUI thread as a Qt signal (queued across threads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PyQt5.QtCore import QObject, pyqtSignal

log = logging.getLogger(__name__)


class CommandQueue(QObject):
    """Runs instrument commands in order on a worker thread and reports how each went."""

    #: (what was asked, '' if it worked or the error)
    finished = pyqtSignal(str, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gui-command")

    def submit(self, description: str, command: Callable[[], Any]) -> Future:
        """Queue ``command``; `finished` says afterwards whether it worked."""

        def report(future: Future) -> None:
            error = future.exception()
            message = "" if error is None else f"{type(error).__name__}: {error}"
            if error is not None:
                log.warning("%s failed: %s", description, message)
            self.finished.emit(description, message)

        future = self._executor.submit(command)
        future.add_done_callback(report)
        return future

    def shutdown(self) -> None:
        """Finish the commands already queued and stop the worker."""
        self._executor.shutdown(wait=True, cancel_futures=False)
