"""The monitor's background loops and child processes, written once.

`Loop`: a daemon thread that repeats its work until stopped (the stream reader, the run-file
watcher, the model fitter, the apparatus watch); `stop` sets an event the loop waits on, so no
loop sleeps past a stop. `start_child`: a child process with a pipe, for work that holds the GIL
for long (the model fit, the QND tracker). A forked copy of a process running Qt and a dozen
threads is not safe, so the child comes from multiprocessing's forkserver (a single-threaded
process that imported the child's module once: each later child is a fork of it, not a new
interpreter importing scipy again, 1.3 s of CPU) or, where there is none (Windows), is spawned.
The child gets one BLAS thread (its matrices are small, and on a busy machine BLAS threads only
wait for a core: BENCHMARKS.md, the fit).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from typing import Any

from threadpoolctl import threadpool_limits

#: How children start: forked from the forkserver where there is one, else a fresh interpreter.
START_METHOD = "forkserver" if "forkserver" in get_all_start_methods() else "spawn"


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


def _child_main(target: Callable[[Connection], None], connection: Connection) -> None:
    """Run ``target(connection)`` on one BLAS thread (a forkserver started by another caller
    may have started its BLAS with more)."""
    with threadpool_limits(limits=1, user_api="blas"):
        target(connection)


def start_child(target: Callable[[Connection], None], name: str) -> tuple[Any, Connection]:
    """Start ``target(connection)`` in a child process with one BLAS thread; return the
    process and this side's end of the pipe."""
    context = get_context(START_METHOD)
    if START_METHOD == "forkserver":  # read when the server starts (with the first child)
        context.set_forkserver_preload([target.__module__])
    ours, theirs = context.Pipe()
    process = context.Process(target=_child_main, args=(target, theirs), name=name, daemon=True)
    previous = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # read by a spawned child (or the server) at start
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
