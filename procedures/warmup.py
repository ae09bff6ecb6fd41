"""Cell warm-up: ramp the Lake Shore setpoint, then wait until the temperature holds still."""

from __future__ import annotations

from typing import Any, ClassVar

from hotspin.analysis.checks import ParameterError
from hotspin.procedures.base import HotspinProcedure
from pymeasure.experiment import FloatParameter


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

    STATION_MAXIMA: ClassVar[dict[str, str]] = {"target_temperature_K": "heater.max_temperature_K"}

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
        temperature, elapsed = settle_temperature(
            self,
            self.target_temperature_K,
            self.ramp_rate_K_per_min,
            self.tolerance_K,
            self.dwell_s,
            self.sample_interval_s,
            self.timeout_s,
        )
        self.record_summary(
            {
                "final_temperature_K": (temperature, self.tolerance_K, "K"),
                "time_to_stable_s": (elapsed, self.sample_interval_s, "s"),
            }
        )


def settle_temperature(
    procedure: HotspinProcedure,
    target_K: float,
    ramp_rate_K_per_min: float,
    tolerance_K: float,
    dwell_s: float,
    sample_interval_s: float,
    timeout_s: float,
    progress: tuple[float, float] = (0.0, 1.0),
    record_readings: bool = True,
) -> tuple[float, float]:
    """Ramp the cell to ``target_K`` and wait until it holds within the tolerance for the dwell.

    With ``record_readings`` every reading is a recorded step (time, temperature, setpoint,
    heater output). Returns the last temperature and the time it took; raises TimeoutError past
    ``timeout_s``.
    """
    heater, clock = procedure.station.heater, procedure.station.clock
    heater.set_ramp_rate(ramp_rate_K_per_min)
    heater.setpoint_K = target_K
    heater.heater_range = "high"
    start = clock.now()
    start_temperature = heater.temperature_K
    stable_since: float | None = None
    while True:
        now = clock.now() - start
        temperature = heater.temperature_K
        if record_readings:
            procedure.record_step(
                {
                    "time_s": (now, "s"),
                    "temperature_K": (temperature, "K"),
                    "setpoint_K": (heater.setpoint_K, "K"),
                    "heater_output_percent": (heater.heater_output_percent, "%"),
                }
            )
        if abs(temperature - target_K) <= tolerance_K:
            stable_since = now if stable_since is None else stable_since
        else:
            stable_since = None
        held = 0.0 if stable_since is None else now - stable_since
        span = abs(target_K - start_temperature) or 1.0
        approach = max(1.0 - abs(target_K - temperature) / span, 0.0)
        fraction = 0.8 * approach + 0.2 * min(held / max(dwell_s, 1e-9), 1.0)
        procedure.progress(
            progress[0] + (progress[1] - progress[0]) * fraction,
            f"T = {temperature:.2f} K, stable for {held:.0f} s",
        )
        if stable_since is not None and held >= dwell_s:
            return temperature, now
        if now > timeout_s:
            raise TimeoutError(
                f"the cell did not hold {target_K:g} K ± {tolerance_K:g} K within "
                f"timeout_s = {timeout_s:g} s (last reading {temperature:.2f} K)"
            )
        procedure.wait(sample_interval_s)
