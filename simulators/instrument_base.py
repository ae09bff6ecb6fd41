"""What every simulated instrument shares: a byte-stream session that frames commands.

A simulated instrument answers its real command set. Each client connection (a TCP socket or an
in-process adapter) gets a `Session` that buffers the incoming bytes, cuts them into complete
commands the way the real instrument does, and returns the bytes the instrument would send back.

Framing runs in time linear in the bytes received: each chunk is searched for the terminator
once, from where the previous search stopped. The input buffer is bounded, as the instrument's
own is: a command longer than `SimulatedInstrument.input_buffer_bytes` is answered with the
instrument's overrun answer (`SimulatedInstrument.overrun`: -363 "Input buffer overrun" on a SCPI
instrument) and the rest of it, up to its terminator, is discarded unread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hotspin.analysis.checks import ParameterError, check_range
from hotspin.simulators.lab import SimulatedLab

FAULT_KINDS = ("drop", "delay", "corrupt", "error", "stall")


class ConnectionDropped(Exception):  # noqa: N818 (a simulated event, not an error of ours)
    """The simulated instrument has dropped this client's connection."""


@dataclass
class Fault:
    """A fault the simulated instrument will commit, for tests and for the station file.

    ``drop`` closes the client's connection; ``delay`` answers ``delay_s`` late; ``corrupt``
    garbles the reply; ``error`` answers as the instrument answers an invalid command (its own
    error reply, error-queue entry or status bit); ``stall`` answers nothing for ``duration_s``
    (forever when None). The fault strikes after ``after`` commands and lasts ``count`` commands
    (a stall lasts its duration instead).
    """

    kind: str
    after: int = 0
    count: int = 1
    delay_s: float = 0.2
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ParameterError(f"fault kind = {self.kind!r} is not one of {list(FAULT_KINDS)}")
        check_range("fault after", self.after, 0, 1e9, "commands")
        check_range("fault count", self.count, 1, 1e9, "commands")
        check_range("fault delay_s", self.delay_s, 0.0, 3600.0, "s")
        if self.duration_s is not None:
            check_range("fault duration_s", self.duration_s, 0.0, 1e6, "s")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Fault:
        """Build a fault from a station-file table; unknown names are an error naming them."""
        known = {"kind", "after", "count", "delay_s", "duration_s"}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ParameterError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        return cls(**mapping)


class FaultInjector:
    """The faults planned for one simulated instrument, consumed command by command."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        """``now``: the clock a stall's duration is counted on (the simulated lab's)."""
        self._now = now
        self._lock = threading.Lock()
        self._planned: list[Fault] = []
        self._stalled_until: float | None = None
        self.committed: list[str] = []  # the kinds of the faults committed so far

    def add(self, fault: Fault) -> None:
        """Plan a fault (its ``after`` counts from now)."""
        with self._lock:
            self._planned.append(Fault(**vars(fault)))

    def clear(self) -> None:
        """Forget every planned fault and end a stall."""
        with self._lock:
            self._planned.clear()
            self._stalled_until = None

    def next(self) -> Fault | None:
        """Return the fault this command meets, if any, and count the command."""
        with self._lock:
            now = self._now()
            if self._stalled_until is not None:
                if now < self._stalled_until:
                    return Fault("stall")
                self._stalled_until = None
            hit = None
            for fault in self._planned:
                if fault.after > 0:
                    fault.after -= 1
                elif hit is None:
                    hit = fault
            if hit is None:
                return None
            self.committed.append(hit.kind)
            if hit.kind == "stall":
                self._planned.remove(hit)
                length = math.inf if hit.duration_s is None else hit.duration_s
                self._stalled_until = now + length
            else:
                hit.count -= 1
                if hit.count <= 0:
                    self._planned.remove(hit)
            return hit


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
    #: A command the instrument does not know, for the ``error`` fault.
    invalid_command: bytes = b"BOGUS"
    #: True when a message ends at the last byte of `input_terminator` and the bytes before it
    #: are optional (the 336 ends a message at its LF; the CR before it may be left out).
    terminator_prefix_optional: bool = False
    #: Longest command the instrument buffers, in bytes; a longer one is an input overrun.
    input_buffer_bytes: int = 1 << 20

    def __init__(self, lab: SimulatedLab, name: str) -> None:
        self.lab = lab
        self.name = name
        # One command at a time, as the real instrument's parser; shared by every connection.
        self.lock = threading.RLock()
        self.faults = FaultInjector(lab.clock.now)

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

    def overrun(self) -> bytes:
        """Answer a command longer than the input buffer (default: discard it silently)."""
        return b""

    def error_reply(self, command: bytes) -> bytes:
        """Answer ``command`` as if it had been mistyped: the instrument's own error answer.

        The default sends the invalid command instead. Instruments that report errors through a
        status register or an error queue override it to run the invalid command before the real
        one, so the driver's usual error check finds it.
        """
        return self.handle(self.invalid_command)


class Session:
    """One client's connection to a simulated instrument: framing and replies."""

    def __init__(self, instrument: SimulatedInstrument) -> None:
        self.instrument = instrument
        self._pending = bytearray()
        self._discarding = False  # inside a command that overran the input buffer
        terminator = instrument.input_terminator
        self._terminator = terminator[-1:] if instrument.terminator_prefix_optional else terminator
        self._optional = terminator[:-1] if instrument.terminator_prefix_optional else b""
        # An instrument that cuts commands its own way (the ELL14's fixed lengths) keeps `split`.
        self._own_split = type(instrument).split is not SimulatedInstrument.split

    def greeting(self) -> bytes:
        """Return the bytes the instrument sends on connection."""
        return self.instrument.greeting()

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; return the bytes of every reply they complete.

        Raises ConnectionDropped when a ``drop`` fault strikes (the transport then closes).
        """
        replies = []
        for command in self._frame(data):
            if command is None:  # an input buffer overrun
                with self.instrument.lock:
                    replies.append(self.instrument.overrun())
                continue
            fault = self.instrument.faults.next()
            if fault is not None and fault.kind == "drop":
                raise ConnectionDropped(self.instrument.name)
            if fault is not None and fault.kind == "stall":
                continue  # the command is lost; nothing comes back
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.delay_s)
            with self.instrument.lock:
                if fault is not None and fault.kind == "error":
                    reply = self.instrument.error_reply(command)
                else:
                    reply = self.instrument.handle(command)
            if fault is not None and fault.kind == "corrupt":
                reply = corrupt(reply, self.instrument.output_terminator)
            replies.append(reply)
        return b"".join(replies)

    def _frame(self, data: bytes) -> list[bytes | None]:
        """Return the complete commands in the bytes so far (None for an overrun), in order."""
        limit = self.instrument.input_buffer_bytes
        if self._own_split:
            commands, rest = self.instrument.split(bytes(self._pending) + data)
            self._pending = bytearray(rest)
            if len(rest) <= limit:
                return list(commands)
            self._pending.clear()
            return [*commands, None]
        terminator, buffer = self._terminator, self._pending
        keep = len(terminator) - 1  # bytes that may hold the start of a split terminator
        start = max(0, len(buffer) - keep)  # everything before was searched already
        buffer += data
        commands: list[bytes | None] = []
        begin = 0
        while (end := buffer.find(terminator, start)) >= 0:
            if self._discarding:
                self._discarding = False  # the overrun was answered; its rest is dropped
            elif end - begin > limit:
                commands.append(None)
            else:
                command = bytes(buffer[begin:end])
                if self._optional and command.endswith(self._optional):
                    command = command[: -len(self._optional)]
                commands.append(command)
            begin = start = end + len(terminator)
        del buffer[:begin]
        if not self._discarding and len(buffer) > limit:
            commands.append(None)  # answered now, as the instrument does when its buffer fills
            self._discarding = True
        if self._discarding:
            del buffer[: len(buffer) - keep]
        return commands


def corrupt(reply: bytes, terminator: bytes) -> bytes:
    """Return ``reply`` garbled as line noise would: its characters replaced, its end kept."""
    body = reply[: -len(terminator)] if terminator and reply.endswith(terminator) else reply
    if not body:
        return reply
    garbled = bytes(0x3F if b not in (0x0A, 0x0D) else b for b in body[: min(len(body), 8)])
    return garbled + body[8:] + reply[len(body) :]
