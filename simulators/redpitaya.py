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
  gains 1 and 20). Binary replies are IEEE 488.2 blocks of big-endian int16 or float32, ASCII
  replies ``{v1,v2,…}``.
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

Not simulated: the generator, averaging (``ACQ:AVG``: the real board averages the skipped
samples by default; here a sample is the atoms' signal at its instant plus the white noise of
the sampled band), split-trigger and deep-memory commands are absent and answer ``-113``, as
unknown commands do.
"""

from __future__ import annotations

import functools
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.simulators.instrument_base import Session, SimulatedInstrument
from hotspin.simulators.lab import SimulatedLab

ADC_CLOCK_Hz = 125e6
BUFFER_SIZE = 16384
CODES_PER_FULL_SCALE = 8192  # 14-bit signed codes span ±2¹³ over ± full scale
FULL_SCALE_V = {"LV": 1.0, "HV": 20.0}
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
# The level triggers: (input index, +1 for the positive edge, −1 for the negative one).
LEVEL_TRIGGERS = {"CH1_PE": (0, 1), "CH1_NE": (0, -1), "CH2_PE": (1, 1), "CH2_NE": (1, -1)}
MAX_WATCHED_SAMPLES = 4 * 16384  # looked at per question; an older stretch is skipped
DEFAULT_HYSTERESIS_V = 0.005  # acq_SetDefault of the rp library (acq_handler.c, OS 2.x)
IDENTITY = "REDPITAYA,INSTR,SIMULATED,hotspin"
ERROR_QUEUE_SIZE = 16  # SCPI_ERROR_QUEUE_SIZE in scpi-server/src/main.cpp
ERROR_QUEUE_BIT = 0x04  # STB_QMA: "error/event queue message available"
DEVICE_ERROR_BASE = 9000  # rp_Log: RP_ERR_CODE for errors, RP_ERR_CODE_FATAL for critical ones
DEVICE_FATAL_BASE = 9500
MISSING_PARAMETER = -109

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


@dataclass
class _Capture:
    """One triggered acquisition: the samples the FPGA writes into the circular buffer."""

    armed_s: float  # samples before ACQ:START are never written
    start_s: float  # time of the first sample of the data buffer
    sample_rate_Hz: float
    codes: np.ndarray  # (2, BUFFER_SIZE) int16, oldest first
    first_position: int  # buffer position of the first sample
    stopped_s: float = math.inf  # ACQ:STOP ends the writing

    def written(self, now_s: float) -> tuple[int, int]:
        """Return the [first, end) sample indices written by ``now_s``."""
        fs = self.sample_rate_Hz
        # A part-per-million of a sample absorbs rounding in clocks that step by exact durations.
        first = math.ceil((self.armed_s - self.start_s) * fs - 1e-6)
        end = math.floor((min(now_s, self.stopped_s) - self.start_s) * fs + 1e-6) + 1
        return min(max(first, 0), BUFFER_SIZE), min(max(end, 0), BUFFER_SIZE)


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
        self, lab: SimulatedLab, name: str = "redpitaya", jumpers: tuple[str, str] = ("LV", "LV")
    ) -> None:
        super().__init__(lab, name)
        for jumper in jumpers:
            if jumper not in FULL_SCALE_V:
                raise ParameterError(f"jumpers = {jumpers!r}: each one of {list(FULL_SCALE_V)}")
        #: The input-range jumpers of IN1 and IN2 (hardware, set by hand: "LV" ±1 V, "HV" ±20 V).
        self.jumpers = list(jumpers)
        self.session: _BoardSession | None = None
        self.memory = np.zeros((2, BUFFER_SIZE), dtype=np.int16)  # the circular buffer, codes
        self.write_position = BUFFER_SIZE - 1  # latest written sample (ACQ:WPOS?)
        self.trigger_position = 0  # sample at the trigger (ACQ:TPOS?)
        self.armed_s = self.lab.clock.now()
        self.triggered = False
        self.filled = False
        self._capture: _Capture | None = None
        # A level trigger's watch: the signal is examined up to this time; the codes just
        # before it (for the pre-trigger part) and the last sample of the trigger input.
        self._watched_s: float | None = None
        self._recent = np.zeros((2, 0), dtype=np.int16)
        self._edge_ready = False  # the input has been beyond the level by the hysteresis
        self._reset()

    def open_session(self) -> _BoardSession:
        """Return a new connection with its own data format and error queues."""
        return _BoardSession(self)

    def _reset(self) -> None:
        """Stop and restore the acquisition defaults (ACQ:RST), keeping the buffer contents."""
        self._stop()
        self.decimation = 1
        self.trigger_source = "DISABLED"
        self.trigger_delay = 0
        self.trigger_level_V = 0.0
        self.trigger_hysteresis_V = DEFAULT_HYSTERESIS_V
        self.gains = ["LV", "LV"]
        self.units = "VOLTS"  # a global of acquire.cpp, shared by every connection

    # --- the acquisition -------------------------------------------------------------------------
    def _stop(self) -> None:
        """Stop writing samples (ACQ:STOP): an unfinished capture keeps what it wrote."""
        self.armed = False
        if self._capture is not None:
            self._capture.stopped_s = min(self._capture.stopped_s, self.lab.clock.now())

    def _arm(self) -> None:
        """Start writing samples and wait for the trigger (ACQ:START)."""
        self._watched_s = None  # a level trigger still waiting is replaced, not looked for
        self._commit()
        self._capture = None
        self.armed = True
        self.armed_s = self.lab.clock.now()
        self.triggered = False
        self.filled = False
        self._start_watch()

    def _samples_after_trigger(self) -> int:
        """Return how many samples of the data buffer are written from the trigger on."""
        return max(0, self.trigger_delay + BUFFER_SIZE // 2)

    def _codes(self, n: int, fs: float, start_s: float) -> tuple[float, np.ndarray]:
        """Digitise ``n`` samples of both inputs from ``start_s``; return the true start, codes."""
        record = self.lab.record(n, fs, start_s)
        inputs = (record.v_diff, record.v_sum)
        codes = np.stack([_adc_codes(v, j) for v, j in zip(inputs, self.jumpers, strict=True)])
        return record.start_s, codes

    def _trigger_now(self) -> None:
        """Fire the trigger: record the polarimeter for the whole data buffer around it."""
        fs = ADC_CLOCK_Hz / self.decimation
        before = BUFFER_SIZE - self._samples_after_trigger()
        start_s, codes = self._codes(BUFFER_SIZE, fs, self.lab.clock.now() - before / fs)
        self._fire(start_s, codes, self.armed_s)

    def _fire(self, start_s: float, codes: np.ndarray, written_from_s: float) -> None:
        """Trigger on the data buffer ``codes`` that starts at ``start_s`` (samples before
        ``written_from_s`` are never written)."""
        fs = ADC_CLOCK_Hz / self.decimation
        position = round(start_s * fs) % BUFFER_SIZE  # the ADC writes continuously
        self._capture = _Capture(written_from_s, start_s, fs, codes, position)
        after = self._samples_after_trigger()
        self.trigger_position = (position + BUFFER_SIZE - after) % BUFFER_SIZE
        self.triggered = True
        self.trigger_source = "DISABLED"  # the FPGA clears the source once it has triggered
        self._watched_s = None

    def _start_watch(self) -> None:
        """Begin watching the trigger input, if armed with a level trigger."""
        if self.armed and not self.triggered and self.trigger_source in LEVEL_TRIGGERS:
            self._watched_s = self.lab.clock.now()
            self._recent = np.zeros((2, 0), dtype=np.int16)
            self._edge_ready = False

    def _watch(self) -> None:
        """Look for the level trigger's edge in the signal acquired since the last look."""
        watching = self.armed and not self.triggered and self.trigger_source in LEVEL_TRIGGERS
        if self._watched_s is None or not watching:
            return
        fs = ADC_CLOCK_Hz / self.decimation
        n = math.floor((self.lab.clock.now() - self._watched_s) * fs + 1e-6)
        if n <= 0:
            return
        if n > MAX_WATCHED_SAMPLES:  # skip the older stretch: nothing of it is kept
            self._watched_s += (n - MAX_WATCHED_SAMPLES) / fs
            self._recent = np.zeros((2, 0), dtype=np.int16)
            self._edge_ready = False
            n = MAX_WATCHED_SAMPLES
        start_s, codes = self._codes(n, fs, self._watched_s)
        channel, edge = LEVEL_TRIGGERS[self.trigger_source]
        codes_per_V = CODES_PER_FULL_SCALE / FULL_SCALE_V[self.gains[channel]]
        level = round(self.trigger_level_V * codes_per_V)
        hysteresis = round(self.trigger_hysteresis_V * codes_per_V)
        # A Schmitt trigger: the input must first be beyond the level by the hysteresis on the
        # far side, then reach the level. Sign-flipped for the negative edge, both edges read
        # "from below level − hysteresis to at or above level".
        signal = edge * codes[channel].astype(np.int32)
        below = np.flatnonzero(signal < edge * level - hysteresis)
        ready = 0 if self._edge_ready else (int(below[0]) + 1 if below.size else n)
        reached = np.flatnonzero(signal[ready:] >= edge * level)
        if reached.size == 0:
            self._edge_ready = ready < n or self._edge_ready
            self._recent = np.concatenate((self._recent, codes), axis=1)[:, -BUFFER_SIZE:]
            self._watched_s = start_s + n / fs
            return
        trigger = ready + int(reached[0])
        after = self._samples_after_trigger()
        history = np.concatenate((self._recent, codes[:, :trigger]), axis=1)
        history = history[:, history.shape[1] - min(history.shape[1], BUFFER_SIZE - after) :]
        following = codes[:, trigger:]
        if following.shape[1] < after:  # the rest of the buffer is still to come
            _, more = self._codes(after - following.shape[1], fs, start_s + n / fs)
            following = np.concatenate((following, more), axis=1)
        missing = BUFFER_SIZE - after - history.shape[1]  # skipped: never written
        buffer = np.concatenate(
            (np.zeros((2, missing), dtype=np.int16), history, following[:, :after]), axis=1
        )
        trigger_s = start_s + trigger / fs
        written_from = max(self.armed_s, trigger_s - history.shape[1] / fs)
        self._fire(trigger_s - (BUFFER_SIZE - after) / fs, buffer, written_from)

    def _commit(self) -> None:
        """Write the samples the capture has acquired by now into the buffer."""
        self._watch()
        capture = self._capture
        if capture is None:
            return
        first, end = capture.written(self.lab.clock.now())
        if end > first:
            positions = (capture.first_position + np.arange(first, end)) % BUFFER_SIZE
            self.memory[:, positions] = capture.codes[:, first:end]
            self.write_position = int(positions[-1])
        if end == BUFFER_SIZE:
            self.filled = True
        if end == BUFFER_SIZE or capture.stopped_s < math.inf:
            self._capture = None  # nothing more will be written

    def _data(self, session: _BoardSession, channel: int, start: int, size: int) -> bytes:
        """Return the reply: ``size`` samples of ``channel`` from buffer position ``start``."""
        codes = _circular(self.memory[channel - 1], start % BUFFER_SIZE, min(size, BUFFER_SIZE))
        if self.units == "RAW":
            values, binary, text = codes, ">i2", "{:d}"
        else:
            scale = np.float32(FULL_SCALE_V[self.gains[channel - 1]] / CODES_PER_FULL_SCALE)
            values, binary, text = codes.astype(np.float32) * scale, ">f4", "{:f}"
        if session.binary:
            return _binary_block(values.astype(binary).tobytes())
        return ("{" + ",".join(text.format(v) for v in values.tolist()) + "}").encode("ascii")

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
        return str(ERROR_QUEUE_BIT if s.queue_flag else 0).encode("ascii")

    def _esr(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        value, s.esr = s.esr, 0
        return str(value).encode("ascii")

    def _opc(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return b"1"

    def _error_next(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        code, text = s.pop_error()
        return f'{code},"{text.replace(chr(34), chr(34) * 2)}"'.encode("ascii", errors="replace")

    def _error_count(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(len(s.scpi_errors) + len(s.device_errors)).encode("ascii")

    def _start(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        self._arm()

    def _acq_stop(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        self._stop()

    def _acq_reset(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        self._reset()
        s.binary = False

    def _set_decimation(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer()
        if value is None:
            raise self._fail(s, "Missing first parameter.")
        if value not in DECIMATIONS:
            raise self._fail(s, "Parameter decimation is invalid.")
        self.decimation = value

    def _get_decimation(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.decimation).encode("ascii")

    def _set_trigger(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        source = p.choice(TRIGGER_SOURCES)
        if source is None:
            raise self._fail(s, "Missing first parameter.")
        self.trigger_source = source
        # The software trigger acts when written, and only on an armed acquisition (the command
        # list orders ACQ:START before ACQ:TRig NOW); set earlier, it is lost [unverified].
        if source == "NOW" and self.armed and not self.triggered:
            self._trigger_now()
        self._start_watch()

    def _trigger_status(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        # TD when triggered or when the source is DISABLED (commands-acq, ACQ:TRig:STAT?).
        self._watch()
        return b"WAIT" if self.armed and self.trigger_source != "DISABLED" else b"TD"

    def _fill_status(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        self._commit()
        return b"1" if self.filled else b"0"

    def _set_delay(self, s: _BoardSession, p: _Parameters, n: int) -> None:
        value = p.integer(mandatory=False, unsigned=False)
        # acq_SetTriggerDelay: below −8192 the FPGA delay is 0 (the trigger ends the buffer).
        self.trigger_delay = max(value or 0, -BUFFER_SIZE // 2)

    def _get_delay(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.trigger_delay).encode("ascii")

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
        self._commit()
        return str(self.write_position).encode("ascii")

    def _trigger_pointer(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(self.trigger_position).encode("ascii")

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

    def _buffer_size(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        return str(BUFFER_SIZE).encode("ascii")

    def _data_all(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        self._commit()
        return self._data(s, channel, self.write_position + 1, BUFFER_SIZE)

    def _data_oldest(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing SIZE parameter.")
        self._commit()
        return self._data(s, channel, self.write_position + 1, size)

    def _data_latest(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing first parameter.")
        self._commit()
        size = min(size, BUFFER_SIZE)
        return self._data(s, channel, self.write_position + 1 - size, size)

    def _data_start_n(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        start = p.integer()
        if start is None:
            raise self._fail(s, "Missing START parameter.")
        size = p.integer()
        if size is None:
            raise self._fail(s, "Missing SIZE parameter.")
        self._commit()
        return self._data(s, channel, start, size)

    def _data_start_end(self, s: _BoardSession, p: _Parameters, n: int) -> bytes:
        channel = self._channel(s, n)
        start = p.integer()
        if start is None:
            raise self._fail(s, "Unable to read START parameter.")
        end = p.integer()
        if end is None:
            raise self._fail(s, "Unable to read END parameter.")
        self._commit()
        return self._data(s, channel, start, (end + BUFFER_SIZE - start) % BUFFER_SIZE + 1)


def _binary_block(payload: bytes) -> bytes:
    """Frame a payload as the server's writeBinHeader does: '#', digit count, byte count, data.

    Written here from the server's code rather than taken from instruments/ieee_block, so that
    the driver's block reader is tested against an independent writer (and the simulators do
    not import the driver layer).
    """
    count = str(len(payload))
    return f"#{len(count)}{count}".encode("ascii") + payload


def _circular(buffer: np.ndarray, start: int, size: int) -> np.ndarray:
    """Return ``size`` elements of a circular buffer from ``start``, wrapping at its end."""
    end = start + size
    if end <= buffer.size:
        return buffer[start:end]
    return np.concatenate((buffer[start:], buffer[: end - buffer.size]))


def _adc_codes(volts: np.ndarray, jumper: str) -> np.ndarray:
    """Quantise input voltages to 14-bit codes of the jumper's range, clipping at its ends."""
    codes = np.rint(volts * (CODES_PER_FULL_SCALE / FULL_SCALE_V[jumper]))
    np.clip(codes, -CODES_PER_FULL_SCALE, CODES_PER_FULL_SCALE - 1, out=codes)
    return codes.astype(np.int16)


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
        ("SYSTem:ERRor[:NEXT]?", SimulatedRedPitaya._error_next),
        ("SYSTem:ERRor:COUNt?", SimulatedRedPitaya._error_count),
        ("ACQ:START", SimulatedRedPitaya._start),
        ("ACQ:STOP", SimulatedRedPitaya._acq_stop),
        ("ACQ:RST", SimulatedRedPitaya._acq_reset),
        ("ACQ:DEC", SimulatedRedPitaya._set_decimation),
        ("ACQ:DEC?", SimulatedRedPitaya._get_decimation),
        ("ACQ:TRig", SimulatedRedPitaya._set_trigger),
        ("ACQ:TRig:STAT?", SimulatedRedPitaya._trigger_status),
        ("ACQ:TRig:FILL?", SimulatedRedPitaya._fill_status),
        ("ACQ:TRig:DLY", SimulatedRedPitaya._set_delay),
        ("ACQ:TRig:DLY?", SimulatedRedPitaya._get_delay),
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
        ("ACQ:BUF:SIZE?", SimulatedRedPitaya._buffer_size),
        ("ACQ:SOUR#:DATA:STArt:End?", SimulatedRedPitaya._data_start_end),
        ("ACQ:SOUR#:DATA:Start:End?", SimulatedRedPitaya._data_start_end),
        ("ACQ:SOUR#:DATA:STArt:N?", SimulatedRedPitaya._data_start_n),
        ("ACQ:SOUR#:DATA:Start:N?", SimulatedRedPitaya._data_start_n),
        ("ACQ:SOUR#:DATA:Old:N?", SimulatedRedPitaya._data_oldest),
        ("ACQ:SOUR#:DATA?", SimulatedRedPitaya._data_all),
        ("ACQ:SOUR#:DATA:LATest:N?", SimulatedRedPitaya._data_latest),
    )
)
