"""The heated cell as a lumped thermal body: C dT/dt = P − (T − T_amb)/R_th (docs/physics.md §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hotspin.analysis.checks import check_positive, check_range


@dataclass(frozen=True)
class OvenConfig:
    """Thermal constants of the oven and its heater."""

    heat_capacity_J_per_K: float = 30.0
    thermal_resistance_K_per_W: float = 10.0  # τ = R C = 300 s; 450 K needs ≈ 16 W
    ambient_K: float = 295.0
    heater_resistance_ohm: float = 50.0

    def __post_init__(self) -> None:
        check_positive("heat_capacity_J_per_K", self.heat_capacity_J_per_K, "J/K")
        check_positive("thermal_resistance_K_per_W", self.thermal_resistance_K_per_W, "K/W")
        check_range("ambient_K", self.ambient_K, 200.0, 350.0, "K")
        check_positive("heater_resistance_ohm", self.heater_resistance_ohm, "Ω")

    @property
    def time_constant_s(self) -> float:
        """Return the thermal time constant τ = R_th C in s."""
        return self.heat_capacity_J_per_K * self.thermal_resistance_K_per_W


class CellOven:
    """Temperature of the cell, integrated exactly for piecewise-constant heater power."""

    def __init__(self, config: OvenConfig, temperature_K: float | None = None) -> None:
        self.config = config
        self.temperature_K = config.ambient_K if temperature_K is None else temperature_K

    def steady_temperature_K(self, heater_power_W: float) -> float:
        """Return the temperature the cell settles at under a constant heater power."""
        return self.config.ambient_K + heater_power_W * self.config.thermal_resistance_K_per_W

    def step(self, heater_power_W: float, duration_s: float) -> float:
        """Advance by ``duration_s`` at constant heater power and return the new temperature."""
        power = check_range("heater_power_W", heater_power_W, 0.0, 1e4, "W")
        target = self.steady_temperature_K(power)
        decay = math.exp(-duration_s / self.config.time_constant_s)
        self.temperature_K = target + (self.temperature_K - target) * decay
        return self.temperature_K
