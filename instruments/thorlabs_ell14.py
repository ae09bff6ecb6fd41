"""Thorlabs ELL14 Elliptec rotation mount: turns the polarimeter's half-wave plate.

The Elliptec protocol (ELLx communications protocol manual; field layout as decoded by pylablib
``devices/Thorlabs/elliptec.py`` and thorlabs-elliptec 1.3.0 ``ellx.py``), serial 9600 baud 8N1:

* A command is ``<address><two lower-case letters>[hex data]`` with **no terminator**: the device
  frames it by its known length. Address ``0``–``F``.
* A reply is ``<address><two upper-case letters>[hex data]`` ending in CR LF.
* ``in`` → ``IN`` + model (2 hex) + serial (8) + year (4 decimal) + firmware (2) + hardware (2,
  bit 7 set for imperial threads) + travel (4 hex, 360 for a rotation mount) + pulses per travel
  (8 hex; 143360 = 0x23000 for the ELL14).
* ``gs`` → ``GS`` + status (2 hex), see `ELLStatus`. A command refused with a fault status is
  answered with that status once more by the next ``gs`` (pyLabLib ``_parse_status``, observed
  on the hardware), so the driver reads the status once after a refusal to clear it.
* ``gp`` → ``PO`` + position (8 hex, 32-bit two's complement encoder pulses).
* ``ma`` + 8 hex (absolute), ``mr`` + 8 hex (relative, two's complement), ``ho`` + direction
  (0 clockwise, 1 counter-clockwise) start a move. The device answers a move **when it ends**,
  with ``PO`` (the position reached) or ``GS`` (a fault); meanwhile ``gs`` answers busy (9).

The move's answer is unprompted: it arrives whenever the move ends, between or ahead of the
replies to other commands. The driver therefore keeps track of a move in progress: a ``PO`` read
while one is pending is the move's end (the position it reached), any command other than ``gs``
first waits for the move to end, and a ``PO`` that arrives when another reply is expected (a
move started before this driver connected) is skipped, so no reply is taken for another's.
Waiting polls ``gs`` at `POLL_INTERVAL_S` on an injected clock (``now``/``sleep``, wall time by
default; a simulated station passes its simulated clock). The replies are parsed per mnemonic by
hand, which is why this driver has methods rather than `Instrument.control` properties.

Angles: the mount turns continuously, but ``ma`` addresses one turn, 0 ≤ angle < 360° (the
``travel`` the mount reports). Relative moves are limited to one turn either way, more than
enough for a half-wave plate (period 180°) and a guard against typos.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hotspin.analysis.checks import ParameterError, check_range
from hotspin.instruments.errors import (
    GarbledReplyError,
    InstrumentCommandError,
    InstrumentTimeoutError,
    translated_io_errors,
)
from pymeasure.instruments import Instrument
from pyvisa.constants import Parity, StopBits

#: Port of the serial-to-Ethernet bridge the simulated mount is served on.
BRIDGE_PORT = 10001
#: Time between status polls while waiting for a move, in s.
POLL_INTERVAL_S = 0.05


class ELLStatus(enum.IntEnum):
    """The ``GS`` status codes of the ELLx protocol manual."""

    OK = 0
    COMMUNICATION_TIMEOUT = 1
    MECHANICAL_TIMEOUT = 2
    COMMAND_ERROR = 3  # command error or not supported
    VALUE_OUT_OF_RANGE = 4
    MODULE_ISOLATED = 5
    MODULE_OUT_OF_ISOLATION = 6
    INITIALIZING_ERROR = 7
    THERMAL_ERROR = 8
    BUSY = 9
    SENSOR_ERROR = 10
    MOTOR_ERROR = 11
    OUT_OF_RANGE = 12
    OVER_CURRENT = 13


@dataclass(frozen=True)
class ELLInfo:
    """What the ``in`` command reports about the mount."""

    model: int  # the x of ELLx
    serial_number: str
    year: int
    firmware: str  # two hex digits, as reported
    hardware_release: int
    imperial_thread: bool
    travel: int  # degrees for a rotation mount
    pulses_per_travel: int


def parse_info(data: str) -> ELLInfo:
    """Decode the 30 characters of an ``IN`` reply."""
    if len(data) != 30:
        raise ValueError(f"an IN reply carries 30 characters, got {len(data)}: {data!r}")
    hardware = int(data[16:18], 16)
    return ELLInfo(
        model=int(data[0:2], 16),
        serial_number=data[2:10],
        year=int(data[10:14]),
        firmware=data[14:16],
        hardware_release=hardware & 0x7F,
        imperial_thread=bool(hardware & 0x80),
        travel=int(data[18:22], 16),
        pulses_per_travel=int(data[22:30], 16),
    )


def encode_pulses(pulses: int) -> str:
    """Encode a signed pulse count as 8 hex digits (32-bit two's complement)."""
    return f"{pulses & 0xFFFFFFFF:08X}"


def decode_pulses(data: str) -> int:
    """Decode 8 hex digits (32-bit two's complement) into a signed pulse count."""
    value = int(data, 16)
    return value - (1 << 32) if value & 0x80000000 else value


class ELL14(Instrument):
    """Thorlabs ELL14 rotation mount: info, status, homing, moves and position in degrees."""

    def __init__(
        self,
        adapter: Any,
        name: str = "Thorlabs ELL14",
        address: str = "0",
        move_timeout_s: float = 10.0,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        if len(address) != 1 or address.upper() not in "0123456789ABCDEF":
            raise ParameterError(f"address = {address!r} is not one hex digit 0-F")
        kwargs.setdefault("read_termination", "\r\n")
        kwargs.setdefault("write_termination", "")
        kwargs.setdefault("timeout", 2000)
        kwargs.setdefault(
            "asrl",
            {"baud_rate": 9600, "data_bits": 8, "parity": Parity.none, "stop_bits": StopBits.one},
        )
        super().__init__(adapter, name, includeSCPI=False, **kwargs)
        self.address = address.upper()
        self.move_timeout_s = move_timeout_s
        self._now = now
        self._sleep = sleep
        self._move_pending = False
        try:
            self.info = parse_info(self._exchange("in", "IN"))
        except ValueError as error:
            raise GarbledReplyError(self.name, str(error)) from None
        if self.info.travel <= 0 or self.info.pulses_per_travel <= 0:
            raise GarbledReplyError(self.name, f"travel or pulses of zero in {self.info}")
        self.pulses_per_revolution = self.info.pulses_per_travel * 360 // self.info.travel

    # --- state ----------------------------------------------------------------------------------
    @property
    def status(self) -> ELLStatus | int:
        """Get the status (`ELLStatus`); a move that ended in a fault raises here."""
        self.write(f"{self.address}gs")
        move_fault = None
        while True:
            mnemonic, data = self._read_message()
            if mnemonic == "PO":
                self._move_pending = False  # a move's own answer: it has ended
                continue
            if mnemonic != "GS":
                raise GarbledReplyError(self.name, f"expected GS after 'gs', got {mnemonic}{data}")
            code = self._status_code(data)
            if self._move_pending and code != ELLStatus.BUSY:
                # A move answers GS (instead of PO) when it fails; the poll's reply follows.
                self._move_pending = False
                move_fault = None if code == ELLStatus.OK else code
                continue
            break
        if move_fault is not None:
            raise self._command_error(move_fault, "the last move")
        return code

    @property
    def is_moving(self) -> bool:
        """Get whether a move or homing is in progress (bool)."""
        return self.status == ELLStatus.BUSY

    @property
    def position_deg(self) -> float:
        """Measure the angle in degrees (waits for a move in progress to end first)."""
        self.wait_for_move()
        return self._pulses_to_deg(decode_pulses(self._exchange("gp", "PO")))

    # --- motion ---------------------------------------------------------------------------------
    def home(self, clockwise: bool = True, wait: bool = True) -> None:
        """Rotate to the home (zero) position, clockwise or counter-clockwise."""
        self._start_move(f"ho{0 if clockwise else 1}", wait)

    def move_to(self, angle_deg: float, wait: bool = True) -> None:
        """Rotate to an absolute angle in degrees, 0 ≤ angle < 360."""
        angle = check_range("angle_deg", angle_deg, 0.0, 360.0, "deg", high_open=True)
        pulses = round(angle * self.pulses_per_revolution / 360.0) % self.pulses_per_revolution
        self._start_move(f"ma{encode_pulses(pulses)}", wait)

    def move_by(self, delta_deg: float, wait: bool = True) -> None:
        """Rotate by a relative angle in degrees, -360 ≤ delta ≤ 360 (positive increases it)."""
        delta = check_range("delta_deg", delta_deg, -360.0, 360.0, "deg")
        self._start_move(
            f"mr{encode_pulses(round(delta * self.pulses_per_revolution / 360))}", wait
        )

    def wait_for_move(self, timeout_s: float | None = None) -> None:
        """Poll the status until a move in progress has ended; raise if it takes too long."""
        if not self._move_pending:
            return
        timeout = self.move_timeout_s if timeout_s is None else timeout_s
        deadline = self._now() + timeout
        while True:
            status = self.status
            if status == ELLStatus.OK:
                return
            if status != ELLStatus.BUSY:
                raise self._command_error(status, "gs")
            if self._now() > deadline:
                raise InstrumentTimeoutError(self.name, f"the move did not end within {timeout} s")
            self._sleep(POLL_INTERVAL_S)

    # --- exchanges ------------------------------------------------------------------------------
    def send_command(self, command: str, reply: str) -> str:
        """Send a command (mnemonic and data, no address) and return its ``reply``'s data.

        A ``GS`` reply in place of the expected one carries an error status and raises
        InstrumentCommandError with that code.
        """
        self.wait_for_move()
        return self._exchange(command, reply)

    def write(self, command: str, **kwargs: Any) -> None:
        """Send one command (address included); timeouts and lost links raise InstrumentError."""
        with translated_io_errors(self.name):
            super().write(command, **kwargs)

    def _start_move(self, command: str, wait: bool) -> None:
        self.wait_for_move()
        self.write(f"{self.address}{command}")
        self._move_pending = True
        if wait:
            self.wait_for_move()

    def _exchange(self, command: str, reply: str) -> str:
        self.write(f"{self.address}{command}")
        mnemonic, data = self._read_message()
        while mnemonic == "PO" and reply != "PO":
            mnemonic, data = self._read_message()  # a move's late answer: not this reply
        if mnemonic == reply:
            return data
        if mnemonic == "GS":
            code = self._status_code(data)
            self._clear_fault()
            raise self._command_error(code, command)
        raise GarbledReplyError(self.name, f"expected {reply} after {command!r}, got {mnemonic}")

    def _clear_fault(self) -> None:
        """Read the status once: the mount answers a fault again at the next ``gs`` (pyLabLib)."""
        self.write(f"{self.address}gs")
        mnemonic, _ = self._read_message()
        while mnemonic == "PO":
            mnemonic, _ = self._read_message()

    def _read_message(self) -> tuple[str, str]:
        """Read one reply from this mount; return its mnemonic and data."""
        with translated_io_errors(self.name):
            message = self.read()
        if len(message) < 3 or message[0].upper() != self.address:
            raise GarbledReplyError(
                self.name, f"not a reply from address {self.address}: {message!r}"
            )
        return message[1:3], message[3:]

    def _status_code(self, data: str) -> ELLStatus | int:
        try:
            code = int(data, 16)
        except ValueError:
            raise GarbledReplyError(self.name, f"GS status {data!r} is not hex") from None
        try:
            return ELLStatus(code)
        except ValueError:
            return code  # a code the manual reserves

    def _command_error(self, code: int, command: str) -> InstrumentCommandError:
        meaning = code.name.lower().replace("_", " ") if isinstance(code, ELLStatus) else "reserved"
        return InstrumentCommandError(
            self.name, f"status {int(code)} ({meaning}) after {command!r}", code=int(code)
        )

    def _pulses_to_deg(self, pulses: int) -> float:
        return pulses * 360.0 / self.pulses_per_revolution
