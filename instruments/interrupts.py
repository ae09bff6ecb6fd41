"""Signals while instruments are being made safe, and SIGTERM/SIGHUP as an interruption.

A second Ctrl-C, or a SIGTERM from a batch system, must not cut a safe state short and leave a
coil energised: while `interrupts_held` runs, SIGINT, SIGTERM and SIGHUP are recorded, and the
first is delivered when the block ends. `terminating_interrupts` makes SIGTERM and SIGHUP (how
systemd, a batch system or a dropped ssh session end a job) raise KeyboardInterrupt like Ctrl-C,
so a run ends `aborted`, with its reason, its safe state and its end snapshot.
Signal handlers exist only in the main thread; elsewhere both are no-ops.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Defer SIGINT, SIGTERM and SIGHUP until the block has ended, then deliver the first."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {number: signal.signal(number, hold) for number in HELD}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            first, handler = received[0], previous[received[0]]
            if callable(handler):
                handler(first, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), first)


@contextmanager
def terminating_interrupts() -> Iterator[None]:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt('terminated by SIG…') in the block."""
    if not _in_main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"terminated by {signal.Signals(signum).name}")

    previous = {number: signal.signal(number, interrupt) for number in TERMINATING}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
