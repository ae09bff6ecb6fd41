"""`ProbeLaser`: the DLC pro seen as a probe: current within the station's limit, and detuning."""

from __future__ import annotations

import threading
from typing import Any

from hotspin.analysis.checks import check_range
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.resilience import ResilientLink
from hotspin.instruments.station_config import LaserConfig
from hotspin.instruments.toptica_dlcpro import PIEZO_RANGE_V


class ProbeLaser:
    """Probe laser current, emission and safety state, and its detuning from the D1 F=2 line.

    Without a wavemeter the detuning comes from the station's calibration: linear in current and
    piezo voltage around the reference settings, valid inside the mode-hop-free range.
    """

    def __init__(self, link: ResilientLink, config: LaserConfig) -> None:
        self.link = link
        self.config = config
        self.lock = threading.RLock()

    @property
    def current_A(self) -> float:
        """Get the diode current setpoint in A."""
        with self.lock:
            return self.link.call(lambda d: float(d.current_setpoint_A))

    @current_A.setter
    def current_A(self, value: float) -> None:
        """Set the diode current in A; above the station's limit it is refused before sending."""
        try:
            check_range("current_A", value, 0.0, self.config.max_current_A, "A")
        except ValueError as error:
            raise InterlockError(self.link.name, f"{error} (laser.max_current_A)") from None
        with self.lock:
            self.link.call(lambda d: setattr(d, "current_setpoint_A", value))

    @property
    def piezo_voltage_V(self) -> float:
        """Get the external-cavity piezo voltage in V."""
        with self.lock:
            return self.link.call(lambda d: float(d.piezo_voltage_V))

    @piezo_voltage_V.setter
    def piezo_voltage_V(self, value: float) -> None:
        """Set the piezo voltage in V (the driver refuses values outside its range)."""
        with self.lock:
            self.link.call(lambda d: setattr(d, "piezo_voltage_V", value))

    @property
    def piezo_range_V(self) -> tuple[float, float]:
        """Get the piezo voltage range in V."""
        return PIEZO_RANGE_V

    @property
    def emission_enabled(self) -> bool:
        """Get whether the current driver is on."""
        with self.lock:
            return self.link.call(lambda d: bool(d.emission_enabled))

    @emission_enabled.setter
    def emission_enabled(self, value: bool) -> None:
        """Switch the current driver on or off."""
        with self.lock:
            self.link.call(lambda d: setattr(d, "emission_enabled", bool(value)))

    @property
    def emitting(self) -> bool:
        """Get whether light comes out (driver on, interlock closed, key unlocked)."""
        with self.lock:
            return self.link.call(lambda d: bool(d.emission))

    @property
    def interlock_open(self) -> bool:
        """Get whether the interlock loop is open."""
        with self.lock:
            return self.link.call(lambda d: bool(d.interlock_open))

    @property
    def detuning_Hz(self) -> float:
        """Get the detuning from the D1 F=2 line in Hz, from the station's calibration."""
        c = self.config
        with self.lock:
            current = self.link.call(lambda d: float(d.current_setpoint_A))
            piezo = self.link.call(lambda d: float(d.piezo_voltage_V))
        return (
            c.reference_detuning_Hz
            + c.current_tuning_Hz_per_A * (current - c.reference_current_A)
            + c.piezo_tuning_Hz_per_V * piezo
        )

    def settings(self) -> dict[str, Any]:
        """Get what `restore` needs: current, piezo voltage and whether emission is enabled."""
        return {
            "current_A": self.current_A,
            "piezo_voltage_V": self.piezo_voltage_V,
            "emission_enabled": self.emission_enabled,
        }

    def restore(self, settings: dict[str, Any]) -> None:
        """Set the laser as `settings` says (each value checked against the station's limits)."""
        self.current_A = float(settings["current_A"])
        self.piezo_voltage_V = float(settings["piezo_voltage_V"])
        self.emission_enabled = bool(settings["emission_enabled"])

    def safe_state(self) -> None:
        """Leave the laser as the station says: hold, or switch emission off."""
        if self.config.safe_state == "off":
            with self.lock:
                self.link.call(lambda d: setattr(d, "emission_enabled", False))

    def snapshot(self) -> dict[str, Any]:
        """Return every readable setting of the laser."""
        with self.lock:
            return {
                "system_type": self.link.call(lambda d: d.system_type),
                "serial_number": self.link.call(lambda d: d.serial_number),
                "firmware_version": self.link.call(lambda d: d.firmware_version),
                "current_setpoint_A": self.current_A,
                "current_A": self.link.call(lambda d: float(d.current_A)),
                "current_clip_A": self.link.call(lambda d: float(d.current_clip_A)),
                "emission_enabled": self.emission_enabled,
                "emission": self.emitting,
                "interlock_open": self.interlock_open,
                "frontkey_locked": self.link.call(lambda d: bool(d.frontkey_locked)),
                "temperature_setpoint_C": self.link.call(lambda d: float(d.temperature_setpoint_C)),
                "temperature_C": self.link.call(lambda d: float(d.temperature_C)),
                "piezo_voltage_V": self.link.call(lambda d: float(d.piezo_voltage_V)),
                "detuning_Hz": self.detuning_Hz,
                "max_current_A": self.config.max_current_A,
                "safe_state": self.config.safe_state,
            }
