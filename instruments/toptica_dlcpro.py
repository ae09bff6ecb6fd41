"""Toptica DLC pro laser controller: the probe laser's command line (protocol digest §2.1).

The DLC pro speaks DeCoP, a small Scheme-like language, on its command line (TCP port 1998).
What this driver relies on, and where it comes from (toptica-lasersdk 3.3.0:
``asyncio/connection.py``, ``asyncio/client.py``, ``decop.py``; parameter names from the DLC pro
tree ``dlcpro/v2_4_0.py``):

* On connection the controller sends a welcome text ending in the prompt ``"\\n> "``; the SDK reads
  and discards everything up to the first prompt before its first request.
* A request is one line: ``(param-ref 'name)``, ``(param-set! 'name value)``, ``(exec 'name)``.
* A reply is zero or more lines, each ending in ``"\\n"`` (the SDK also accepts ``"\\r\\n"``),
  followed by the prompt ``"> "`` without a line end.
* ``param-set!`` answers an integer status: 0 done, > 0 done with a warning, < 0 refused.
* An error is a line starting with ``Error:``, then a code and a message (the SDK's monitoring
  line renders errors as ``Error: <code> <message>``). The device's codes are negative (a DLC
  pro's ``Error: -7 lockpoint not found``, toptica/python-lasersdk issue 3); no table of them is
  published, so the driver keeps the code and the message as the controller sent them.
* Values: booleans ``#t``/``#f``, strings in double quotes, decimal numbers. Currents are in mA,
  temperatures in °C, voltages in V.
* The TCP command line does not echo a request (the ``echo`` parameter is off; the SDK decodes the
  first reply line as the value). The serial port does echo. The value is always the last line
  before the prompt, so this driver reads it correctly either way.

Reading a reply works identically through pyvisa-py and the in-process adapter: pyvisa stops a
read only at the *last* character of the read termination, so the prompt ``"> "`` (no line end)
cannot be a termination. Each line is read with ``"\\n"`` termination, and a line that starts
with ``"> "`` is recognised as the prompt by reading its first two bytes one at a time.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from hotspin.instruments.errors import (
    GarbledReplyError,
    InstrumentCommandError,
    translated_io_errors,
)
from hotspin.instruments.validators import named_choice, named_range
from pymeasure.instruments import Instrument

log = logging.getLogger(__name__)

#: The command-line port of the DLC pro (toptica-lasersdk ``NetworkConnection``).
COMMAND_LINE_PORT = 1998
#: The prompt that ends every reply.
PROMPT = b"> "
#: Piezo output span of a DL pro head's piezo driver, in V.
PIEZO_RANGE_V = (-1.0, 140.0)
#: A guard against typos; the controller enforces the head's own ``temp-set-min``/``-max``.
TEMPERATURE_GUARD_C = (0.0, 50.0)

_BOOLEANS = {True: "#t", False: "#f"}
_ERROR_LINE = re.compile(r"^error:?\s*(?P<code>[-+]?\d+)?\s*(?P<message>.*)$", re.IGNORECASE)


def _real(text: str) -> float:
    """Decode a DeCoP real number."""
    try:
        return float(text)
    except ValueError:
        raise GarbledReplyError("Toptica DLC pro", f"{text!r} is not a number") from None


def _string(text: str) -> str:
    """Decode a DeCoP string (double quotes around it)."""
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        raise GarbledReplyError("Toptica DLC pro", f"{text!r} is not a quoted string")
    return text[1:-1]


def encode_value(value: bool | int | float | str) -> str:
    """Encode a Python value as DeCoP text: #t/#f, a decimal number or a quoted string."""
    if isinstance(value, bool):
        return _BOOLEANS[value]
    if isinstance(value, int | float):
        return f"{value:g}"
    return f'"{value}"'


class DLCpro(Instrument):
    """Toptica DLC pro with one DL pro head (``laser1``): current, TEC, piezo, emission, safety.

    The diode current is in A in this API (mA on the wire). A current above the limit, taken from
    ``current_limit_A`` or else from the controller's own ``current-clip``, is refused before
    anything is sent.
    """

    current_setpoint_A = Instrument.control(
        "(param-ref 'laser1:dl:cc:current-set)",
        "(param-set! 'laser1:dl:cc:current-set %g)",
        """Control the diode current setpoint in A (float, 0 to the current limit).""",
        validator=named_range("current_setpoint_A", "A"),
        values=(0.0, 0.0),  # replaced per instance by the current limit in __init__
        dynamic=True,
        set_process=lambda current_A: current_A * 1e3,
        get_process=lambda text: _real(text) * 1e-3,
    )

    current_A = Instrument.measurement(
        "(param-ref 'laser1:dl:cc:current-act)",
        """Measure the diode current in A (float; 0 without emission).""",
        get_process=lambda text: _real(text) * 1e-3,
    )

    current_clip_A = Instrument.measurement(
        "(param-ref 'laser1:dl:cc:current-clip)",
        """Get the controller's current limit (``current-clip``) in A (float).""",
        get_process=lambda text: _real(text) * 1e-3,
    )

    emission_enabled = Instrument.control(
        "(param-ref 'laser1:dl:cc:enabled)",
        "(param-set! 'laser1:dl:cc:enabled %s)",
        """Control whether the current driver is switched on (bool). Light comes out only with
        the interlock closed and the key switch unlocked; see `emission`.""",
        validator=named_choice("emission_enabled"),
        values=_BOOLEANS,
        map_values=True,
    )

    emission = Instrument.measurement(
        "(param-ref 'emission)",
        """Get whether the laser emits: current on, interlock closed, key unlocked (bool).""",
        values=_BOOLEANS,
        map_values=True,
    )

    temperature_setpoint_C = Instrument.control(
        "(param-ref 'laser1:dl:tc:temp-set)",
        "(param-set! 'laser1:dl:tc:temp-set %g)",
        """Control the diode temperature setpoint in °C (float).""",
        validator=named_range("temperature_setpoint_C", "°C"),
        values=TEMPERATURE_GUARD_C,
        get_process=_real,
    )

    temperature_C = Instrument.measurement(
        "(param-ref 'laser1:dl:tc:temp-act)",
        """Measure the diode temperature in °C (float).""",
        get_process=_real,
    )

    piezo_voltage_V = Instrument.control(
        "(param-ref 'laser1:dl:pc:voltage-set)",
        "(param-set! 'laser1:dl:pc:voltage-set %g)",
        """Control the external-cavity piezo voltage in V (float).""",
        validator=named_range("piezo_voltage_V", "V"),
        values=PIEZO_RANGE_V,
        get_process=_real,
    )

    interlock_open = Instrument.measurement(
        "(param-ref 'interlock-open)",
        """Get whether the interlock loop is open, which stops emission (bool).""",
        values=_BOOLEANS,
        map_values=True,
    )

    frontkey_locked = Instrument.measurement(
        "(param-ref 'frontkey-locked)",
        """Get whether the front-panel key switch is locked, which stops emission (bool).""",
        values=_BOOLEANS,
        map_values=True,
    )

    emission_button_enabled = Instrument.measurement(
        "(param-ref 'emission-button-enabled)",
        """Get whether the front-panel emission button is enabled (bool).""",
        values=_BOOLEANS,
        map_values=True,
    )

    system_type = Instrument.measurement(
        "(param-ref 'system-type)",
        """Get the controller type (str).""",
        get_process=_string,
    )

    serial_number = Instrument.measurement(
        "(param-ref 'serial-number)",
        """Get the controller's serial number (str).""",
        get_process=_string,
    )

    firmware_version = Instrument.measurement(
        "(param-ref 'fw-ver)",
        """Get the controller's firmware version (str).""",
        get_process=_string,
    )

    def __init__(
        self,
        adapter: Any,
        name: str = "Toptica DLC pro",
        current_limit_A: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("read_termination", "\n")
        kwargs.setdefault("write_termination", "\n")
        kwargs.setdefault("timeout", 2000)
        kwargs.setdefault("asrl", {"baud_rate": 115200})  # the USB serial port
        super().__init__(adapter, name, includeSCPI=False, **kwargs)
        self._last_request = "the connection"
        self._read_reply()  # the welcome text, up to the first prompt
        limit = self.current_clip_A if current_limit_A is None else current_limit_A
        self._current_limit_A = float(limit)
        self.current_setpoint_A_values = (0.0, self._current_limit_A)

    @property
    def current_limit_A(self) -> float:
        """Get the largest current setpoint this driver sends, in A."""
        return self._current_limit_A

    # --- DeCoP exchanges ------------------------------------------------------------------------
    def write(self, command: str, **kwargs: Any) -> None:
        """Send one DeCoP request; the status a ``param-set!`` answers is read and checked here."""
        self._last_request = command
        with translated_io_errors(self.name):
            super().write(command, **kwargs)
        if command.lstrip("( ").startswith("param-set!"):
            self._check_status(self.read())

    def read(self, **kwargs: Any) -> str:
        """Read one reply and return its value, the last line before the prompt."""
        lines = self._read_reply()
        for line in lines:
            match = _ERROR_LINE.match(line)
            if match:
                code = match["code"]
                raise InstrumentCommandError(
                    self.name,
                    f"{line!r} in reply to {self._last_request!r}",
                    code=None if code is None else int(code),
                )
        if not lines:
            raise GarbledReplyError(self.name, f"empty reply to {self._last_request!r}")
        return lines[-1]

    def values(self, command: str, **kwargs: Any) -> list[str]:
        """Return the reply to ``command`` as one value.

        Overridden: pymeasure splits replies at commas, but a DeCoP reply is one value per line
        and strings may contain commas; the properties decode the text themselves.
        """
        return [self.ask(command)]

    def parameter(self, name: str) -> str:
        """Get the raw DeCoP text of any parameter, e.g. ``laser1:dl:cc:voltage-act``."""
        return self.ask(f"(param-ref '{name})")

    def set_parameter(self, name: str, value: bool | int | float | str) -> None:
        """Set any parameter; a refusal raises InstrumentCommandError with the status code."""
        self.write(f"(param-set! '{name} {encode_value(value)})")

    def _check_status(self, reply: str) -> None:
        """Raise for a negative ``param-set!`` status; log a positive (warning) one."""
        try:
            status = int(reply)
        except ValueError:
            raise GarbledReplyError(
                self.name, f"expected an integer status for {self._last_request!r}, got {reply!r}"
            ) from None
        if status < 0:
            raise InstrumentCommandError(
                self.name, f"{self._last_request!r} refused with status {status}", code=status
            )
        if status > 0:
            log.warning("%s: %r done with warning status %d", self.name, self._last_request, status)

    def _read_reply(self) -> list[str]:
        """Read lines up to and including the prompt; return them without line ends."""
        lines = []
        with translated_io_errors(self.name):
            while True:
                head = self.read_bytes(1)
                if head == PROMPT[:1]:
                    second = self.read_bytes(1)
                    if second == PROMPT[1:]:
                        return lines
                    head += second
                text = head.decode("utf-8", "replace")
                if not text.endswith("\n"):
                    text += self.adapter.read()
                lines.append(text.rstrip("\r\n"))
