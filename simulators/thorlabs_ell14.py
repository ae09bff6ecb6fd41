"""Simulated Thorlabs ELL14 rotation mount, turning the lab's half-wave plate.

It speaks the Elliptec protocol (see `instruments.thorlabs_ell14` for the format and sources):
commands carry no terminator, so `split` cuts them by the length each mnemonic has; replies end in
CR LF. It is served over TCP like a serial-to-Ethernet bridge.

Moves take time: the mount turns at `ROTATION_SPEED_DEG_PER_S` (Thorlabs' ELL14 specification:
up to 430 °/s) on the simulated clock. While it turns, ``gs`` answers busy (``GS09``) and further
moves are refused busy; the move is answered ``PO`` when it has ended, which on this byte stream
is in front of the reply to the next command. The plate angle `SimulatedLab.hwp_angle_deg`
follows the mount whenever it is addressed and before every record the lab makes.

Modelling choices the manual leaves open: an absolute move goes straight to its target (no
wrap-around), a relative move may cross zero and the position is then taken modulo one turn,
homing goes straight back to zero whichever direction is asked, an ``ma`` target outside one turn
is refused ``GS04`` (value out of range), and CR/LF bytes between commands are skipped (some host
libraries, e.g. thorlabs-elliptec, append them).
"""

from __future__ import annotations

from dataclasses import dataclass

from hotspin.simulators.instrument_base import SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab

#: Maximum rotation speed of the ELL14 (Thorlabs specification), °/s.
ROTATION_SPEED_DEG_PER_S = 430.0
#: Encoder pulses per turn of the ELL14 (``in`` reports 0x00023000).
PULSES_PER_REVOLUTION = 143360
#: Length of the hex data each command carries; every other mnemonic is 3 bytes long.
DATA_LENGTHS = {"in": 0, "gs": 0, "gp": 0, "ho": 1, "ma": 8, "mr": 8}

STATUS_OK = 0
STATUS_COMMAND_ERROR = 3
STATUS_VALUE_OUT_OF_RANGE = 4
STATUS_BUSY = 9


@dataclass(frozen=True)
class _Move:
    """A rotation in progress, in encoder pulses along its path (not wrapped)."""

    start_s: float
    end_s: float
    start_pulses: float
    target_pulses: float

    def pulses_at(self, time_s: float) -> float:
        if time_s >= self.end_s:
            return self.target_pulses
        fraction = (time_s - self.start_s) / (self.end_s - self.start_s)
        return self.start_pulses + fraction * (self.target_pulses - self.start_pulses)


def _signed(data: str) -> int:
    value = int(data, 16)
    return value - (1 << 32) if value & 0x80000000 else value


class SimulatedELL14(SimulatedInstrument):
    """An ELL14 on the Elliptec bus at one address, rotating `SimulatedLab.hwp_angle_deg`."""

    input_terminator = b""
    output_terminator = b"\r\n"
    default_port = 10001

    def __init__(
        self,
        lab: SimulatedLab,
        name: str = "ell14",
        address: str = "0",
        serial_number: str = "11400999",
    ) -> None:
        super().__init__(lab, name)
        self.address = address.upper()
        self.serial_number = serial_number
        with lab.lock:
            self._pulses = lab.hwp_angle_deg % 360.0 * PULSES_PER_REVOLUTION / 360.0
        self._move: _Move | None = None
        self._move_answer_due = False
        lab.motion_updates.append(self._follow_move)  # the plate turns whether asked or not

    def split(self, buffer: bytes) -> tuple[list[bytes], bytes]:
        """Cut ``buffer`` into commands by their known lengths; keep an incomplete one."""
        commands = []
        start = 0
        while True:
            while buffer[start : start + 1] in (b"\r", b"\n"):
                start += 1
            if len(buffer) - start < 3:
                return commands, buffer[start:]
            mnemonic = buffer[start + 1 : start + 3].decode("ascii", "replace")
            length = 3 + DATA_LENGTHS.get(mnemonic, 0)
            if len(buffer) - start < length:
                return commands, buffer[start:]
            commands.append(buffer[start : start + length])
            start += length

    def error_reply(self, command: bytes) -> bytes:
        """Answer an unknown command (status 3) in place of this one."""
        return self.handle(f"{self.address}zz".encode("ascii"))

    def handle(self, command: bytes) -> bytes:
        """Execute one command; return the move's answer if it is due, then the reply."""
        text = command.decode("ascii", "replace")
        if text[0].upper() != self.address:
            return b""  # a command for another device on the bus
        with self.lab.lock:
            self._follow_move()
            answer = self._reply("PO", self._position_hex()) if self._move_answer_due else b""
            self._move_answer_due = False
            return answer + self._execute(text[1:3], text[3:])

    def _execute(self, mnemonic: str, data: str) -> bytes:
        if mnemonic == "in":
            return self._reply("IN", self._info())
        if mnemonic == "gs":
            return self._status(STATUS_BUSY if self._move else STATUS_OK)
        if mnemonic == "gp":
            return self._reply("PO", self._position_hex())
        if mnemonic not in ("ho", "ma", "mr"):
            return self._status(STATUS_COMMAND_ERROR)
        if self._move is not None:
            return self._status(STATUS_BUSY)
        try:
            value = _signed(data) if mnemonic != "ho" else int(data)
        except ValueError:
            return self._status(STATUS_COMMAND_ERROR)
        if mnemonic == "ho":
            if value not in (0, 1):
                return self._status(STATUS_VALUE_OUT_OF_RANGE)
            target = 0.0
        elif mnemonic == "ma":
            if not 0 <= value < PULSES_PER_REVOLUTION:
                return self._status(STATUS_VALUE_OUT_OF_RANGE)
            target = float(value)
        else:
            target = self._pulses + value
        self._start(target)
        return b""  # answered when the move ends

    def _start(self, target_pulses: float) -> None:
        now = self.lab.clock.now()
        turn_deg = abs(target_pulses - self._pulses) * 360.0 / PULSES_PER_REVOLUTION
        self._move = _Move(
            now, now + turn_deg / ROTATION_SPEED_DEG_PER_S, self._pulses, target_pulses
        )

    def _follow_move(self) -> None:
        """Bring the mount and the plate up to the clock."""
        if self._move is not None:
            now = self.lab.clock.now()
            self._pulses = self._move.pulses_at(now)
            if now >= self._move.end_s:
                self._pulses %= PULSES_PER_REVOLUTION
                self._move = None
                self._move_answer_due = True
        self.lab.hwp_angle_deg = (self._pulses * 360.0 / PULSES_PER_REVOLUTION) % 360.0

    def _info(self) -> str:
        # model 14, serial, year, firmware, hardware (metric thread), travel 360°, pulses per turn
        return f"0E{self.serial_number}20241701{360:04X}{PULSES_PER_REVOLUTION:08X}"

    def _position_hex(self) -> str:
        return f"{round(self._pulses) & 0xFFFFFFFF:08X}"

    def _status(self, code: int) -> bytes:
        return self._reply("GS", f"{code:02X}")

    def _reply(self, mnemonic: str, data: str) -> bytes:
        return f"{self.address}{mnemonic}{data}".encode("ascii") + self.output_terminator
