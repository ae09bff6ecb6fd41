"""`CellHeater`: the Lake Shore 336 loop that heats the cell, below the station's limit."""

from __future__ import annotations

import threading
from typing import Any

from hotspin.analysis.checks import check_range
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.linked import Linked, read_all
from hotspin.instruments.resilience import ResilientLink
from hotspin.instruments.station_config import HeaterConfig


class CellHeater:
    """The cell temperature and its closed loop, never set above the station's maximum."""

    def __init__(self, link: ResilientLink, config: HeaterConfig) -> None:
        self.link = link
        self.config = config
        self.lock = threading.RLock()

    def _input(self, controller: Any) -> Any:
        return getattr(controller, f"input_{self.config.input}")

    def _output(self, controller: Any) -> Any:
        return getattr(controller, f"output_{self.config.output}")

    def configure(self) -> None:
        """Program heater setup, closed-loop mode on the cell sensor, ramp rate and TLIMIT."""
        c = self.config
        with self.lock:
            self.link.call(
                lambda d: self._output(d).setup_heater(
                    round(c.heater_resistance_ohm), c.max_heater_current_A
                )
            )
            self.link.call(lambda d: self._output(d).set_output_mode("closed_loop", c.input, False))
            self.link.call(lambda d: self._output(d).configure_ramp(True, c.ramp_rate_K_per_min))
            # The instrument's own trip, in case the software is not running when it matters.
            self.link.call(
                lambda d: setattr(self._input(d), "temperature_limit_K", c.max_temperature_K)
            )

    def _check_setpoint(self, value: float) -> None:
        """Refuse a setpoint above the station's maximum, before anything is sent."""
        try:
            check_range("setpoint_K", value, 250.0, self.config.max_temperature_K, "K")
        except ValueError as error:
            raise InterlockError(self.link.name, f"{error} (heater.max_temperature_K)") from None

    temperature_K = Linked("kelvin", float, "Measure the cell temperature in K.", part="_input")
    setpoint_K = Linked(
        "setpoint", float, "Control the loop's setpoint in K (at most the station's "
        "heater.max_temperature_K).", part="_output", writable=True, check="_check_setpoint",
    )  # fmt: skip
    heater_output_percent = Linked(
        "output", float, "Measure the heater output in % of the present range.", part="_output"
    )
    heater_range = Linked(
        "range", str, "Control the heater range: off, low, medium or high.", part="_output",
        writable=True,
    )  # fmt: skip
    ramping = Linked("ramping", bool, "Get whether the setpoint is still ramping.", part="_output")
    reading_status = Linked(
        "reading_status", int, "Get the input's reading status bits (0: valid).", part="_input"
    )
    temperature_limit_K = Linked(
        "temperature_limit_K", float, "Get the input's over-temperature trip (TLIMIT) in K.",
        part="_input",
    )  # fmt: skip
    pid = Linked("pid", lambda v: [float(x) for x in v], "Get the loop's P, I, D.", part="_output")
    ramp = Linked("ramp", lambda v: [float(x) for x in v], "Get the setpoint ramp: enabled, "
                  "rate in K/min.", part="_output")  # fmt: skip
    idn = Linked("id", str, "Get the controller's identification.")

    def set_ramp_rate(self, rate_K_per_min: float) -> None:
        """Ramp the setpoint at ``rate_K_per_min`` from now on (0.1–100 K/min)."""
        with self.lock:
            self.link.call(lambda d: self._output(d).configure_ramp(True, rate_K_per_min))

    def settings(self) -> dict[str, Any]:
        """Get what `restore` needs to put the loop back as it is: setpoint and heater range."""
        return {"setpoint_K": self.setpoint_K, "heater_range": self.heater_range}

    def restore(self, settings: dict[str, Any]) -> None:
        """Set the loop as `settings` says at once (no ramp from the power-on setpoint)."""
        c = self.config
        with self.lock:
            self.link.call(lambda d: self._output(d).set_output_mode("closed_loop", c.input, False))
            self.link.call(lambda d: self._output(d).configure_ramp(False, c.ramp_rate_K_per_min))
            self.setpoint_K = float(settings["setpoint_K"])
            self.heater_range = str(settings["heater_range"])
            self.link.call(lambda d: self._output(d).configure_ramp(True, c.ramp_rate_K_per_min))

    def safe_state(self) -> None:
        """Leave the heater as the station says: hold the setpoint, or switch every output off."""
        if self.config.safe_state == "off":
            with self.lock:
                self.link.call(lambda d: d.all_heaters_off())

    def snapshot(self) -> dict[str, Any]:
        """Return every readable setting of the heater loop."""
        values = read_all(self, SNAPSHOT)
        enabled, rate = values.pop("ramp")
        return {**values, "ramp_enabled": bool(int(enabled)), "ramp_rate_K_per_min": rate,
                "max_temperature_K": self.config.max_temperature_K,
                "safe_state": self.config.safe_state}  # fmt: skip


#: The settings a snapshot records, by property name.
SNAPSHOT = (
    "idn", "temperature_K", "reading_status", "setpoint_K", "heater_output_percent",
    "heater_range", "ramp", "pid", "temperature_limit_K",
)  # fmt: skip
