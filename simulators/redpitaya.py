"""Simulated Red Pitaya STEMlab 125-14: its SCPI server (TCP 5000) digitising the polarimeter.

IN1 sees the balanced detector's difference (RF) output, IN2 its sum monitor: both come from
`SimulatedLab.record`, sampled at 125 MHz / decimation, when the acquisition triggers. The board
holds one 16 384-sample circular buffer per input; the samples are written as simulated time
passes (`lab.clock`), so ``ACQ:TRig:FILL?`` turns 1 only once the post-trigger part has been
acquired, and every data query until the next trigger reads the same buffer.

What follows the real server (RedPitaya/RedPitaya ``scpi-server/src``, its scpi-parser, and the
command list at redpitaya.readthedocs.io ``commands-acq``):

- Commands end in CR LF (``main.cpp`` cuts the stream at ``"\\r\\n"``); replies end in CR LF.
  Several commands may share a line, separated by ``;`` (IEEE 488.2 compound headers); query
  replies on one line are joined by ``;``.
- Headers match in short or long form in any case: ``ACQ:TRig`` accepts ``ACQ:TR`` and
  ``acq:trig``; ``SOUR#`` takes the input number (default 1).
- Two error queues per connection, read by ``SYST:ERR:NEXT?`` board queue first: the parser's
  (``-113,"Undefined header;ACQ:FOO"``, ``-224,"Illegal parameter value"``, …) and the board's,
  whose codes are 9000 + the parser code (``8891`` = 9000 − 109, "Missing parameter", also used
  for an invalid decimation) or 9500 + the API code (``9500``: invalid channel), with messages
  ``*<header> <text>``. ``*STB?`` bit 2 (value 4) flags them. A query that fails sends nothing.
- RAW data are the ADC's signed 14-bit codes, −8192…8191; VOLTS are code × full scale / 8192 with
  full scale 1 V (LV) or 20 V (HV) (``rp_hw-profiles`` for the 125-14: ``fast_adc_full_scale = 1``,
  gains 1 and 20). Binary replies are IEEE 488.2 blocks of big-endian int16 or float32 (little-
  endian after ``ACQ:DATA:BYTE:ORDER LEND``, per connection: ``RP_AcqDataEndian``), ASCII
  replies ``{v1,v2,…}``.
- Registered in ``scpi-commands.cpp`` and answered as their handlers do: ``*ESE``/``*ESE?``,
  ``*SRE``/``*SRE?`` (per connection), ``*OPC``, ``*WAI``, ``*TST?`` (``0``, scpi-parser's
  ``SCPI_CoreTstQ``); ``SYSTem:VERSion?`` (``rp_GetVersion``), ``SYSTem:BRD:Name?`` and
  ``SYSTem:BRD:ID?`` (``common.cpp``, the STEMlab 125-14 v1.1 profile); ``acquire.cpp``:
  ``ACQ:AVG``/``ACQ:AVG?`` (``ON``/``OFF``), ``ACQ:TRig:DLY:NS``/``?`` (samples = round(ns /
  (8 ns × decimation)), kept in time across ``ACQ:DEC`` as ``triggerDelayInNs`` does),
  ``ACQ:SRATe?`` (``sprintf("%9.0f Hz")``), ``ACQ:DEC:Factor``/``?`` (1, 2, 4, 8, 16…65536).
- The input range is a jumper on the board (`jumpers`); ``ACQ:SOUR<n>:GAIN`` only tells the
  software how to scale codes to volts, so a gain setting that disagrees with the jumper gives
  volts off by 20, as on the real board.
- The data buffer ends ``ACQ:TRig:DLY`` + 8192 samples after the trigger (trigger at sample 8192
  for a delay of 0). Samples from before ``ACQ:START`` are never written: they keep the previous
  contents, as the FPGA writes only while armed.

The lab's atoms cannot rewind: a pre-trigger window reaching back before the lab's previous record
(or before t = 0) starts where that record ended, and the buffer fills that much later.

Triggers: ``NOW`` fires when it is written to an armed board. The level triggers (``CH1_PE``,
``CH1_NE``, ``CH2_PE``, ``CH2_NE``) watch the input's ADC codes from the moment both the board is
armed and the source is set, as a Schmitt trigger: once the input has been beyond the level by
``ACQ:TRig:HYST`` (0.005 V by default) on the far side, the first sample at or past
``ACQ:TRig:LEV`` is the trigger (both in codes of that input's gain setting). The board looks at
the signal when it is asked (status, fill, pointers, data), at most four buffers back: a longer
wait skips the older stretch (the atoms evolve exactly through it), and a trigger just after such
a skip leaves the skipped pre-trigger samples unwritten. Nothing is connected to the external or
generator triggers: they never fire and a driver waiting for one times out.

Averaging (``ACQ:AVG ON|OFF``, ON after ``ACQ:RST`` as in acq_SetDefault) is stored and read
back, and both acquisitions record through it: each sample the mean of its D ADC samples (ON)
or the last of them (OFF), behind the PDB450A's pole (`SimulatedLab.detection_chain`).

Deep memory (``ACQ:AXI:*``, OS 2.00-18 and later) is `redpitaya_capture.DeepMemory`: with a
buffer enabled, ``ACQ:START`` starts the DDR writer instead of the 16 384-sample buffer, and the
two share the trigger. Not simulated: the generator and split-trigger commands answer ``-113``,
as unknown commands do.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.simulators.instrument_base import Session, SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.redpitaya_capture import (
    BUFFER_SIZE,
    CODES_PER_FULL_SCALE,
    DDR_REGION_BYTES,
    FULL_SCALE_V,
    LEVEL_TRIGGERS,
    DeepMemory,
    TriggeredCapture,
    valid_axi_decimation,
)

ADC_CLOCK_Hz = 125e6
DECIMATIONS = tuple(2**k for k in range(17))
TRIGGER_SOURCES = (
    "DISABLED",
    "NOW",
    "CH1_PE",
    "CH1_NE",
    "CH2_PE",
    "CH2_NE",
    "EXT_PE",
    "EXT_NE",
    "AWG_PE",
    "AWG_NE",
)
DEFAULT_HYSTERESIS_V = 0.005  # acq_SetDefault of the rp library (acq_handler.c, OS 2.x)
IDENTITY = "REDPITAYA,INSTR,SIMULATED,hotspin"
# rp_GetVersion (the OS's ecosystem version): a deep-memory-capable 2.x OS, simulated.
ECOSYSTEM_VERSION = "2.00-18-simulated"
# rp_hw-profiles stem_125_14_v1.1.cpp: boardName and the rp_HPeModels_t value STEM_125_14_v1_1.
BOARD_NAME = "STEMlab 125-14 v1.1"
BOARD_ID = 2
ADC_SAMPLE_PERIOD_NS = 8  # acq_GetADCSamplePeriod: 1 / 125 MHz
ESB_BIT = 0x20  # *STB? bit 5: an enabled event of the ESR is set
MSS_BIT = 0x40  # *STB? bit 6: master summary (an enabled STB bit is set)
ERROR_QUEUE_SIZE = 16  # SCPI_ERROR_QUEUE_SIZE in scpi-server/src/main.cpp
ERROR_QUEUE_BIT = 0x04  # STB_QMA: "error/event queue message available"
DEVICE_ERROR_BASE = 9000  # rp_Log: RP_ERR_CODE for errors, RP_ERR_CODE_FATAL for critical ones
DEVICE_FATAL_BASE = 9500
MISSING_PARAMETER = -109
RP_EOOR = 6  # rp.h: "Value out of range."

# Parser error texts (scpi-parser error.h) for the codes this board produces.
SCPI_ERRORS = {
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -131: "Invalid suffix",
    -138: "Suffix not allowed",
    -200: "Execution error",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
}
# Standard Event Status Register bits set by parser errors (scpi-parser error.c `errs`).
ESR_BITS = ((-199, -100, 0x20), (-299, -200, 0x10), (-399, -300, 0x08), (-499, -400, 0x04))
VOLT_SUFFIXES = {"UV": 1e-6, "MV": 1e-3, "V": 1.0, "KV": 1e3}  # SCPI: M is milli

_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)")
_MNEMONIC = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class _CommandFailedError(Exception):
    """The command failed; its errors are queued and it sends no reply."""


def _node_regex(node: str) -> str:
    """Return the regex of one header node: short form (its capitals) or long form, any case."""
    numbered = node.endswith("#")
    word = node.rstrip("#")
    short = re.match(r"[A-Z*]*", word).group()
    forms = {re.escape(word.upper()), re.escape(short)} - {""}
    body = "(?:" + "|".join(sorted(forms, key=len, reverse=True)) + ")"
    return body + r"(\d*)" if numbered else body


def _header_regex(pattern: str) -> re.Pattern[str]:
    """Compile a scpi-parser pattern such as ``SYSTem:ERRor[:NEXT]?`` or ``ACQ:SOUR#:DATA?``."""
    query = pattern.endswith("?")
    parts = re.split(r"(\[:[^\]]+\])", pattern.rstrip("?"))
    regex = ""
    for part in parts:
        if part.startswith("["):
            regex += "(?::" + _node_regex(part[2:-1]) + ")?"
        elif part:
            regex += ":".join(_node_regex(node) for node in part.split(":"))
    return re.compile(":?" + regex + (r"\?" if query else ""), re.IGNORECASE)


class _BoardSession(Session):
    """One client connection: its data format and its two error queues, as in the server."""

    def __init__(self, board: SimulatedRedPitaya) -> None:
        super().__init__(board)
        self.board = board
        self.binary = False  # ACQ:DATA:FORMAT is kept per connection (user_context_t)
        self.scpi_errors: deque[tuple[int, str]] = deque()
        self.device_errors: deque[tuple[int, str]] = deque()
        self.queue_flag = False
        self.esr = 0
        self.ese = 0  # *ESE, *SRE: per connection, as each client has its own scpi context
        self.sre = 0
        self.little_endian = False  # ACQ:DATA:BYTE:ORDER, per connection (user_context_t)
        self.pushed = 0  # errors queued so far, to tell whether a command queued one

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; return the replies of the complete commands."""
        with self.board.lock:  # re-entrant: the base class takes it again per command
            self.board.session = self
            return super().feed(data)

    def push_scpi_error(self, code: int, info: str = "") -> None:
        """Queue a parser error, as SCPI_ErrorPushEx (the queue's last slot becomes -350)."""
        text = SCPI_ERRORS[code] + (f";{info}" if info else "")
        if len(self.scpi_errors) >= ERROR_QUEUE_SIZE:
            self.scpi_errors[-1] = (-350, SCPI_ERRORS[-350])
        else:
            self.scpi_errors.append((code, text))
        for low, high, bit in ESR_BITS:
            if low <= code <= high:
                self.esr |= bit
        self.queue_flag = True
        self.pushed += 1

    def push_device_error(self, code: int, text: str) -> None:
        """Queue a board error, as rp_errorPush (sets the execution-error bit of the ESR)."""
        self.device_errors.append((code, text))
        self.esr |= 0x10
        self.queue_flag = True
        self.pushed += 1

    def pop_error(self) -> tuple[int, str]:
        """Return the next error, board queue first; (0, "No error") when both are empty."""
        if self.device_errors:
            return self.device_errors.popleft()
        error = self.scpi_errors.popleft() if self.scpi_errors else (0, "No error")
        if not self.scpi_errors:
            self.queue_flag = False
        return error

    def clear(self) -> None:
        """Empty both queues and the status registers (*CLS)."""
        self.scpi_errors.clear()
        self.device_errors.clear()
        self.queue_flag = False
        self.esr = 0


class _Parameters:
    """The comma-separated parameters of one command, read as the scpi-parser reads them."""

    def __init__(self, session: _BoardSession, text: str) -> None:
        self.session = session
        self.tokens = [t.strip() for t in text.split(",")] if text.strip() else []
        self.used = 0

    def _next(self, mandatory: bool) -> str | None:
        if self.used >= len(self.tokens):
            if mandatory:
                self.session.push_scpi_error(MISSING_PARAMETER)
            return None
        self.used += 1
        return self.tokens[self.used - 1]

    def integer(self, mandatory: bool = True, unsigned: bool = True) -> int | None:
        """Return an integer parameter (strtol semantics), or None after queueing the error."""
        token = self._next(mandatory)
        if token is None:
            return None
        number = _NUMBER.fullmatch(token)
        if number is None:
            self.session.push_scpi_error(-104)
            return None
        if number.group(2):
            self.session.push_scpi_error(-138)
            return None
        digits = re.match(r"[+-]?\d+", number.group(1))  # strtol stops at a point or exponent
        value = int(digits.group()) if digits else 0
        return value % 2**32 if unsigned else value

    def volts(self) -> float | None:
        """Return a voltage with an optional unit (0.1, 100 mV, 0.1 V), or None after an error."""
        token = self._next(True)
        if token is None:
            return None
        number = _NUMBER.fullmatch(token)
        if number is None:
            self.session.push_scpi_error(-104)
            return None
        scale = VOLT_SUFFIXES.get(number.group(2).upper() or "V")
        if scale is None:
            self.session.push_scpi_error(-131)
            return None
        return float(number.group(1)) * scale

    def choice(self, options: tuple[str, ...]) -> str | None:
        """Return the option the mnemonic names (any case), or None after queueing the error."""
        token = self._next(True)
        if token is None:
            return None
        if not _MNEMONIC.fullmatch(token):
            self.session.push_scpi_error(-104)
            return None
        if token.upper() not in options:
            self.session.push_scpi_error(-224)
            return None
        return token.upper()

    def boolean(self) -> bool | None:
        """Return an ON/OFF (or numeric) parameter as SCPI_ParamBool reads it, or None."""
        token = self._next(True)
        if token is None:
            return None
        if token.upper() in ("ON", "OFF"):
            return token.upper() == "ON"
        number = _NUMBER.fullmatch(token)
        if number is None or number.group(2):
            self.session.push_scpi_error(-104)
            return None
        return float(number.group(1)) != 0.0

    def characters(self) -> str | None:
        """Return the raw text of the next parameter, or None after queueing the error."""
        return self._next(True)

    @property
    def left_over(self) -> bool:
        """Return True when parameters remain that the command did not read."""
        return self.used < len(self.tokens)


Handler = Callable[["SimulatedRedPitaya", _BoardSession, _Parameters, int], bytes | None]


class SimulatedRedPitaya(SimulatedInstrument):
    """The STEMlab 125-14's SCPI server: fast inputs IN1 (V_diff) and IN2 (V_sum) of the lab."""

    input_terminator = b"\r\n"
    output_terminator = b"\r\n"
    default_port = 5000

    def __init__(
        self,
        lab: SimulatedLab,
        name: str = "redpitaya",
        jumpers: tuple[str, str] = ("LV", "LV"),
        ddr_bytes: int = DDR_REGION_BYTES,
    ) -> None:
        super().__init__(lab, name)
        for jumper in jumpers:
            if jumper not in FULL_SCALE_V:
                raise ParameterError(f"jumpers = {jumpers!r}: each one of {list(FULL_SCALE_V)}")
        #: The input-range jumpers of IN1 and IN2 (hardware, set by hand: "LV" ±1 V, "HV" ±20 V).
        self.jumpers = list(jumpers)
        self.session: _BoardSession | None = None
        #: The 16 384-sample buffer of triggered acquisitions and its trigger.
        self.capture = TriggeredCapture(lab, self.jumpers, self)
        #: The deep-memory region and its writer (``ddr_bytes`` reserved, 2 MiB by default).
        self.deep = DeepMemory(lab, self.jumpers, ddr_bytes, self)
        self.deep_mode = False  # ACQ:START started the DDR writer, not the 16 384 buffer
        self.axi_units = "VOLTS"  # axi_unit, a global of acquire_axi.cpp (not reset by ACQ:RST)
        self._reset()

    def open_session(self) -> _BoardSession:
        """Return a new connection with its own data format and error queues."""
        return _BoardSession(self)

    def _reset(self) -> None:
        """Stop and restore the acquisition defaults (ACQ:RST), keeping the buffer contents."""
        self.capture.stop()
        self.deep.reset()
        self.deep_mode = False
        self.decimation = 1
        self.averaging = True  # acq_SetDefault: acq_SetAveraging(channel, true)
        self.trigger_source = "DISABLED"
        self.trigger_delay = 0
        self.trigger_delay_ns: int | None = None  # set by ACQ:TRig:DLY:NS: kept across ACQ:DEC
        self.trigger_level_V = 0.0
        self.trigger_hysteresis_V = DEFAULT_HYSTERESIS_V
        self.gains = ["LV", "LV"]
        self.units = "VOLTS"  # a global of acquire.cpp, shared by every connection

    def _data(self, session: _BoardSession, channel: int, start: int, size: int) -> bytes:
        """Return the reply: ``size`` samples of ``channel`` from buffer position ``start``."""
        codes = self.capture.read(channel, start, size)
        return self._samples_reply(session, codes, channel, self.units)

    def _samples_reply(
        self, session: _BoardSession, codes: np.ndarray, channel: int, units: str
    ) -> bytes:
        """Format ADC codes as the server sends them: RAW or VOLTS, a binary block or ASCII."""
        order = "<" if session.little_endian else ">"
        if units == "RAW":
            values, binary, text = codes, order + "i2", "{:d}"
        else:
            scale = np.float32(FULL_SCALE_V[self.gains[channel - 1]] / CODES_PER_FULL_SCALE)
            values, binary, text = codes.astype(np.float32) * scale, order + "f4", "{:f}"
        if session.binary:
            return _binary_block(values.astype(binary, copy=False).tobytes())
        return ("{" + ",".join(text.format(v) for v in values.tolist()) + "}").encode("ascii")

    # --- deep memory (acquire_axi.cpp) ------------------------------------------------------------
    def _deep_trigger(self) -> None:
        """Hand the trigger source to the running DDR writer (NOW fires, a level arms)."""
        if not (self.capture.armed and self.deep_mode):
            return
        if self.trigger_source == "NOW":
            self.deep.trigger_now()
            self.trigger_source = "DISABLED"
        elif self.trigger_source in LEVEL_TRIGGERS:
            channel, edge = LEVEL_TRIGGERS[self.trigger_source]
            codes_per_V = CODES_PER_FULL_SCALE / FULL_SCALE_V[self.gains[channel]]
            level = round(self.trigger_level_V * codes_per_V)
            self.deep.arm_trigger(
                channel, edge, level, round(self.trigger_hysteresis_V * codes_per_V)
            )

    def _axi_fail(self, s: _BoardSession, text: str, code: int = RP_EOOR) -> _CommandFailedError:
        """Queue an API failure as RP_LOG_CRIT does (9500 + the API code)."""
        s.push_device_error(DEVICE_FATAL_BASE + code, f"*{self._header} {text}")
        return _CommandFailedError()

    def _set_axi_units(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        units = p.choice(("VOLTS", "RAW"))
        if units is None:
            raise self._fail(s, "Missing first parameter.")
        self.axi_units = units

    def _get_axi_units(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return self.axi_units.encode("ascii")

    def _set_axi_decimation(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        if not valid_axi_decimation(value):
            raise self._axi_fail(s, "Failed to set decimation: Value out of range.")
        self.deep.decimation = value

    def _get_axi_decimation(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.deep.decimation).encode("ascii")

    def _axi_start(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.deep.region_start).encode("ascii")

    def _axi_size(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.deep.region_bytes).encode("ascii")

    def _axi_set_buffer(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        channel = self._channel(s, n)
        address = p.integer()
        if address is None:
            raise self._fail(s, "Missing START parameter.")
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing SIZE parameter.")
        if not self.deep.set_buffer(channel, address, size):
            raise self._axi_fail(s, "Failed to set write addresses: Value out of range.")

    def _axi_enable(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        channel = self._channel(s, n)
        state = p.boolean()
        if state is None:
            raise self._fail(s, "Missing first parameter.")
        if state and not self.deep.buffers[channel - 1].samples:
            # After ACQ:RST the buffer is empty (acq_SetDefault sets 0 bytes); the API would
            # reserve nothing and the writer have nowhere to write. The simulation refuses it.
            raise self._axi_fail(s, "Failed to start data capture: Value out of range.")
        self.deep.buffers[channel - 1].enabled = state

    def _axi_set_delay(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        channel = self._channel(s, n)
        value = p.integer(mandatory=False, unsigned=False)
        self.deep.buffers[channel - 1].trigger_delay = value or 0

    def _axi_get_delay(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.deep.buffers[self._channel(s, n) - 1].trigger_delay).encode("ascii")

    def _axi_write_position(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.deep.write_position(self._channel(s, n))).encode("ascii")

    def _axi_trigger_position(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.deep.trigger_position(self._channel(s, n))).encode("ascii")

    def _axi_fill(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"1" if self.deep.filled(self._channel(s, n)) else b"0"

    def _axi_data(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        start = p.integer()
        if start is None:
            raise self._fail(s, "Missing START parameter.")
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing SIZE parameter.")
        if size > self.deep.region_bytes:  # new float[size] would fail on the board's 512 MB
            raise self._fail(s, "Failed allocate buffer", code=-200)
        codes = self.deep.read(channel, start, size)
        return self._samples_reply(s, codes, channel, self.axi_units)

    # --- the SCPI interpreter --------------------------------------------------------------------
    def error_reply(self, command: bytes) -> bytes:
        """Run an invalid command before the real one: the error lands where the driver looks."""
        return self.handle(self.invalid_command) + self.handle(command)

    def handle(self, command: bytes) -> bytes:
        """Execute one line (one or more ``;``-separated commands); return the reply line."""
        session = self.session
        replies = []
        previous = ""
        for unit in command.decode("ascii", errors="replace").split(";"):
            unit = unit.strip()
            if not unit:
                continue
            header, text = [*unit.split(None, 1), ""][:2]
            header = _compound(previous, header)
            found = _find(header)
            if found is None:
                session.push_scpi_error(-113, unit)
                continue
            previous = header
            handler, number = found
            reply = self._execute(session, handler, header, number, text)
            if reply is not None:
                replies.append(reply)
        return b";".join(replies) + b"\r\n" if replies else b""

    def _execute(
        self, session: _BoardSession, handler: Handler, header: str, number: int, text: str
    ) -> bytes | None:
        """Run one command as scpi-parser's processCommand does; return its reply or None."""
        pushed = session.pushed
        parameters = _Parameters(session, text)
        self._header = header
        try:
            reply = handler(self, session, parameters, number)
        except _CommandFailedError:
            if session.pushed == pushed:  # failed without saying why
                session.push_scpi_error(-200)
            return None
        if parameters.left_over and session.pushed == pushed:
            session.push_scpi_error(-108)  # after the reply was written: it still goes out
        return reply

    def _fail(
        self, session: _BoardSession, text: str, code: int = MISSING_PARAMETER
    ) -> _CommandFailedError:
        """Queue a board error as SCPI_LOG_ERR does (9000 + code); return the exception to raise."""
        session.push_device_error(DEVICE_ERROR_BASE + code, f"*{self._header} {text}")
        return _CommandFailedError()

    def _channel(self, session: _BoardSession, number: int) -> int:
        """Return the input number 1 or 2, or fail as RP_ParseChArgvADC does (9500)."""
        if number not in (1, 2):
            session.push_device_error(DEVICE_FATAL_BASE, f"*{self._header} Invalid channel number")
            raise _CommandFailedError()
        return number

    # Handlers: (session, parameters, number from the header) -> reply bytes or None.
    def _idn(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return IDENTITY.encode("ascii")

    def _cls(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        s.clear()

    def _rst(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        """*RST: the server's reset callback only logs; the acquisition keeps its settings."""

    def _stb(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        stb = (ERROR_QUEUE_BIT if s.queue_flag else 0) | (ESB_BIT if s.esr & s.ese else 0)
        return str(stb | (MSS_BIT if stb & s.sre else 0)).encode("ascii")

    def _esr(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        value, s.esr = s.esr, 0
        return str(value).encode("ascii")

    def _opc(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"1"

    def _opc_set(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        s.esr |= 0x01  # every command completes before the next: operation complete at once

    def _wai(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        """*WAI: commands run one after another, so there is nothing to wait for."""

    def _tst(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"0"  # SCPI_CoreTstQ (scpi-parser ieee488.c): the self-test passes, 0

    def _set_ese(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer()
        if value is None:
            raise _CommandFailedError()
        s.ese = value & 0xFF

    def _get_ese(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(s.ese).encode("ascii")

    def _set_sre(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer()
        if value is None:
            raise _CommandFailedError()
        s.sre = value & 0xBF  # bit 6 cannot be enabled (IEEE 488.2 §11.3.2)

    def _get_sre(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(s.sre).encode("ascii")

    def _version(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return ECOSYSTEM_VERSION.encode("ascii")

    def _board_name(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return BOARD_NAME.encode("ascii")

    def _board_id(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(BOARD_ID).encode("ascii")

    def _error_next(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        code, text = s.pop_error()
        return f'{code},"{text.replace(chr(34), chr(34) * 2)}"'.encode("ascii", errors="replace")

    def _error_count(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(len(s.scpi_errors) + len(s.device_errors)).encode("ascii")

    def _start(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        # With a deep-memory buffer enabled the AXI writer takes the ADC stream instead.
        self.deep_mode = self.deep.enabled
        if self.deep_mode:
            self.capture.stop()
            self.deep.stop()
            self.capture.armed = True
            self.deep.start()
            self._deep_trigger()
        else:
            self.capture.arm()

    def _acq_stop(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        self.capture.stop()
        self.deep.stop()

    def _acq_reset(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        self._reset()
        s.binary = False

    def _set_decimation(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        if value not in DECIMATIONS:
            raise self._fail(s, "Parameter decimation is invalid.")
        self._decimate(value)

    def _decimate(self, value: int) -> None:
        """Set the decimation; a delay set in ns keeps its time (acq_SetDecimationFactor)."""
        self.decimation = value
        if self.trigger_delay_ns is not None:
            self._delay_from_ns(self.trigger_delay_ns)

    def _set_decimation_factor(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        if not valid_axi_decimation(value):  # the same rule: 1, 2, 4, 8 or 16…65536
            s.push_device_error(
                DEVICE_FATAL_BASE + RP_EOOR,
                f"*{self._header} Failed to set decimation factor: Value out of range.",
            )
            raise _CommandFailedError()
        self._decimate(value)

    def _sample_rate(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        # RP_AcqSamplingRateHzQ: sprintf("%9.0f Hz") of the float rate, sent as a mnemonic.
        return f"{float(np.float32(ADC_CLOCK_Hz / self.decimation)):9.0f} Hz".encode("ascii")

    def _set_averaging(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.boolean()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        self.averaging = value

    def _get_averaging(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"ON" if self.averaging else b"OFF"

    def _get_decimation(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.decimation).encode("ascii")

    def _set_trigger(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        source = p.choice(TRIGGER_SOURCES)
        if source is None:
            raise self._fail(s, "Missing first parameter.")
        self.trigger_source = source
        if self.deep_mode:
            self._deep_trigger()
            return
        # The software trigger acts when written, and only on an armed acquisition (the command
        # list orders ACQ:START before ACQ:TRig NOW); set earlier, it is lost [unverified].
        if source == "NOW" and self.capture.armed and not self.capture.triggered:
            self.capture.trigger_now()
        self.capture.start_watch()

    def _trigger_status(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        # TD when triggered or when the source is DISABLED (commands-acq, ACQ:TRig:STAT?).
        self.capture.watch()
        if self.deep_mode and self.deep.triggered:
            self.trigger_source = "DISABLED"  # the FPGA clears the source once it has triggered
        return b"WAIT" if self.capture.armed and self.trigger_source != "DISABLED" else b"TD"

    def _fill_status(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        self.capture.commit()
        return b"1" if self.capture.filled else b"0"

    def _set_delay(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer(mandatory=False, unsigned=False)
        # acq_SetTriggerDelay: below −8192 the FPGA delay is 0 (the trigger ends the buffer).
        self.trigger_delay = max(value or 0, -BUFFER_SIZE // 2)
        self.trigger_delay_ns = None

    def _get_delay(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.trigger_delay).encode("ascii")

    def _delay_from_ns(self, delay_ns: int) -> None:
        """Set the delay in samples from ns, as cnvTimeToSmpls: round(ns / (8 ns × dec))."""
        samples = round(delay_ns / (ADC_SAMPLE_PERIOD_NS * self.decimation))
        self.trigger_delay = max(samples, -BUFFER_SIZE // 2)

    def _set_delay_ns(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer(mandatory=False, unsigned=False)
        self.trigger_delay_ns = value or 0
        self._delay_from_ns(self.trigger_delay_ns)

    def _get_delay_ns(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        # cnvSmplsToTime: samples × 8 ns × decimation, sent with SCPI_ResultInt32.
        return str(self.trigger_delay * ADC_SAMPLE_PERIOD_NS * self.decimation).encode("ascii")

    def _set_level(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.volts()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        # The API stores the level as an ADC code of IN1's range and reads it back from that.
        full_scale = FULL_SCALE_V[self.gains[0]]
        code = round(min(max(value / full_scale, -1.0), 1.0) * CODES_PER_FULL_SCALE)
        code = min(code, CODES_PER_FULL_SCALE - 1)
        self.trigger_level_V = float(np.float32(code * full_scale / CODES_PER_FULL_SCALE))

    def _get_level(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return f"{self.trigger_level_V:g}".encode("ascii")

    def _set_hysteresis(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.volts()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        self.trigger_hysteresis_V = abs(value)

    def _get_hysteresis(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return f"{self.trigger_hysteresis_V:g}".encode("ascii")

    def _write_pointer(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        self.capture.commit()
        return str(self.capture.write_position).encode("ascii")

    def _trigger_pointer(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.capture.trigger_position).encode("ascii")

    def _set_gain(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        channel = self._channel(s, n)
        gain = p.choice(tuple(FULL_SCALE_V))
        if gain is None:
            raise self._fail(s, "Missing first parameter.")
        self.gains[channel - 1] = gain

    def _get_gain(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return self.gains[self._channel(s, n) - 1].encode("ascii")

    def _set_units(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        units = p.choice(("VOLTS", "RAW"))
        if units is None:
            raise self._fail(s, "Missing first parameter.")
        self.units = units

    def _get_units(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return self.units.encode("ascii")

    def _set_format(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.characters()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        # The server compares with strncasecmp over the parameter's length: "B" means BIN.
        if "BIN".startswith(value.upper()):
            s.binary = True
        elif "ASCII".startswith(value.upper()):
            s.binary = False
        else:
            raise _CommandFailedError()  # logged at info level only: the parser queues -200

    def _get_format(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"BIN" if s.binary else b"ASCII"

    def _set_byte_order(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.characters()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        # RP_AcqDataEndian: strncasecmp over the parameter's length, as ACQ:DATA:FORMAT.
        if "LEND".startswith(value.upper()):
            s.little_endian = True
        elif "BEND".startswith(value.upper()):
            s.little_endian = False
        else:
            raise _CommandFailedError()  # logged at info level only: the parser queues -200

    def _get_byte_order(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"LEND" if s.little_endian else b"BEND"

    def _buffer_size(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(BUFFER_SIZE).encode("ascii")

    def _data_all(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        self.capture.commit()
        return self._data(s, channel, self.capture.write_position + 1, BUFFER_SIZE)

    def _data_oldest(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing SIZE parameter.")
        self.capture.commit()
        return self._data(s, channel, self.capture.write_position + 1, size)

    def _data_latest(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing first parameter.")
        self.capture.commit()
        size = min(size, BUFFER_SIZE)
        return self._data(s, channel, self.capture.write_position + 1 - size, size)

    def _data_start_n(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        start = p.integer()
        if start is None:
            raise self._fail(s, "Missing START parameter.")
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing SIZE parameter.")
        self.capture.commit()
        return self._data(s, channel, start, size)

    def _data_start_end(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        start = p.integer()
        if start is None:
            raise self._fail(s, "Unable to read START parameter.")
        end = p.integer()
        if end is None:
            raise self._fail(s, "Unable to read END parameter.")
        self.capture.commit()
        return self._data(s, channel, start, (end + BUFFER_SIZE - start) % BUFFER_SIZE + 1)


def _binary_block(payload: bytes) -> bytes:
    """Frame a payload as the server's writeBinHeader does: '#', digit count, byte count, data.

    Written here from the server's code rather than taken from instruments/ieee_block, so that
    the driver's block reader is tested against an independent writer (and the simulators do
    not import the driver layer).
    """
    count = str(len(payload))
    return f"#{len(count)}{count}".encode("ascii") + payload


def _compound(previous: str, header: str) -> str:
    """Prefix a relative header with the path of the previous one (IEEE 488.2 compound rule)."""
    if not previous or header.startswith((":", "*")) or previous.startswith("*"):
        return header
    path = previous.rpartition(":")[0]
    return f"{path}:{header}" if path else header


@functools.lru_cache(maxsize=256)
def _find(header: str) -> tuple[Handler, int] | None:
    """Return the handler whose pattern matches ``header`` and the header's number."""
    for regex, handler in _COMMANDS:
        match = regex.fullmatch(header)
        if match:
            number = next((g for g in match.groups() if g is not None), "")
            return handler, int(number) if number else 1
    return None


_COMMANDS: tuple[tuple[re.Pattern[str], Handler], ...] = tuple(
    (_header_regex(pattern), handler)
    for pattern, handler in (
        ("*IDN?", SimulatedRedPitaya._idn),
        ("*CLS", SimulatedRedPitaya._cls),
        ("*RST", SimulatedRedPitaya._rst),
        ("*STB?", SimulatedRedPitaya._stb),
        ("*ESR?", SimulatedRedPitaya._esr),
        ("*OPC?", SimulatedRedPitaya._opc),
        ("*OPC", SimulatedRedPitaya._opc_set),
        ("*ESE", SimulatedRedPitaya._set_ese),
        ("*ESE?", SimulatedRedPitaya._get_ese),
        ("*SRE", SimulatedRedPitaya._set_sre),
        ("*SRE?", SimulatedRedPitaya._get_sre),
        ("*TST?", SimulatedRedPitaya._tst),
        ("*WAI", SimulatedRedPitaya._wai),
        ("SYSTem:VERSion?", SimulatedRedPitaya._version),
        ("SYSTem:BRD:ID?", SimulatedRedPitaya._board_id),
        ("SYSTem:BRD:Name?", SimulatedRedPitaya._board_name),
        ("SYSTem:ERRor[:NEXT]?", SimulatedRedPitaya._error_next),
        ("SYSTem:ERRor:COUNt?", SimulatedRedPitaya._error_count),
        ("ACQ:START", SimulatedRedPitaya._start),
        ("ACQ:STOP", SimulatedRedPitaya._acq_stop),
        ("ACQ:RST", SimulatedRedPitaya._acq_reset),
        ("ACQ:DEC", SimulatedRedPitaya._set_decimation),
        ("ACQ:DEC?", SimulatedRedPitaya._get_decimation),
        ("ACQ:DEC:Factor", SimulatedRedPitaya._set_decimation_factor),
        ("ACQ:DEC:Factor?", SimulatedRedPitaya._get_decimation),
        ("ACQ:SRATe?", SimulatedRedPitaya._sample_rate),
        ("ACQ:AVG", SimulatedRedPitaya._set_averaging),
        ("ACQ:AVG?", SimulatedRedPitaya._get_averaging),
        ("ACQ:TRig", SimulatedRedPitaya._set_trigger),
        ("ACQ:TRig:STAT?", SimulatedRedPitaya._trigger_status),
        ("ACQ:TRig:FILL?", SimulatedRedPitaya._fill_status),
        ("ACQ:TRig:DLY", SimulatedRedPitaya._set_delay),
        ("ACQ:TRig:DLY?", SimulatedRedPitaya._get_delay),
        ("ACQ:TRig:DLY:NS", SimulatedRedPitaya._set_delay_ns),
        ("ACQ:TRig:DLY:NS?", SimulatedRedPitaya._get_delay_ns),
        ("ACQ:TRig:LEV", SimulatedRedPitaya._set_level),
        ("ACQ:TRig:LEV?", SimulatedRedPitaya._get_level),
        ("ACQ:TRig:HYST", SimulatedRedPitaya._set_hysteresis),
        ("ACQ:TRig:HYST?", SimulatedRedPitaya._get_hysteresis),
        ("ACQ:WPOS?", SimulatedRedPitaya._write_pointer),
        ("ACQ:TPOS?", SimulatedRedPitaya._trigger_pointer),
        ("ACQ:SOUR#:GAIN", SimulatedRedPitaya._set_gain),
        ("ACQ:SOUR#:GAIN?", SimulatedRedPitaya._get_gain),
        ("ACQ:DATA:Units", SimulatedRedPitaya._set_units),
        ("ACQ:DATA:Units?", SimulatedRedPitaya._get_units),
        ("ACQ:DATA:FORMAT", SimulatedRedPitaya._set_format),
        ("ACQ:DATA:FORMAT?", SimulatedRedPitaya._get_format),
        ("ACQ:DATA:BYTE:ORDER", SimulatedRedPitaya._set_byte_order),
        ("ACQ:DATA:BYTE:ORDER?", SimulatedRedPitaya._get_byte_order),
        ("ACQ:BUF:SIZE?", SimulatedRedPitaya._buffer_size),
        ("ACQ:SOUR#:DATA:STArt:End?", SimulatedRedPitaya._data_start_end),
        ("ACQ:SOUR#:DATA:Start:End?", SimulatedRedPitaya._data_start_end),
        ("ACQ:SOUR#:DATA:STArt:N?", SimulatedRedPitaya._data_start_n),
        ("ACQ:SOUR#:DATA:Start:N?", SimulatedRedPitaya._data_start_n),
        ("ACQ:SOUR#:DATA:Old:N?", SimulatedRedPitaya._data_oldest),
        ("ACQ:SOUR#:DATA?", SimulatedRedPitaya._data_all),
        ("ACQ:SOUR#:DATA:LATest:N?", SimulatedRedPitaya._data_latest),
        # Deep memory: scpi-commands.cpp registers these, handled in acquire_axi.cpp.
        ("ACQ:AXI:DATA:Units", SimulatedRedPitaya._set_axi_units),
        ("ACQ:AXI:DATA:Units?", SimulatedRedPitaya._get_axi_units),
        ("ACQ:AXI:DEC", SimulatedRedPitaya._set_axi_decimation),
        ("ACQ:AXI:DEC?", SimulatedRedPitaya._get_axi_decimation),
        ("ACQ:AXI:START?", SimulatedRedPitaya._axi_start),
        ("ACQ:AXI:SIZE?", SimulatedRedPitaya._axi_size),
        ("ACQ:AXI:SOUR#:Trig:Fill?", SimulatedRedPitaya._axi_fill),
        ("ACQ:AXI:SOUR#:Trig:Dly", SimulatedRedPitaya._axi_set_delay),
        ("ACQ:AXI:SOUR#:Trig:Dly?", SimulatedRedPitaya._axi_get_delay),
        ("ACQ:AXI:SOUR#:Write:Pos?", SimulatedRedPitaya._axi_write_position),
        ("ACQ:AXI:SOUR#:Trig:Pos?", SimulatedRedPitaya._axi_trigger_position),
        ("ACQ:AXI:SOUR#:ENable", SimulatedRedPitaya._axi_enable),
        ("ACQ:AXI:SOUR#:DATA:Start:N?", SimulatedRedPitaya._axi_data),
        ("ACQ:AXI:SOUR#:DATA:STArt:N?", SimulatedRedPitaya._axi_data),
        ("ACQ:AXI:SOUR#:SET:Buffer", SimulatedRedPitaya._axi_set_buffer),
    )
)
