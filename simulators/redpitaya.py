"""Simulated Red Pitaya STEMlab 125-14: its SCPI server (TCP 5000) digitising the polarimeter.

IN1 sees the balanced detector's difference (RF) output, IN2 its sum monitor: both come from
`SimulatedLab.record`, sampled at 125 MHz / decimation, when the acquisition triggers. The board
holds one 16 384-sample circular buffer per input; the samples are written as simulated time
passes (`lab.clock`), so ``ACQ:TRig:FILL?`` turns 1 only once the post-trigger part has been
acquired, and every data query until the next trigger reads the same buffer.

What follows the real server (RedPitaya/RedPitaya ``scpi-server/src``, its scpi-parser, and the
command list at redpitaya.readthedocs.io ``commands-acq``):

The SCPI session is the shared layer (`hotspin.simulators.scpi`), set as the server's
scpi-parser (j123b567/scpi-parser ``libscpi/src``) behaves; this module is the command table, its
handlers, and the capture model apart (`redpitaya_capture`).

- Commands end in CR LF (``main.cpp`` cuts the stream at ``"\\r\\n"``); replies end in CR LF.
  Several commands may share a line, separated by ``;`` (IEEE 488.2 compound headers); query
  replies on one line are joined by ``;``. A relative header after a common command starts from
  the root (``composeCompoundCommand``). A command longer than the parser's 512 KiB input buffer
  (``SCPI_INPUT_BUFFER_LENGTH`` in ``scpi-commands.cpp``) is refused with -363 (``SCPI_Input``).
- Headers match in short or long form in any case: ``ACQ:TRig`` accepts ``ACQ:TR`` and
  ``acq:trig``; ``SOUR#`` takes the input number (default 1).
- Every connection has its own scpi context (``main.cpp``: one per client): status registers,
  ``*ESE``/``*SRE``, data format and byte order, and two error queues, read by
  ``SYST:ERR:NEXT?`` board queue first (``SCPI_SystemErrorNextQEx``): the parser's 16 entries
  (``-113,"Undefined header;ACQ:FOO"``, ``-224,"Illegal parameter value"``, …; a full queue's
  newest entry becomes -350) and the board's unbounded list (``error.cpp``), whose codes are
  9000 + the parser code (``8891`` = 9000 − 109, "Missing parameter", also used for an invalid
  decimation) or 9500 + the API code (``9500``: invalid channel), with messages
  ``*<header> <text>``. ``*STB?`` bit 2 (value 4) flags them from the first error on until a
  ``SYST:ERR?`` empties the parser's queue (``STB_QMA``: the board's list does not clear it).
- A query that fails sends nothing; after ``RP:RET_ON_ERROR ON`` (a global of ``common.cpp``,
  off at start) one that fails on its channel or in the API sends an empty line instead
  (``requestSendNewLine``), while a missing parameter still sends nothing. A parameter the
  command does not read queues -108 after the command ran, its reply sent (``processCommand``).
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

import re
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.redpitaya_capture import (
    BUFFER_SIZE,
    CODES_PER_FULL_SCALE,
    DDR_REGION_BYTES,
    FULL_SCALE_V,
    LEVEL_TRIGGERS,
    AxiBuffer,
    DeepMemory,
    TriggeredCapture,
    valid_axi_decimation,
)
from hotspin.simulators.scpi import (
    ESR_EXECUTION_ERROR,
    EXECUTION_ERROR,
    MISSING_PARAMETER,
    PARAMETER_NOT_ALLOWED,
    ScpiError,
    ScpiInstrument,
    ScpiSession,
    format_error,
    split_arguments,
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
UNITS = ("VOLTS", "RAW")
DEFAULT_HYSTERESIS_V = 0.005  # acq_SetDefault: rp-api/api/src/acq_handler.cpp (ch_hyst)
IDENTITY = "REDPITAYA,INSTR,SIMULATED,hotspin"
# rp_GetVersion (the OS's ecosystem version): a deep-memory-capable 2.x OS, simulated.
ECOSYSTEM_VERSION = "2.00-18-simulated"
# rp_hw-profiles stem_125_14_v1.1.cpp: boardName and the rp_HPeModels_t value STEM_125_14_v1_1.
BOARD_NAME = "STEMlab 125-14 v1.1"
BOARD_ID = 2
ADC_SAMPLE_PERIOD_NS = 8  # acq_GetADCSamplePeriod: 1 / 125 MHz
ERROR_QUEUE_SIZE = 16  # SCPI_ERROR_QUEUE_SIZE in scpi-server/src/main.cpp
# SCPI_INPUT_BUFFER_LENGTH (scpi-commands.cpp); SCPI_Input refuses a command of length > the
# buffer − 1, terminator included: the longest command without its CR LF is 3 bytes shorter.
INPUT_BUFFER_BYTES = 512 * 1024 - 3
DEVICE_ERROR_BASE = 9000  # rp_Log: RP_ERR_CODE for errors, RP_ERR_CODE_FATAL for critical ones
DEVICE_FATAL_BASE = 9500
RP_EOOR = 6  # rp.h: "Value out of range."
MISSING_FIRST = "Missing first parameter."  # the handlers' SCPI_LOG_ERR text, most of them

# Parameter errors of scpi-parser (error.h) the board's parameters produce.
DATA_TYPE_ERROR = (-104, "Data type error")
INVALID_SUFFIX = (-131, "Invalid suffix")
SUFFIX_NOT_ALLOWED = (-138, "Suffix not allowed")
ILLEGAL_PARAMETER_VALUE = (-224, "Illegal parameter value")
VOLT_SUFFIXES = {"UV": 1e-6, "MV": 1e-3, "V": 1.0, "KV": 1e3}  # SCPI: M is milli

_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)")
_MNEMONIC = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

T = TypeVar("T")
Parse = Callable[[str], T]


# --- parameters, read as scpi-parser reads them (parser.c SCPI_Param*) ---------------------------
def _number(token: str) -> re.Match[str]:
    """Return the number and suffix of a decimal numeric parameter, or fail -104."""
    number = _NUMBER.fullmatch(token)
    if number is None:
        raise ScpiError(*DATA_TYPE_ERROR)
    return number


def _integer(token: str) -> int:
    """SCPI_ParamInt32: strtol of the number (it stops at a point or exponent); no suffix."""
    number = _number(token)
    if number.group(2):
        raise ScpiError(*SUFFIX_NOT_ALLOWED)
    digits = re.match(r"[+-]?\d+", number.group(1))
    return int(digits.group()) if digits else 0


def _unsigned(token: str) -> int:
    """SCPI_ParamUInt32: as `_integer`, a negative number wrapping modulo 2³²."""
    return _integer(token) % 2**32


def _volts(token: str) -> float:
    """A voltage with an optional unit: 0.1, 100 mV, 0.1 V (SCPI_ParamNumber, the V unit)."""
    number = _number(token)
    scale = VOLT_SUFFIXES.get(number.group(2).upper() or "V")
    if scale is None:
        raise ScpiError(*INVALID_SUFFIX)
    return float(number.group(1)) * scale


def _boolean(token: str) -> bool:
    """SCPI_ParamBool: ON/OFF or a number (nonzero is ON)."""
    if token.upper() in ("ON", "OFF"):
        return token.upper() == "ON"
    number = _number(token)
    if number.group(2):
        raise ScpiError(*DATA_TYPE_ERROR)
    return float(number.group(1)) != 0.0


def _choice(options: tuple[str, ...]) -> Parse[str]:
    """SCPI_ParamChoice over ``options``: a mnemonic (else -104) among them (else -224)."""

    def parse(token: str) -> str:
        if not _MNEMONIC.fullmatch(token):
            raise ScpiError(*DATA_TYPE_ERROR)
        if token.upper() not in options:
            raise ScpiError(*ILLEGAL_PARAMETER_VALUE)
        return token.upper()

    return parse


def _prefix(names: dict[str, bool]) -> Parse[bool]:
    """The server's strncasecmp over the parameter's length ("B" means BIN); else -200.

    A text that matches no name is only logged at info level: the parser queues -200.
    """

    def parse(token: str) -> bool:
        for name, value in names.items():
            if name.startswith(token.upper()):
                return value
        raise ScpiError(*EXECUTION_ERROR)

    return parse


class _BoardSession(ScpiSession):
    """One client's scpi context: its status, data format, byte order and board error list."""

    def __init__(self, board: SimulatedRedPitaya) -> None:
        super().__init__(board)
        self.binary = False  # ACQ:DATA:FORMAT, per connection (user_context_t)
        self.little_endian = False  # ACQ:DATA:BYTE:ORDER, per connection (user_context_t)
        self.board_errors: deque[tuple[int, str]] = deque()  # error.cpp g_errorList[context]
        self.queue_flag = False  # STB_QMA of this context's status byte


class SimulatedRedPitaya(ScpiInstrument):
    """The STEMlab 125-14's SCPI server: fast inputs IN1 (V_diff) and IN2 (V_sum) of the lab."""

    input_terminator = b"\r\n"
    output_terminator = b"\r\n"
    default_port = 5000
    input_buffer_bytes = INPUT_BUFFER_BYTES
    error_queue_length = ERROR_QUEUE_SIZE
    overflow_replaces_last = True  # SCPI_ErrorAddInternal
    esr_at_power_on = 0  # SCPI_Init leaves the ESR at 0: no power-on bit
    status_per_connection = True
    error_info = True  # SCPI_ErrorPushEx(…, UNDEFINED_HEADER, <the unit as sent>)
    common_commands_keep_path = False  # composeCompoundCommand
    unread_parameter_after = True  # processCommand checks for unread parameters after the call
    session: _BoardSession

    def __init__(
        self,
        lab: SimulatedLab,
        name: str = "redpitaya",
        jumpers: tuple[str, str] = ("LV", "LV"),
        ddr_bytes: int = DDR_REGION_BYTES,
    ) -> None:
        for jumper in jumpers:
            if jumper not in FULL_SCALE_V:
                raise ParameterError(f"jumpers = {jumpers!r}: each one of {list(FULL_SCALE_V)}")
        super().__init__(lab, name)
        #: The input-range jumpers of IN1 and IN2 (hardware, set by hand: "LV" ±1 V, "HV" ±20 V).
        self.jumpers = list(jumpers)
        #: The 16 384-sample buffer of triggered acquisitions and its trigger.
        self.capture = TriggeredCapture(lab, self.jumpers, self)
        #: The deep-memory region and its writer (``ddr_bytes`` reserved, 2 MiB by default).
        self.deep = DeepMemory(lab, self.jumpers, ddr_bytes, self)
        self.deep_mode = False  # ACQ:START started the DDR writer, not the 16 384 buffer
        self.axi_units = "VOLTS"  # axi_unit, a global of acquire_axi.cpp (not reset by ACQ:RST)
        self.return_on_error = False  # RP:RET_ON_ERROR, g_retByError of common.cpp
        self._reset()
        setting, takes = self._setting, self._takes
        self.declare(
            [
                # scpi-parser's own *ESE/*SRE read an Int32 (ieee488.c SCPI_CoreEse/Sre): no range
                # check; the register keeps 8 bits, the SRE without bit 6 (IEEE 488.2 §11.3.2).
                ("*ESE", *setting(lambda t: _integer(t) & 0xFF, "ese", str, failure=None)),
                ("*SRE", *setting(lambda t: _integer(t) & 0xBF, "sre", str, failure=None)),
                ("SYSTem:ERRor[:NEXT]", None, self._common(self._next_error)),
                ("SYSTem:ERRor:COUNt", None, self._common(
                    lambda: str(len(self.errors) + len(self.session.board_errors)))),
                ("SYSTem:VERSion", None, self._common(lambda: ECOSYSTEM_VERSION)),
                ("SYSTem:BRD:ID", None, self._common(lambda: str(BOARD_ID))),
                ("SYSTem:BRD:Name", None, self._common(lambda: BOARD_NAME)),
                ("RP:RET_ON_ERROR", takes(1, self._set_return_on_error), None),
                ("ACQ:START", self._common(self._start), None),
                ("ACQ:STOP", self._common(self._acq_stop), None),
                ("ACQ:RST", self._common(self._acq_reset), None),
                ("ACQ:DEC", takes(1, self._set_decimation), self._common(self._get_decimation)),
                ("ACQ:DEC:Factor", takes(1, self._set_decimation_factor),
                 self._common(self._get_decimation)),
                ("ACQ:SRATe", None, self._common(self._sample_rate)),
                ("ACQ:AVG", *setting(_boolean, "averaging", lambda on: "ON" if on else "OFF")),
                ("ACQ:TRig", takes(1, self._set_trigger), None),
                ("ACQ:TRig:STAT", None, self._common(self._trigger_status)),
                ("ACQ:TRig:FILL", None, self._common(self._fill_status)),
                ("ACQ:TRig:DLY", takes(1, self._set_delay),
                 self._common(lambda: str(self.trigger_delay))),
                ("ACQ:TRig:DLY:NS", takes(1, self._set_delay_ns), self._common(self._get_delay_ns)),
                ("ACQ:TRig:LEV", takes(1, self._set_level),
                 self._common(lambda: f"{self.trigger_level_V:g}")),
                ("ACQ:TRig:HYST", *setting(lambda t: abs(_volts(t)), "trigger_hysteresis_V",
                                           lambda volts: f"{volts:g}")),
                ("ACQ:WPOS", None, self._common(self._write_pointer)),
                ("ACQ:TPOS", None, self._common(lambda: str(self.capture.trigger_position))),
                ("ACQ:SOUR#:GAIN", takes(1, self._set_gain), self._common(self._get_gain)),
                ("ACQ:DATA:Units", *setting(_choice(UNITS), "units", str)),
                ("ACQ:DATA:FORMAT", *setting(_prefix({"BIN": True, "ASCII": False}), "binary",
                                             lambda binary: "BIN" if binary else "ASCII",
                                             self.session_settings)),
                ("ACQ:DATA:BYTE:ORDER", *setting(_prefix({"LEND": True, "BEND": False}),
                                                 "little_endian",
                                                 lambda little: "LEND" if little else "BEND",
                                                 self.session_settings)),
                ("ACQ:BUF:SIZE", None, self._common(lambda: str(BUFFER_SIZE))),
                ("ACQ:SOUR#:DATA:STArt:End", None, takes(2, self._data_start_end)),
                ("ACQ:SOUR#:DATA:Start:End", None, takes(2, self._data_start_end)),
                ("ACQ:SOUR#:DATA:STArt:N", None, takes(2, self._data_start_n)),
                ("ACQ:SOUR#:DATA:Start:N", None, takes(2, self._data_start_n)),
                ("ACQ:SOUR#:DATA:Old:N", None, takes(1, self._data_oldest)),
                ("ACQ:SOUR#:DATA", None, self._common(self._data_all)),
                ("ACQ:SOUR#:DATA:LATest:N", None, takes(1, self._data_latest)),
                # Deep memory: scpi-commands.cpp registers these, handled in acquire_axi.cpp.
                ("ACQ:AXI:DATA:Units", *setting(_choice(UNITS), "axi_units", str)),
                ("ACQ:AXI:DEC", takes(1, self._set_axi_decimation),
                 self._common(lambda: str(self.deep.decimation))),
                ("ACQ:AXI:START", None, self._common(lambda: str(self.deep.region_start))),
                ("ACQ:AXI:SIZE", None, self._common(lambda: str(self.deep.region_bytes))),
                ("ACQ:AXI:SOUR#:Trig:Fill", None, self._common(self._axi_fill)),
                ("ACQ:AXI:SOUR#:Trig:Dly", takes(1, self._axi_set_delay),
                 self._common(lambda: str(self._deep_buffer().trigger_delay))),
                ("ACQ:AXI:SOUR#:Write:Pos", None, self._common(
                    lambda: str(self.deep.write_position(self._channel())))),
                ("ACQ:AXI:SOUR#:Trig:Pos", None, self._common(
                    lambda: str(self.deep.trigger_position(self._channel())))),
                ("ACQ:AXI:SOUR#:ENable", takes(1, self._axi_enable), None),
                ("ACQ:AXI:SOUR#:DATA:Start:N", None, takes(2, self._axi_data)),
                ("ACQ:AXI:SOUR#:DATA:STArt:N", None, takes(2, self._axi_data)),
                ("ACQ:AXI:SOUR#:SET:Buffer", takes(2, self._axi_set_buffer), None),
            ]
        )  # fmt: skip

    def open_session(self) -> _BoardSession:
        """Return a new connection with its own scpi context."""
        return _BoardSession(self)

    def session_settings(self) -> _BoardSession:
        """Return what holds the per-connection settings: the present connection."""
        return self.session

    # --- the session layer's hooks ----------------------------------------------------------------
    def identity(self) -> str:
        """Return the ``*IDN?`` reply."""
        return IDENTITY

    def reset(self) -> None:
        """*RST: the server's reset callback (SCPI_Reset) only logs; the acquisition keeps on."""

    def push_error(self, code: int, message: str) -> None:
        """Queue an error: a board code (> 0) on the board's list (rp_errorPush), else the parser's.

        Both set STB_QMA; a board error sets the ESR's execution-error bit whatever its code.
        """
        self.session.queue_flag = True
        if code > 0:
            self.session.board_errors.append((code, message))
            self.esr |= ESR_EXECUTION_ERROR
        else:
            super().push_error(code, message)

    def error_available(self) -> bool:
        """Return STB_QMA: set by an error, cleared when ``SYST:ERR?`` empties the parser queue."""
        return self.session.queue_flag

    def clear_status(self) -> None:
        """*CLS (SCPI_CoreClsEx): the board's list, the parser's queue and the event registers."""
        super().clear_status()
        self.session.board_errors.clear()
        self.session.queue_flag = False

    def _next_error(self) -> str:
        """SYST:ERR:NEXT?: the board's list first, then the parser's queue (SCPI_ErrorPop)."""
        if self.session.board_errors:
            return format_error(self.session.board_errors.popleft())
        error = self.errors.pop()
        if not len(self.errors):
            self.session.queue_flag = False  # SCPI_ErrorEmitEmpty
        return format_error(error)

    # --- how the handlers read parameters and fail ------------------------------------------------
    def _takes(self, count: int, handler: Callable[[list[str]], T]) -> Callable[[str], T]:
        """Wrap a handler of up to ``count`` parameters: more queue -108 after it ran."""

        def run(parameter: str) -> T:
            arguments = split_arguments(parameter)
            result = handler(arguments)
            if len(arguments) > count:
                self.push_error(*PARAMETER_NOT_ALLOWED)
            return result

        return run

    def _read(
        self,
        arguments: list[str],
        index: int,
        parse: Parse[T],
        failure: str | None = None,
        default: T | None = None,
    ) -> T:
        """Read parameter ``index``; a failure queues the parser's error, then the board's text.

        ``failure`` is the handler's SCPI_LOG_ERR text (None: the parser's error alone). With a
        ``default`` the parameter is optional: left out, or failing with its error queued, it
        reads as the default (RP_AcqTriggerDelay); without one, left out is -109.
        """
        try:
            if index < len(arguments):
                return parse(arguments[index])
            if default is not None:
                return default
            raise ScpiError(*MISSING_PARAMETER)
        except ScpiError as error:
            if default is not None:
                self.push_error(error.code, error.message)
                return default
            if failure is None or error.code == EXECUTION_ERROR[0]:
                raise
            self.push_error(error.code, error.message)
            raise self._board_error(failure) from None

    def _board_error(self, text: str, code: int = MISSING_PARAMETER[0]) -> ScpiError:
        """A handler's SCPI_LOG_ERR: 9000 + the parser code, ``*<header> <text>``."""
        return ScpiError(DEVICE_ERROR_BASE + code, f"*{self.header} {text}")

    def _api_error(self, text: str, code: int = RP_EOOR) -> ScpiError:
        """An API failure as RP_LOG_CRIT queues it (9500 + the API code); a query answers an
        empty line instead of nothing after ``RP:RET_ON_ERROR ON`` (requestSendNewLine)."""
        reply = "" if self.return_on_error and self.header.endswith("?") else None
        return ScpiError(DEVICE_FATAL_BASE + code, f"*{self.header} {text}", reply=reply)

    def _channel(self) -> int:
        """Return the header's input number 1 or 2, or fail as RP_ParseChArgvADC does (9500)."""
        number = self.numbers[0]
        if number not in (1, 2):
            raise self._api_error("Invalid channel number", code=0)
        return number

    def _setting(
        self,
        parse: Parse[T],
        name: str,
        show: Callable[[T], str],
        holder: Callable[[], object] | None = None,
        failure: str | None = MISSING_FIRST,
    ) -> tuple[Callable[[str], None], Callable[[str], str]]:
        """Return the setter and query of a one-parameter setting kept as attribute ``name``.

        ``holder`` returns the object that keeps it (the board, or the connection for its own
        settings); a parameter that does not parse queues the parser's error and ``failure``.
        """
        owner = holder or (lambda: self)

        def put(arguments: list[str]) -> None:
            setattr(owner(), name, self._read(arguments, 0, parse, failure))

        return self._takes(1, put), self._common(lambda: show(getattr(owner(), name)))

    def _set_return_on_error(self, arguments: list[str]) -> None:
        if not arguments:  # an optional SCPI_ParamBool: left out, only the handler's own error
            raise self._board_error(MISSING_FIRST)
        self.return_on_error = self._read(arguments, 0, _boolean, MISSING_FIRST)

    # --- acquisition settings (acquire.cpp) -------------------------------------------------------
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

    def _start(self) -> None:
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

    def _acq_stop(self) -> None:
        self.capture.stop()
        self.deep.stop()

    def _acq_reset(self) -> None:
        self._reset()
        self.session.binary = False

    def _set_decimation(self, arguments: list[str]) -> None:
        value = self._read(arguments, 0, _unsigned, MISSING_FIRST)
        if value not in DECIMATIONS:
            raise self._board_error("Parameter decimation is invalid.")
        self._decimate(value)

    def _decimate(self, value: int) -> None:
        """Set the decimation; a delay set in ns keeps its time (acq_SetDecimationFactor)."""
        self.decimation = value
        if self.trigger_delay_ns is not None:
            self._delay_from_ns(self.trigger_delay_ns)

    def _set_decimation_factor(self, arguments: list[str]) -> None:
        value = self._read(arguments, 0, _unsigned, MISSING_FIRST)
        if not valid_axi_decimation(value):  # the same rule: 1, 2, 4, 8 or 16…65536
            raise self._api_error("Failed to set decimation factor: Value out of range.", RP_EOOR)
        self._decimate(value)

    def _get_decimation(self) -> str:
        return str(self.decimation)

    def _sample_rate(self) -> str:
        # RP_AcqSamplingRateHzQ: sprintf("%9.0f Hz") of the float rate, sent as a mnemonic.
        return f"{float(np.float32(ADC_CLOCK_Hz / self.decimation)):9.0f} Hz"

    def _set_trigger(self, arguments: list[str]) -> None:
        self.trigger_source = self._read(arguments, 0, _choice(TRIGGER_SOURCES), MISSING_FIRST)
        if self.deep_mode:
            self._deep_trigger()
            return
        # The software trigger acts when written, and only on an armed acquisition: the command
        # list orders ACQ:START before ACQ:TRig NOW, acq_SetTriggerSrc writes the source straight
        # to the FPGA and acq_Start unlocks the trigger as it arms (rp-api acq_handler.cpp). What
        # the FPGA makes of a NOW written before ACQ:START is in its own repository, not read
        # here: the simulation drops it, as the command list's order implies.
        if self.trigger_source == "NOW" and self.capture.armed and not self.capture.triggered:
            self.capture.trigger_now()
        self.capture.start_watch()

    def _trigger_status(self) -> str:
        # TD when triggered or when the source is DISABLED (commands-acq, ACQ:TRig:STAT?).
        self.capture.watch()
        if self.deep_mode and self.deep.triggered:
            self.trigger_source = "DISABLED"  # the FPGA clears the source once it has triggered
        return "WAIT" if self.capture.armed and self.trigger_source != "DISABLED" else "TD"

    def _fill_status(self) -> str:
        self.capture.commit()
        return "1" if self.capture.filled else "0"

    def _set_delay(self, arguments: list[str]) -> None:
        value = self._read(arguments, 0, _integer, default=0)
        # acq_SetTriggerDelay: below −8192 the FPGA delay is 0 (the trigger ends the buffer).
        self.trigger_delay = max(value, -BUFFER_SIZE // 2)
        self.trigger_delay_ns = None

    def _delay_from_ns(self, delay_ns: int) -> None:
        """Set the delay in samples from ns, as cnvTimeToSmpls: round(ns / (8 ns × dec))."""
        samples = round(delay_ns / (ADC_SAMPLE_PERIOD_NS * self.decimation))
        self.trigger_delay = max(samples, -BUFFER_SIZE // 2)

    def _set_delay_ns(self, arguments: list[str]) -> None:
        self.trigger_delay_ns = self._read(arguments, 0, _integer, default=0)
        self._delay_from_ns(self.trigger_delay_ns)

    def _get_delay_ns(self) -> str:
        # cnvSmplsToTime: samples × 8 ns × decimation, sent with SCPI_ResultInt32.
        return str(self.trigger_delay * ADC_SAMPLE_PERIOD_NS * self.decimation)

    def _set_level(self, arguments: list[str]) -> None:
        value = self._read(arguments, 0, _volts, MISSING_FIRST)
        # The API stores the level as an ADC code of IN1's range and reads it back from that.
        full_scale = FULL_SCALE_V[self.gains[0]]
        code = round(min(max(value / full_scale, -1.0), 1.0) * CODES_PER_FULL_SCALE)
        code = min(code, CODES_PER_FULL_SCALE - 1)
        self.trigger_level_V = float(np.float32(code * full_scale / CODES_PER_FULL_SCALE))

    def _write_pointer(self) -> str:
        self.capture.commit()
        return str(self.capture.write_position)

    def _set_gain(self, arguments: list[str]) -> None:
        channel = self._channel()  # RP_AcqGain parses the channel before the parameter
        self.gains[channel - 1] = self._read(
            arguments, 0, _choice(tuple(FULL_SCALE_V)), MISSING_FIRST
        )

    def _get_gain(self) -> str:
        return self.gains[self._channel() - 1]

    # --- data (acquire.cpp RP_AcqData*Q) ----------------------------------------------------------
    def _data(self, channel: int, start: int, size: int) -> bytes:
        """Return the reply: ``size`` samples of ``channel`` from buffer position ``start``."""
        self.capture.commit()
        return self._samples_reply(self.capture.read(channel, start, size), channel, self.units)

    def _samples_reply(self, codes: np.ndarray, channel: int, units: str) -> bytes:
        """Format ADC codes as the server sends them: RAW or VOLTS, a binary block or ASCII."""
        order = "<" if self.session.little_endian else ">"
        if units == "RAW":
            values, binary, text = codes, order + "i2", "{:d}"
        else:
            scale = np.float32(FULL_SCALE_V[self.gains[channel - 1]] / CODES_PER_FULL_SCALE)
            values, binary, text = codes.astype(np.float32) * scale, order + "f4", "{:f}"
        if self.session.binary:
            return _binary_block(values.astype(binary, copy=False).tobytes())
        return ("{" + ",".join(text.format(v) for v in values.tolist()) + "}").encode("ascii")

    def _data_all(self) -> bytes:
        channel = self._channel()
        self.capture.commit()
        return self._data(channel, self.capture.write_position + 1, BUFFER_SIZE)

    def _data_oldest(self, arguments: list[str]) -> bytes:
        channel = self._channel()
        size = self._read(arguments, 0, _unsigned, "Missing SIZE parameter.")
        self.capture.commit()
        return self._data(channel, self.capture.write_position + 1, size)

    def _data_latest(self, arguments: list[str]) -> bytes:
        channel = self._channel()
        size = min(self._read(arguments, 0, _unsigned, MISSING_FIRST), BUFFER_SIZE)
        self.capture.commit()
        return self._data(channel, self.capture.write_position + 1 - size, size)

    def _data_start_n(self, arguments: list[str]) -> bytes:
        channel = self._channel()
        start = self._read(arguments, 0, _unsigned, "Missing START parameter.")
        size = self._read(arguments, 1, _unsigned, "Missing SIZE parameter.")
        return self._data(channel, start, size)

    def _data_start_end(self, arguments: list[str]) -> bytes:
        channel = self._channel()
        start = self._read(arguments, 0, _unsigned, "Unable to read START parameter.")
        end = self._read(arguments, 1, _unsigned, "Unable to read END parameter.")
        return self._data(channel, start, (end + BUFFER_SIZE - start) % BUFFER_SIZE + 1)

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

    def _deep_buffer(self) -> AxiBuffer:
        """Return the deep-memory buffer of the header's input."""
        return self.deep.buffers[self._channel() - 1]

    def _set_axi_decimation(self, arguments: list[str]) -> None:
        value = self._read(arguments, 0, _unsigned, MISSING_FIRST)
        if not valid_axi_decimation(value):
            raise self._api_error("Failed to set decimation: Value out of range.")
        self.deep.decimation = value

    def _axi_set_buffer(self, arguments: list[str]) -> None:
        channel = self._channel()
        address = self._read(arguments, 0, _unsigned, "Missing START parameter.")
        size = self._read(arguments, 1, _unsigned, "Missing SIZE parameter.")
        if not self.deep.set_buffer(channel, address, size):
            raise self._api_error("Failed to set write addresses: Value out of range.")

    def _axi_enable(self, arguments: list[str]) -> None:
        buffer = self._deep_buffer()
        state = self._read(arguments, 0, _boolean, MISSING_FIRST)
        if state and not buffer.samples:
            # After ACQ:RST the buffer is empty (acq_SetDefault sets 0 bytes); the API would
            # reserve nothing and the writer have nowhere to write. The simulation refuses it.
            raise self._api_error("Failed to start data capture: Value out of range.")
        buffer.enabled = state

    def _axi_set_delay(self, arguments: list[str]) -> None:
        buffer = self._deep_buffer()
        buffer.trigger_delay = self._read(arguments, 0, _integer, default=0)

    def _axi_fill(self) -> str:
        return "1" if self.deep.filled(self._channel()) else "0"

    def _axi_data(self, arguments: list[str]) -> bytes:
        channel = self._channel()
        start = self._read(arguments, 0, _unsigned, "Missing START parameter.")
        size = self._read(arguments, 1, _unsigned, "Missing SIZE parameter.")
        if size > self.deep.region_bytes:  # new float[size] would fail on the board's 512 MB
            raise self._board_error("Failed allocate buffer", code=EXECUTION_ERROR[0])
        return self._samples_reply(self.deep.read(channel, start, size), channel, self.axi_units)


def _binary_block(payload: bytes) -> bytes:
    """Frame a payload as the server's writeBinHeader does: '#', digit count, byte count, data.

    Written here from the server's code rather than taken from instruments/ieee_block, so that
    the driver's block reader is tested against an independent writer (and the simulators do
    not import the driver layer).
    """
    count = str(len(payload))
    return f"#{len(count)}{count}".encode("ascii") + payload
