"""Serve a simulated instrument on a pseudo-terminal, as the serial device it really is.

The ELL14 is a serial device (9600 8N1, through an FTDI USB adapter); serial host libraries
(pyLabLib, ``elliptec``, thorlabs-elliptec) open a device path with pyserial. `PtySerialServer`
opens a pseudo-terminal (POSIX ``openpty``), keeps its slave end open itself (so the line stays up
while clients come and go, as a plugged-in adapter does) and answers on the master end; clients
open `device_path` (e.g. ``/dev/pts/7``) exactly as ``/dev/ttyUSB0``. The line is set raw, and a
client may apply any termios settings (baud rate, parity, timeouts): a pty ignores the line
speed, so 9600 8N1 semantics do not matter, but the bytes do.

A serial line has one session for as long as it is up, whoever has it open: the instrument sees
bytes, not clients. Bytes that nobody reads pile up in the pty until it is full; after that the
instrument's output is lost, as on a line with nothing listening (the server never blocks).
A ``drop`` fault cannot close a serial line: the session is reset instead, losing what was
buffered. Unprompted messages (`UnsolicitedSession`) are written as they become due.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty

from hotspin.simulators.instrument_base import ConnectionDropped, Session, SimulatedInstrument
from hotspin.simulators.server import Served
from hotspin.simulators.unsolicited import UnsolicitedSession

_READ_CHUNK = 4096


class PtySerialServer(Served):
    """One simulated instrument on its own pseudo-terminal."""

    def __init__(self, instrument: SimulatedInstrument) -> None:
        self.instrument = instrument
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_read, self._wake_write = -1, -1
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self.device_path = ""

    def start(self) -> PtySerialServer:
        """Open the pseudo-terminal and start answering on it."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, no CR/LF translation
        os.set_blocking(self._master, False)
        self.device_path = os.ttyname(self._slave)
        self._wake_read, self._wake_write = os.pipe()
        self._session = self._open_session()
        self._thread = threading.Thread(
            target=self._serve, name=f"sim-{self.instrument.name}-pty", daemon=True
        )
        self._thread.start()
        return self

    def _open_session(self) -> Session:
        session = self.instrument.open_session()
        if isinstance(session, UnsolicitedSession):
            session.attach_output(self._write)
        greeting = session.greeting()
        if greeting:
            self._write(greeting)
        return session

    def _write(self, data: bytes) -> None:
        """Write to the line; what does not fit in the pty is lost (nobody is reading)."""
        with self._write_lock:
            if self._master is None:
                return
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._master, view)
                except BlockingIOError:
                    return
                except OSError:
                    return  # the pty is being closed
                view = view[written:]

    def _serve(self) -> None:
        master = self._master
        while True:
            readable, _, _ = select.select([master, self._wake_read], [], [])
            if self._wake_read in readable:
                return
            try:
                data = os.read(master, _READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                return
            try:
                reply = self._session.feed(data)
            except ConnectionDropped:
                self._close_session()
                self._session = self._open_session()
                continue
            if reply:
                self._write(reply)

    def _close_session(self) -> None:
        if isinstance(self._session, UnsolicitedSession):
            self._session.close()

    def stop(self) -> None:
        """Stop answering and close the pseudo-terminal (clients then see the line gone)."""
        if self._thread is None:
            return
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=5)
        self._close_session()
        with self._write_lock:
            for fd in (self._master, self._slave, self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._master = self._slave = None
        self._thread = None
