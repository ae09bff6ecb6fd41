"""The monitor's background loops and child processes, written once.

`Loop`: a daemon thread that repeats its work until stopped (the stream reader, the run-file
watcher, the model fitter, the apparatus watch); `stop` sets an event the loop waits on, so no
loop sleeps past a stop. `start_child`: a 'spawn' child process with a pipe, for work that holds
the GIL for long (the model fit, the QND tracker): a forked copy of a process running Qt and a
dozen threads is not safe, and the child gets one BLAS thread (its matrices are small, and on a
busy machine BLAS threads only wait for a core: BENCHMARKS.md, the fit).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import Any


class Loop:
    """A thread that runs `_run` until `stop`; `_run` waits with `self._stop.wait(s)`."""

    #: The thread's name (shown by debuggers and in `threading.enumerate`).
    THREAD_NAME = "monitor-loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop's thread (once; a started loop is left running)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end, wait for it (bounded), then let the subclass release things."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self._stopped()

    def _wake(self) -> None:
        """Wake a loop that waits on something other than the stop event (default: nothing)."""

    def _stopped(self) -> None:
        """Release what the loop held once its thread has ended (default: nothing)."""

    def _run(self) -> None:
        raise NotImplementedError


def start_child(target: Callable[[Connection], None], name: str) -> tuple[Any, Connection]:
    """Start ``target(connection)`` in a 'spawn' child with one BLAS thread; return the process
    and this side's end of the pipe."""
    context = get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(theirs,), name=name, daemon=True)
    previous = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # the child reads it at its start
    try:
        process.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if previous is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = previous
    return process, ours


def end_child(process: Any, connection: Connection | None) -> None:
    """Terminate a child process (bounded wait) and close its pipe; either may be None."""
    if process is not None:
        process.terminate()
        process.join(timeout=10.0)
    if connection is not None:
        connection.close()
