"""Simulated Thorlabs ELL14 rotation mount, turning the lab's half-wave plate.

It speaks the Elliptec protocol (ELLx modules protocol manual, Issue 5; the field layouts as the
host libraries decode them: pyLabLib ``pylablib/devices/Thorlabs/elliptec.py``, the ``elliptec``
package ``tools.py``/``cmd.py`` and thorlabs-elliptec ``ellx.py``; see also
`hotspin.instruments.thorlabs_ell14`): commands carry no terminator, so `split` cuts them by the
length each mnemonic has; replies end in CR LF. It is served over TCP like a serial-to-Ethernet
bridge, and over a pseudo-terminal as the serial device it is (`simulators.pty_serial`).

Moves take time: the mount turns at `ROTATION_SPEED_DEG_PER_S` (Thorlabs' ELL14 specification:
up to 430 °/s) times the velocity setting (``sv``/``gv``, percent) on the simulated clock. While it
turns, ``gs`` answers busy (``GS09``) and further moves are refused busy. The move is answered
``PO`` + the position reached **when it ends, unprompted** (manual: a move is answered when it has
completed; pyLabLib's ``move_to`` waits for exactly that reply), through `UnsolicitedSession` to the
client that started it. The plate angle `SimulatedLab.hwp_angle_deg` follows the mount whenever
it is addressed, while a move's end is watched, and before every record the lab makes.

Commands (reply in brackets): ``in`` [IN], ``gs`` [GS], ``gp`` [PO], ``ma``/``mr`` + 8 hex,
``ho`` + direction, ``fw``/``bw`` (jog by the jog step) [PO at the end], ``st`` (stop: the move
is answered now, where it stopped; GS00 when nothing moves), ``gj``/``sj`` jog step [GJ / GS],
``go``/``so`` home offset [HO / GS], ``gv``/``sv`` velocity [GV, 2 hex percent / GS],
``i1``/``i2`` motor information [I1/I2, 22 characters: loop, motor, current, ramp up, ramp down,
forward and backward period], ``us`` save user data [GS00], ``ca`` + new address [GS from the new
address]. Anything else, and ``i3`` (the ELL14 has two motors), answers ``GS03`` (command error).

Modelling choices the manual leaves open: an absolute move goes straight to its target (no
wrap-around), a relative move or jog may cross zero and the position is then taken modulo one
turn, homing goes straight back to zero whichever direction is asked (the home offset is stored
and reported, not applied), an ``ma`` target outside one turn and a velocity outside 1–100 % are
refused ``GS04`` (value out of range), and CR/LF bytes between commands are skipped
(thorlabs-elliptec appends them). A fault status a command was answered with is answered once
more by the next ``gs`` (pyLabLib, observed on the hardware: after a faulty status it sends
``gs`` "to clear the fault status, otherwise it is returned as the next status result").
The motor-information values are plausible numbers, not a measured mount's.
"""

from __future__ import annotations

from dataclasses import dataclass

from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.unsolicited import UnsolicitedInstrument, UnsolicitedSession

#: Maximum rotation speed of the ELL14 (Thorlabs specification), °/s.
ROTATION_SPEED_DEG_PER_S = 430.0
#: Encoder pulses per turn of the ELL14 (``in`` reports 0x00023000).
PULSES_PER_REVOLUTION = 143360
#: Length of the hex data each command carries; every other mnemonic is 3 bytes long.
DATA_LENGTHS = {"ho": 1, "ma": 8, "mr": 8, "sj": 8, "so": 8, "sv": 2, "ca": 1}
#: Motor information of ``i1``/``i2``: loop on, motor on, current (1866 points per A), ramp up
#: and down, forward and backward period (14.74 MHz / frequency), as pyLabLib decodes them.
MOTOR_INFO = {"1": "1105D5FFFFFFFF00A400A8", "2": "1105D5FFFFFFFF00A200A6"}
#: Jog step after power-up: 10° in pulses.
DEFAULT_JOG_PULSES = round(10 * PULSES_PER_REVOLUTION / 360)
#: Wall-clock interval at which a pending move's end is checked on a manual clock, s.
MANUAL_CLOCK_WATCH_S = 0.005
#: Longest wall-clock wait between two checks of a pending move on a scaled clock, s.
MAX_WATCH_S = 0.05

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
    owner: UnsolicitedSession | None  # the client the move's answer goes to

    def pulses_at(self, time_s: float) -> float:
        if time_s >= self.end_s:
            return self.target_pulses
        fraction = (time_s - self.start_s) / (self.end_s - self.start_s)
        return self.start_pulses + fraction * (self.target_pulses - self.start_pulses)


def _signed(data: str) -> int:
    value = int(data, 16)
    return value - (1 << 32) if value & 0x80000000 else value


class SimulatedELL14(UnsolicitedInstrument):
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
        self.velocity_percent = 100
        self.jog_pulses = DEFAULT_JOG_PULSES
        self.home_offset_pulses = 0
        self._unread_fault: int | None = None  # answered again by the next gs (see module doc)
        lab.motion_updates.append(self._turn_plate)  # the plate turns whether asked or not

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
        """Execute one command; return a move's answer if it ended just now, then the reply."""
        text = command.decode("ascii", "replace")
        if text[0].upper() != self.address:
            return b""  # a command for another device on the bus
        with self.lab.lock:
            answer = self._follow_move()
            return answer + self._execute(text[1:3], text[3:])

    # --- unprompted answers ---------------------------------------------------------------------
    def catch_up(self) -> None:
        """Bring the mount up to the clock; a move that has ended sends its answer."""
        with self.lab.lock:
            self._follow_move()

    def pending_for(self, session: UnsolicitedSession) -> float | None:
        """Return how long (wall s) until ``session``'s move may end, or None if none is due."""
        if self._move is None or self._move.owner is not session:
            return None
        clock = self.lab.clock
        if clock.manual:
            return MANUAL_CLOCK_WATCH_S
        remaining_s = (self._move.end_s - clock.now()) / clock.speed
        return min(max(remaining_s, 0.0), MAX_WATCH_S)

    # --- commands -------------------------------------------------------------------------------
    def _execute(self, mnemonic: str, data: str) -> bytes:
        queries = {
            "in": lambda: self._reply("IN", self._info()),
            "gs": self._get_status,
            "gp": lambda: self._reply("PO", self._position_hex()),
            "gj": lambda: self._reply("GJ", f"{self.jog_pulses & 0xFFFFFFFF:08X}"),
            "go": lambda: self._reply("HO", f"{self.home_offset_pulses & 0xFFFFFFFF:08X}"),
            "gv": lambda: self._reply("GV", f"{self.velocity_percent:02X}"),
            "i1": lambda: self._reply("I1", MOTOR_INFO["1"]),
            "i2": lambda: self._reply("I2", MOTOR_INFO["2"]),
            "us": lambda: self._status(STATUS_OK),
            "st": self._stop,
        }
        if mnemonic in queries:
            return queries[mnemonic]()
        try:
            value = int(data, 16) if data else 0
        except ValueError:
            return self._status(STATUS_COMMAND_ERROR)
        settings = {"sj": self._set_jog, "so": self._set_home_offset, "sv": self._set_velocity}
        if mnemonic in settings:
            return settings[mnemonic](value)
        if mnemonic == "ca":
            self.address = data.upper()
            return self._status(STATUS_OK)
        if mnemonic not in ("ho", "ma", "mr", "fw", "bw"):
            return self._status(STATUS_COMMAND_ERROR)
        if self._move is not None:
            return self._status(STATUS_BUSY)
        if mnemonic == "ho":
            if value not in (0, 1):
                return self._status(STATUS_VALUE_OUT_OF_RANGE)
            target = 0.0
        elif mnemonic == "ma":
            if not 0 <= value < PULSES_PER_REVOLUTION:
                return self._status(STATUS_VALUE_OUT_OF_RANGE)
            target = float(value)
        elif mnemonic == "mr":
            target = self._pulses + _signed(data)
        else:
            target = self._pulses + (self.jog_pulses if mnemonic == "fw" else -self.jog_pulses)
        return self._start(target)

    def _set_jog(self, value: int) -> bytes:
        self.jog_pulses = _signed(f"{value:08X}")
        return self._status(STATUS_OK)

    def _set_home_offset(self, value: int) -> bytes:
        self.home_offset_pulses = _signed(f"{value:08X}")
        return self._status(STATUS_OK)

    def _set_velocity(self, percent: int) -> bytes:
        if not 1 <= percent <= 100:
            return self._status(STATUS_VALUE_OUT_OF_RANGE)
        self.velocity_percent = percent
        return self._status(STATUS_OK)

    def _start(self, target_pulses: float) -> bytes:
        """Start a move; it is answered when it ends (b'' now)."""
        now = self.lab.clock.now()
        turn_deg = abs(target_pulses - self._pulses) * 360.0 / PULSES_PER_REVOLUTION
        speed = ROTATION_SPEED_DEG_PER_S * self.velocity_percent / 100.0
        owner = self.feeding
        self._move = _Move(now, now + turn_deg / speed, self._pulses, target_pulses, owner)
        if owner is not None:
            owner.expect()
        return self._follow_move()  # a move of zero length ends at once

    def _stop(self) -> bytes:
        """End a move where it is now; the move is answered, else the status is."""
        if self._move is None:
            return self._status(STATUS_OK)
        now = self.lab.clock.now()
        move = self._move
        self._move = _Move(move.start_s, now, move.start_pulses, move.pulses_at(now), move.owner)
        return self._follow_move() or self._status(STATUS_OK)  # GS00 if another client moved it

    def _follow_move(self) -> bytes:
        """Bring the mount and the plate up to the clock; deliver an ended move's answer.

        Returns the answer when it goes in front of the reply being built (the owner is the
        client feeding now), else b'' (it was sent to its owner, or nobody waits for it).
        """
        self._turn_plate()
        if self._move is None or self.lab.clock.now() < self._move.end_s:
            return b""
        self._pulses %= PULSES_PER_REVOLUTION
        owner, self._move = self._move.owner, None
        message = self._reply("PO", self._position_hex())
        return message if owner is None else owner.deliver(message)

    def _turn_plate(self) -> None:
        """Bring the mount's angle and the plate up to the clock (a move's end is left alone).

        This runs before every record of the lab, from whichever thread records, so it sends
        nothing: a move's answer goes out only under the instrument's lock, in stream order.
        """
        if self._move is not None:
            self._pulses = self._move.pulses_at(self.lab.clock.now())
        self.lab.hwp_angle_deg = (self._pulses * 360.0 / PULSES_PER_REVOLUTION) % 360.0

    def _info(self) -> str:
        # model 14, serial, year, firmware, hardware (metric thread), travel 360°, pulses per turn
        return f"0E{self.serial_number}20241701{360:04X}{PULSES_PER_REVOLUTION:08X}"

    def _position_hex(self) -> str:
        return f"{round(self._pulses) & 0xFFFFFFFF:08X}"

    def _get_status(self) -> bytes:
        """``gs``: a fault answered since the last ``gs`` first, once; then the present state."""
        code, self._unread_fault = self._unread_fault, None
        if code is None:
            code = STATUS_BUSY if self._move else STATUS_OK
        return self._reply("GS", f"{code:02X}")

    def _status(self, code: int) -> bytes:
        """Answer a command with a status; a fault is also kept for the next ``gs``."""
        if code not in (STATUS_OK, STATUS_BUSY):
            self._unread_fault = code
        return self._reply("GS", f"{code:02X}")

    def _reply(self, mnemonic: str, data: str) -> bytes:
        return f"{self.address}{mnemonic}{data}".encode("ascii") + self.output_terminator
