"""What every simulated instrument shares: a byte-stream session that frames commands.

A simulated instrument answers its real command set. Each client connection (a TCP socket or an
in-process adapter) gets a `Session` that buffers the incoming bytes, cuts them into complete
commands the way the real instrument does, and returns the bytes the instrument would send back.
"""

from __future__ import annotations

import threading

from simulators.lab import SimulatedLab


class SimulatedInstrument:
    """Base class: one simulated instrument attached to the shared `SimulatedLab`.

    Subclasses set the terminators and implement `handle`; instruments whose commands carry no
    terminator (the ELL14) override `split`.
    """

    #: Bytes that end a command sent to the instrument.
    input_terminator: bytes = b"\n"
    #: Bytes the instrument appends to each reply.
    output_terminator: bytes = b"\n"
    #: Port of the real instrument's raw-socket interface (the default for `hotspin sim serve`).
    default_port: int = 0

    def __init__(self, lab: SimulatedLab, name: str) -> None:
        self.lab = lab
        self.name = name
        # One command at a time, as the real instrument's parser; shared by every connection.
        self.lock = threading.RLock()

    def open_session(self) -> Session:
        """Return a new session for one client connection."""
        return Session(self)

    def greeting(self) -> bytes:
        """Return what the instrument sends when a client connects (nothing, for most)."""
        return b""

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        """Cut ``buffer`` into complete commands (terminators removed) and the incomplete rest."""
        parts = buffer.split(self.input_terminator)
        return parts[:-1], parts[-1]

    def handle(self, command: bytes) -> bytes:
        """Execute one command and return the reply bytes, terminator included (b'' for none)."""
        raise NotImplementedError


class Session:
    """One client's connection to a simulated instrument: framing and replies."""

    def __init__(self, instrument: SimulatedInstrument) -> None:
        self.instrument = instrument
        self._pending = b""

    def greeting(self) -> bytes:
        """Return the bytes the instrument sends on connection."""
        return self.instrument.greeting()

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; return the bytes of every reply they complete."""
        commands, self._pending = self.instrument.split(self._pending + data)
        replies = []
        for command in commands:
            with self.instrument.lock:
                replies.append(self.instrument.handle(command))
        return b"".join(replies)
