"""Cell warm-up: ramp the Lake Shore setpoint, then wait until the temperature holds still."""

from __future__ import annotations

from typing import Any

from pymeasure.experiment import FloatParameter

from analysis.checks import ParameterError
from procedures.base import HotspinProcedure


class WarmUp(HotspinProcedure):
    """Ramp the cell to a temperature and wait until it stays within a tolerance for a dwell."""

    NAME = "warmup"
    SUMMARY = "ramp the cell to a temperature and wait until it is stable; records T(t), heater"

    target_temperature_K = FloatParameter(
        "cell temperature to reach", units="K", minimum=290.0, maximum=700.0, default=450.0
    )
    ramp_rate_K_per_min = FloatParameter(
        "setpoint ramp rate", units="K/min", minimum=0.1, maximum=100.0, default=10.0
    )
    tolerance_K = FloatParameter(
        "allowed distance from the target", units="K", minimum=0.01, maximum=10.0, default=0.2
    )
    dwell_s = FloatParameter(
        "time the temperature must stay within the tolerance", units="s", minimum=0.0,
        maximum=3600.0, default=60.0,
    )  # fmt: skip
    sample_interval_s = FloatParameter(
        "time between readings", units="s", minimum=0.1, maximum=600.0, default=5.0
    )
    timeout_s = FloatParameter(
        "give up after", units="s", minimum=10.0, maximum=36000.0, default=7200.0
    )

    def check_limits(self, station: Any) -> None:
        """Refuse a target above the station's maximum cell temperature."""
        limit = station.config.heater.max_temperature_K
        if self.target_temperature_K > limit:
            raise ParameterError(
                f"target_temperature_K = {self.target_temperature_K:g} is outside the allowed "
                f"range [290, {limit:g}] K (heater.max_temperature_K of the station)"
            )

    def execute(self) -> None:
        """Ramp, then sample until |T − target| ≤ tolerance for the whole dwell."""
        heater, clock = self.station.heater, self.station.clock
        heater.set_ramp_rate(self.ramp_rate_K_per_min)
        heater.setpoint_K = self.target_temperature_K
        heater.heater_range = "high"
        start = clock.now()
        start_temperature = heater.temperature_K
        stable_since: float | None = None
        while True:
            now = clock.now() - start
            temperature = heater.temperature_K
            self.record_step(
                {
                    "time_s": (now, "s"),
                    "temperature_K": (temperature, "K"),
                    "setpoint_K": (heater.setpoint_K, "K"),
                    "heater_output_percent": (heater.heater_output_percent, "%"),
                }
            )
            if abs(temperature - self.target_temperature_K) <= self.tolerance_K:
                stable_since = now if stable_since is None else stable_since
            else:
                stable_since = None
            held = 0.0 if stable_since is None else now - stable_since
            span = abs(self.target_temperature_K - start_temperature) or 1.0
            approach = 1.0 - abs(self.target_temperature_K - temperature) / span
            self.progress(
                0.8 * max(approach, 0.0) + 0.2 * min(held / max(self.dwell_s, 1e-9), 1.0),
                f"T = {temperature:.2f} K, stable for {held:.0f} s",
            )
            if stable_since is not None and held >= self.dwell_s:
                self.record_summary(
                    {
                        "final_temperature_K": (temperature, self.tolerance_K, "K"),
                        "time_to_stable_s": (now, self.sample_interval_s, "s"),
                    }
                )
                return
            if now > self.timeout_s:
                raise TimeoutError(
                    f"the cell did not hold {self.target_temperature_K:g} K ± "
                    f"{self.tolerance_K:g} K within timeout_s = {self.timeout_s:g} s "
                    f"(last reading {temperature:.2f} K)"
                )
            self.wait(self.sample_interval_s)
