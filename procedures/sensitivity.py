"""Magnetic sensitivity of spin-noise magnetometry from a calibration tone through one coil.

An unpolarised vapour has no mean spin, so a field tone faster than the spin dynamics gives no
linear Faraday signal: without a pump, the field is read from the Larmor frequency of the spin
noise. The calibration tone is therefore applied as a slow square wave of the field magnitude
(±ΔB about the bias, through the bias coil, one spectrum per half-period). Its response is the
step of the fitted Larmor frequency, ∂f/∂B; the noise floor is the scatter of the Larmor
frequency about the square wave, σ_f for a spectrum that integrates T seconds of the stream
(its segments' samples over the sample rate). The
sensitivity is δB = σ_f √T / (∂f/∂B) in fT/√Hz, beside the field resolution the spectra's own
fits claim (σ_|B| √T).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.magnetometry import FEMTOTESLA, field_resolution_fT_per_rtHz
from hotspin.procedures.spectroscopy import SpectrumProcedure
from pymeasure.experiment import FloatParameter, IntegerParameter, ListParameter

AXES = {"x": 0, "y": 1}


class Sensitivity(SpectrumProcedure):
    """δB in fT/√Hz from a square-wave calibration tone and the Larmor-frequency noise floor."""

    NAME = "sensitivity"
    SUMMARY = "square-wave calibration tone through one coil; response ∂f/∂B, noise, fT/√Hz"

    axis = ListParameter(
        "coil of the bias and the tone (across the probe)", choices=list(AXES), default="x"
    )
    bias_nT = FloatParameter("bias field", units="nT", minimum=10.0, maximum=5000.0, default=500.0)
    tone_nT = FloatParameter(
        "tone amplitude ΔB (the field steps by 2ΔB)",
        units="nT",
        minimum=0.1,
        maximum=1000.0,
        default=20.0,
    )
    periods = IntegerParameter(
        "tone periods (two spectra each)", minimum=2, maximum=1000, default=6
    )

    def _direction(self) -> np.ndarray:
        unit = np.zeros(3)
        unit[AXES[self.axis]] = 1.0
        return unit

    def check_limits(self, station: Any) -> None:
        """Refuse a bias plus tone the coil cannot reach, or a tone larger than the bias."""
        if self.tone_nT >= self.bias_nT:
            raise ParameterError(
                f"tone_nT = {self.tone_nT:g} must be below bias_nT = {self.bias_nT:g} nT"
            )
        reach_nT = 1e9 * station.coils.max_field_T(self._direction())
        if self.bias_nT + self.tone_nT > reach_nT:
            raise ParameterError(
                f"bias_nT + tone_nT = {self.bias_nT + self.tone_nT:g} is outside the allowed "
                f"range [0, {reach_nT:.4g}] nT (the coils' current limit along {self.axis})"
            )

    def execute(self) -> None:
        """Alternate the field, fit the Larmor frequency of each spectrum, demodulate."""
        signs, larmor, sigma, resolution, durations = [], [], [], [], []
        halves = 2 * int(self.periods)
        for half in range(halves):
            sign = 1.0 if half % 2 == 0 else -1.0
            field = (self.bias_nT + sign * self.tone_nT) * self._direction()
            self.station.coils.set_field(1e-9 * field)
            step = self.measure_spectrum(progress=(half / halves, (half + 1) / halves))
            self.record_spin_noise(step, {"tone_sign": (sign, ""), "applied_field_nT": (
                float(np.linalg.norm(field)), "nT")})  # fmt: skip
            f = step.fit.larmor_frequency_Hz
            if not (math.isfinite(f.value) and f.uncertainty > 0):
                raise RuntimeError("the Larmor line was not resolved; raise bias_nT or averages")
            signs.append(sign)
            larmor.append(f.value)
            sigma.append(f.uncertainty)
            # The stretch of stream the spectrum integrates: its samples over the sample rate.
            duration_s = step.spectrum.samples / float(step.spectrum.sample_rate_Hz)
            durations.append(duration_s)
            resolution.append(field_resolution_fT_per_rtHz(step.fit, duration_s))
        s, f = np.array(signs), np.array(larmor)
        high, low = f[s > 0], f[s < 0]
        response = (high.mean() - low.mean()) / (2e-9 * self.tone_nT)  # Hz/T
        scatter = np.concatenate([high - high.mean(), low - low.mean()])
        sigma_f = float(np.sqrt(scatter @ scatter / (scatter.size - 2)))
        response_error = sigma_f * math.sqrt(1 / high.size + 1 / low.size) / (2e-9 * self.tone_nT)
        integration_s = float(np.mean(durations))
        sensitivity = sigma_f * math.sqrt(integration_s) / abs(response) / FEMTOTESLA
        self.record_summary(
            {
                "response_Hz_per_nT": (1e-9 * response, 1e-9 * response_error, "Hz/nT"),
                "larmor_scatter_Hz": (sigma_f, sigma_f / math.sqrt(2 * (scatter.size - 2)), "Hz"),
                "sensitivity_fT_per_rtHz": (
                    sensitivity,
                    sensitivity * math.hypot(1 / math.sqrt(2 * (scatter.size - 2)),
                                             response_error / abs(response)),
                    "fT/rtHz",
                ),
                "fit_field_resolution_fT_per_rtHz": (
                    float(np.mean(resolution)), float(np.std(resolution)), "fT/rtHz"
                ),
            }
        )  # fmt: skip
        self.progress(1.0, f"sensitivity {sensitivity:.3g} fT/rtHz")
