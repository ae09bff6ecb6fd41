"""`CellHeater`: the Lake Shore 336 loop that heats the cell, below the station's limit."""

from __future__ import annotations

import threading
from typing import Any

from hotspin.analysis.checks import check_range
from hotspin.instruments.errors import InterlockError
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

    @property
    def temperature_K(self) -> float:
        """Measure the cell temperature in K."""
        with self.lock:
            return self.link.call(lambda d: float(self._input(d).kelvin))

    @property
    def setpoint_K(self) -> float:
        """Get the loop's setpoint in K."""
        with self.lock:
            return self.link.call(lambda d: float(self._output(d).setpoint))

    @setpoint_K.setter
    def setpoint_K(self, value: float) -> None:
        """Set the setpoint in K; above the station's maximum it is refused before sending."""
        limit = self.config.max_temperature_K
        try:
            check_range("setpoint_K", value, 250.0, limit, "K")
        except ValueError as error:
            raise InterlockError(self.link.name, f"{error} (heater.max_temperature_K)") from None
        with self.lock:
            self.link.call(lambda d: setattr(self._output(d), "setpoint", value))

    def set_ramp_rate(self, rate_K_per_min: float) -> None:
        """Ramp the setpoint at ``rate_K_per_min`` from now on (0.1–100 K/min)."""
        with self.lock:
            self.link.call(lambda d: self._output(d).configure_ramp(True, rate_K_per_min))

    @property
    def heater_output_percent(self) -> float:
        """Measure the heater output in % of the present range."""
        with self.lock:
            return self.link.call(lambda d: float(self._output(d).output))

    @property
    def heater_range(self) -> str:
        """Get the heater range: off, low, medium or high."""
        with self.lock:
            return self.link.call(lambda d: str(self._output(d).range))

    @heater_range.setter
    def heater_range(self, value: str) -> None:
        """Set the heater range: off, low, medium or high."""
        with self.lock:
            self.link.call(lambda d: setattr(self._output(d), "range", value))

    @property
    def ramping(self) -> bool:
        """Get whether the setpoint is still ramping."""
        with self.lock:
            return self.link.call(lambda d: bool(self._output(d).ramping))

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
        with self.lock:
            ramp = self.link.call(lambda d: [float(v) for v in self._output(d).ramp])
            return {
                "idn": self.link.call(lambda d: str(d.id)),
                "temperature_K": self.temperature_K,
                "reading_status": self.link.call(lambda d: int(self._input(d).reading_status)),
                "setpoint_K": self.setpoint_K,
                "heater_output_percent": self.heater_output_percent,
                "heater_range": self.heater_range,
                "ramp_enabled": bool(int(ramp[0])),
                "ramp_rate_K_per_min": float(ramp[1]),
                "pid": self.link.call(lambda d: [float(v) for v in self._output(d).pid]),
                "temperature_limit_K": self.link.call(
                    lambda d: float(self._input(d).temperature_limit_K)
                ),
                "max_temperature_K": self.config.max_temperature_K,
                "safe_state": self.config.safe_state,
            }
