"""Sessions on instruments that also speak unprompted, such as the ELL14 at the end of a move.

A `Session` answers only what it is fed. Some instruments send a message of their own when
something happens: the Thorlabs ELL14 answers a move when the move *ends*, whether or not the
host has sent anything since. An `UnsolicitedInstrument` tells its `UnsolicitedSession` when such
a message becomes due, and the session delivers it the way its transport works:

* push (TCP, pseudo-terminal): the transport hands the session its send function with
  `attach_output`; from then on every byte for this client, replies and unprompted messages alike,
  goes out through it, in the order the instrument produced them (all under the instrument's
  lock). While a message is pending, a watcher thread follows the clock and sends it when due.
* pull (the in-process adapter): nothing happens between calls; the adapter asks `poll` for what
  has become due before it reports that nothing has arrived.

A message that becomes due while this same session is feeding a command is returned in front of
that command's reply, which is where it falls on a real serial line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hotspin.simulators.instrument_base import Session, SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab


class UnsolicitedInstrument(SimulatedInstrument):
    """A simulated instrument that can send messages nobody asked for (see the module doc)."""

    def __init__(self, lab: SimulatedLab, name: str) -> None:
        super().__init__(lab, name)
        #: The session whose bytes are being executed, under `lock` (None between commands).
        self.feeding: UnsolicitedSession | None = None

    def open_session(self) -> UnsolicitedSession:
        """Return a new session for one client connection."""
        return UnsolicitedSession(self)

    def catch_up(self) -> None:
        """Bring the instrument up to its clock, delivering every message that became due."""
        raise NotImplementedError

    def pending_for(self, session: UnsolicitedSession) -> float | None:
        """Return the wall-clock wait (s) before a message for ``session`` may be due, or None."""
        raise NotImplementedError


class UnsolicitedSession(Session):
    """One client's connection to an `UnsolicitedInstrument`: replies and unprompted messages."""

    instrument: UnsolicitedInstrument

    def __init__(self, instrument: UnsolicitedInstrument) -> None:
        super().__init__(instrument)
        self._send: Callable[[bytes], object] | None = None
        self._outbox = bytearray()
        self._watching = False  # a watcher thread runs; guarded by the instrument's lock
        self.closed = False

    def attach_output(self, send: Callable[[bytes], object]) -> None:
        """Send everything for this client through ``send`` from now on (push transports)."""
        self._send = send

    def close(self) -> None:
        """Forget this client: nothing more is sent to it."""
        self.closed = True
        self._send = None

    def feed(self, data: bytes) -> bytes:
        """Execute the commands ``data`` completes; return their replies (b'' when pushing)."""
        with self.instrument.lock:
            self.instrument.feeding = self
            try:
                out = bytes(self._outbox) + super().feed(data)
            finally:
                self.instrument.feeding = None
            self._outbox.clear()
            if self._send is None:
                return out
            if out:
                self._send(out)
            return b""

    def deliver(self, message: bytes) -> bytes:
        """Take a message the instrument sends unprompted; return it if it belongs in a reply.

        Called under the instrument's lock. While this session is feeding, the message goes in
        front of the reply being built (returned); otherwise it is sent now (push) or kept for
        `poll` (pull).
        """
        if self.closed:
            return b""
        if self.instrument.feeding is self:
            return message
        if self._send is None:
            self._outbox.extend(message)
        else:
            try:
                self._send(message)
            except OSError:
                self.close()  # the client went away
        return b""

    def poll(self) -> bytes:
        """Return what the instrument sent unprompted since the last call (pull transports)."""
        with self.instrument.lock:
            self.instrument.catch_up()
            out = bytes(self._outbox)
            self._outbox.clear()
        return out

    def expect(self) -> None:
        """A message for this session will become due: on a push transport, watch the clock.

        Called under the instrument's lock, like the watcher's decision to stop, so a move that
        starts as the previous watcher ends is never left unwatched.
        """
        if self._send is None or self._watching:
            return
        self._watching = True
        threading.Thread(
            target=self._watch, name=f"sim-{self.instrument.name}-unsolicited", daemon=True
        ).start()

    def _watch(self) -> None:
        while True:
            with self.instrument.lock:
                self.instrument.catch_up()
                wait_s = None if self.closed else self.instrument.pending_for(self)
                if wait_s is None:
                    self._watching = False
                    return
            time.sleep(wait_s)  # bounded by the instrument's estimate of when the message is due
