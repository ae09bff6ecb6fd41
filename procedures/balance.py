"""Polarimeter balance: turn the half-wave plate to null V_diff/V_sum (coarse scan, then a fit).

The normalised imbalance r(ϑ) = (V_diff/G_diff)/(V_sum/G_sum) = sin(4(ϑ − ϑ₀)) crosses zero every
45° of plate angle. The difference output saturates the digitiser a fraction of a degree away
from balance, so the coarse scan reads only the sign of r; a bisection brings the plate inside
the linear range, where a straight-line fit of a few points gives ϑ₀ and its uncertainty.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hotspin.procedures.base import HotspinProcedure
from pymeasure.experiment import FloatParameter, IntegerParameter

MAX_BISECTIONS = 30
MIN_SUM_FRACTION = 0.01  # of the sum channel's full scale


class Balance(HotspinProcedure):
    """Find the half-wave-plate angle at which the balanced polarimeter reads zero."""

    NAME = "balance"
    SUMMARY = "turn the half-wave plate to null V_diff/V_sum; records the curve and the residual"
    WATCHES = ("interlock",)
    CALIBRATES = ("polarimeter.plate_zero_deg",)

    start_deg = FloatParameter(
        "first plate angle of the coarse scan", units="deg", minimum=0.0, maximum=359.0,
        default=0.0,
    )  # fmt: skip
    span_deg = FloatParameter(
        "angle covered by the coarse scan (45 deg holds a zero crossing)", units="deg",
        minimum=5.0, maximum=180.0, default=50.0,
    )  # fmt: skip
    coarse_step_deg = FloatParameter(
        "coarse scan step", units="deg", minimum=0.1, maximum=10.0, default=2.5
    )
    fine_span_deg = FloatParameter(
        "angle covered by the final fit", units="deg", minimum=0.002, maximum=1.0, default=0.04
    )
    fine_points = IntegerParameter("points of the final fit", minimum=3, maximum=41, default=7)
    samples = IntegerParameter(
        "digitiser samples per point", minimum=256, maximum=16384, default=4096
    )

    def _measure(self, angle_deg: float) -> tuple[float, float, bool]:
        """Turn the plate, record, and return (imbalance, its standard error, clipped)."""
        self.check_stop()
        self.watch()
        polarimeter = self.station.polarimeter
        polarimeter.plate_angle_deg = angle_deg
        record = polarimeter.acquire(self.samples)
        light_V = float(np.mean(record.v_sum))
        # The sum must stand well above the digitiser's resolution to normalise by it.
        if light_V < MIN_SUM_FRACTION * record.full_scale_V[1]:
            raise RuntimeError(
                f"no light on the detector: V_sum = {light_V:.3g} V (below "
                f"{MIN_SUM_FRACTION * record.full_scale_V[1]:.2g} V); check the probe path"
            )
        imbalance = polarimeter.imbalance(record)
        ratio = (
            record.v_diff
            * (polarimeter.config.gain_sum_V_per_A)
            / (polarimeter.config.gain_diff_V_per_A * np.mean(record.v_sum))
        )
        error = float(np.std(ratio) / math.sqrt(ratio.size))
        self.record_step(
            {
                "plate_angle_deg": (angle_deg % 360.0, "deg"),
                "imbalance": (imbalance, ""),
                "imbalance_error": (error, ""),
                "clipped": (float(record.clipped), ""),
            }
        )
        return imbalance, error, record.clipped

    def calibration(self) -> dict[str, Any]:
        """Return the balanced plate angle, the station's starting point for the next balance."""
        return {"polarimeter.plate_zero_deg": round(self.station.polarimeter.balanced_angle_deg, 4)}

    def execute(self) -> None:
        """Coarse scan for a rising zero crossing, bisect into the linear range, fit a line."""
        self.ensure_probe_light()
        angles = np.arange(
            self.start_deg, self.start_deg + self.span_deg + 1e-9, self.coarse_step_deg
        )
        previous: tuple[float, float] | None = None
        bracket = None
        for k, angle in enumerate(angles):
            imbalance, _, _ = self._measure(float(angle))
            self.progress(0.5 * (k + 1) / len(angles), f"coarse scan {angle:.1f} deg")
            if previous is not None and previous[1] < 0 <= imbalance:
                bracket = (previous[0], float(angle))
                break
            previous = (float(angle), imbalance)
        if bracket is None:
            raise RuntimeError(
                f"no rising zero crossing of V_diff between {self.start_deg:g} and "
                f"{self.start_deg + self.span_deg:g} deg: is there light on the detector?"
            )
        low, high = bracket
        centre = 0.5 * (low + high)
        for _ in range(MAX_BISECTIONS):
            centre = 0.5 * (low + high)
            imbalance, _, clipped = self._measure(centre)
            if not clipped and high - low <= 2 * self.fine_span_deg:
                break
            if imbalance < 0:
                low = centre
            else:
                high = centre
        self.progress(0.75, "fitting the balance point")
        offsets = np.linspace(-0.5, 0.5, self.fine_points) * self.fine_span_deg
        points = [(centre + d, *self._measure(centre + d)) for d in offsets]
        usable = [(a, r, e) for a, r, e, clipped in points if not clipped]
        if len(usable) < 3:
            raise RuntimeError(
                "the fine scan is clipped: lower the PDB450A gain or fine_span_deg "
                f"(= {self.fine_span_deg:g} deg)"
            )
        a, r, e = (np.array(column) for column in zip(*usable, strict=True))
        (slope, intercept), covariance = np.polyfit(a - centre, r, 1, w=1 / e, cov="unscaled")
        zero = centre - intercept / slope
        zero_error = math.sqrt(
            covariance[1, 1] / slope**2
            + intercept**2 * covariance[0, 0] / slope**4
            - 2 * intercept * covariance[0, 1] / slope**3
        )
        residual, residual_error, _ = self._measure(zero)
        self.station.polarimeter.balanced_angle_deg = zero % 360.0
        self.record_summary(
            {
                "balance_angle_deg": (zero % 360.0, zero_error, "deg"),
                "slope_per_deg": (slope, math.sqrt(covariance[0, 0]), "1/deg"),
                "residual_imbalance": (residual, residual_error, ""),
                "residual_rotation_rad": (0.5 * residual, 0.5 * residual_error, "rad"),
            }
        )
        self.progress(1.0, f"balanced at {zero % 360.0:.4f} deg")
