"""Spin-noise spectrum: N averaged digitiser records → calibrated PSD → model fit → one row."""

from __future__ import annotations

from hotspin.procedures.spectroscopy import BiasField, SpectrumProcedure


class SpinNoise(BiasField, SpectrumProcedure):
    """One spin-noise spectrum of the rotation angle, fitted with the two-manifold model."""

    NAME = "spin_noise"
    SUMMARY = "one averaged spin-noise spectrum and its model fit (Larmor, widths, R_SE, N)"

    def execute(self) -> None:
        """Set the bias field, then measure, fit and record one spectrum."""
        self.apply_bias_field()
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
        self.progress(1.0, f"Larmor {fit.larmor_frequency_Hz}")
