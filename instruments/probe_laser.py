"""`ProbeLaser`: the DLC pro seen as a probe: current within the station's limit, and detuning."""

from __future__ import annotations

import threading
from typing import Any

from hotspin.analysis.checks import check_range
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.linked import Linked, read_all
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

    def _check_current(self, value: float) -> None:
        """Refuse a current above the station's limit, before anything is sent."""
        try:
            check_range("current_A", value, 0.0, self.config.max_current_A, "A")
        except ValueError as error:
            raise InterlockError(self.link.name, f"{error} (laser.max_current_A)") from None

    current_A = Linked(
        "current_setpoint_A", float, "Control the diode current setpoint in A (at most the "
        "station's laser.max_current_A).", writable=True, check="_check_current",
    )  # fmt: skip
    piezo_voltage_V = Linked(
        "piezo_voltage_V", float, "Control the external-cavity piezo voltage in V (the driver "
        "refuses values outside its range).", writable=True,
    )  # fmt: skip
    emission_enabled = Linked(
        "emission_enabled", bool, "Control whether the current driver is on.", writable=True
    )
    emitting = Linked("emission", bool, "Get whether light comes out (driver on, interlock "
                      "closed, key unlocked).")  # fmt: skip
    interlock_open = Linked("interlock_open", bool, "Get whether the interlock loop is open.")
    diode_current_A = Linked("current_A", float, "Measure the diode current in A.")
    current_clip_A = Linked("current_clip_A", float, "Get the driver's current clip in A.")
    frontkey_locked = Linked("frontkey_locked", bool, "Get whether the front key is locked.")
    temperature_setpoint_C = Linked("temperature_setpoint_C", float, "Get the diode "
                                    "temperature setpoint in °C.")  # fmt: skip
    temperature_C = Linked("temperature_C", float, "Measure the diode temperature in °C.")
    system_type = Linked("system_type", str, "Get the DLC pro's system type.")
    serial_number = Linked("serial_number", str, "Get the DLC pro's serial number.")
    firmware_version = Linked("firmware_version", str, "Get the DLC pro's firmware version.")

    @property
    def piezo_range_V(self) -> tuple[float, float]:
        """Get the piezo voltage range in V."""
        return PIEZO_RANGE_V

    @property
    def detuning_Hz(self) -> float:
        """Get the detuning from the D1 F=2 line in Hz, from the station's calibration."""
        c = self.config
        with self.lock:
            current, piezo = self.current_A, self.piezo_voltage_V
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
            self.emission_enabled = False

    def snapshot(self) -> dict[str, Any]:
        """Return every readable setting of the laser."""
        values = read_all(self, SNAPSHOT)
        values["current_setpoint_A"] = values.pop("current_A")
        values["current_A"] = values.pop("diode_current_A")
        values["emission"] = values.pop("emitting")
        return {**values, "max_current_A": self.config.max_current_A,
                "safe_state": self.config.safe_state}  # fmt: skip


#: The settings a snapshot records, by property name.
SNAPSHOT = (
    "system_type", "serial_number", "firmware_version", "current_A", "diode_current_A",
    "current_clip_A", "emission_enabled", "emitting", "interlock_open", "frontkey_locked",
    "temperature_setpoint_C", "temperature_C", "piezo_voltage_V", "detuning_Hz",
)  # fmt: skip
