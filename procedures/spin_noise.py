"""Spin-noise spectrum: N averaged digitiser records → calibrated PSD → model fit → one row."""

from __future__ import annotations

from procedures.spectroscopy import SpectrumProcedure


class SpinNoise(SpectrumProcedure):
    """One spin-noise spectrum of the rotation angle, fitted with the two-manifold model."""

    NAME = "spin_noise"
    SUMMARY = "one averaged spin-noise spectrum and its model fit (Larmor, widths, R_SE, N)"

    def execute(self) -> None:
        """Measure, fit and record one spectrum."""
        step = self.measure_spectrum()
        self.record_spin_noise(step)
        fit = step.fit
        self.record_summary(
            {
                name: (estimate.value, estimate.uncertainty, estimate.unit)
                for name, estimate in fit.parameters.items()
            }
            | {
                "larmor_frequency_Hz": (
                    fit.larmor_frequency_Hz.value, fit.larmor_frequency_Hz.uncertainty, "Hz"
                ),
                "linewidth_hwhm_Hz": (
                    fit.linewidth_hwhm_Hz.value, fit.linewidth_hwhm_Hz.uncertainty, "Hz"
                ),
            }
        )  # fmt: skip
        self.progress(1.0, f"Larmor {fit.larmor_frequency_Hz} Hz")
