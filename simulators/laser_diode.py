"""The probe laser's physics: an extended-cavity diode laser tuned by current, temperature, piezo.

The external cavity has modes spaced by its free spectral range; the cavity (piezo, and a little
the current) moves the modes, while the diode's gain peak moves with current and temperature.
The laser runs on the cavity mode nearest the gain peak, so tuning is linear inside a mode-hop-free
window and jumps by one free spectral range outside it (docs/physics.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass

from hotspin.analysis.checks import check_positive, check_range
from hotspin.analysis.constants import SPEED_OF_LIGHT_c
from hotspin.analysis.optics import probe_frequency_Hz


@dataclass(frozen=True)
class LaserDiodeConfig:
    """Tuning and power characteristics of a DL pro 795 nm head behind its delivery optics."""

    nominal_current_A: float = 0.120
    nominal_temperature_C: float = 22.0
    detuning_at_nominal_Hz: float = 60e9  # from the D1 F=2 line, at nominal settings and 0 V piezo
    cavity_current_tuning_Hz_per_A: float = -0.3e12  # the cavity mode moves 0.3 GHz/mA
    cavity_piezo_tuning_Hz_per_V: float = 0.25e9
    # The diode's own modes follow the current a little faster than the external cavity does;
    # the mismatch, 0.05 GHz/mA, leaves a ±50 mA mode-hop-free window around the nominal current.
    gain_current_tuning_Hz_per_A: float = -0.35e12
    gain_temperature_tuning_Hz_per_K: float = -25e9
    free_spectral_range_Hz: float = 5.0e9
    # Fraction of the piezo's cavity tuning that the diode's gain follows: the DL pro's current
    # feed-forward keeps the laser on one mode over a wide piezo scan (1 = perfect).
    piezo_feedforward: float = 1.0
    threshold_current_A: float = 0.040
    slope_efficiency_W_per_A: float = 0.8
    delivery_efficiency: float = 0.02  # fibre, isolator and attenuator between head and cell
    max_current_A: float = 0.180  # the head's absolute maximum

    def __post_init__(self) -> None:
        check_positive("free_spectral_range_Hz", self.free_spectral_range_Hz, "Hz")
        check_positive("threshold_current_A", self.threshold_current_A, "A")
        check_positive("slope_efficiency_W_per_A", self.slope_efficiency_W_per_A, "W/A")
        check_range("delivery_efficiency", self.delivery_efficiency, 0.0, 1.0, low_open=True)
        check_positive("max_current_A", self.max_current_A, "A")


class LaserDiode:
    """The laser's settings and what comes out of it: detuning and power at the cell."""

    def __init__(self, config: LaserDiodeConfig) -> None:
        self.config = config
        self.current_A = config.nominal_current_A
        self.temperature_C = config.nominal_temperature_C
        self.piezo_V = 0.0
        self.emission_enabled = False
        self.interlock_closed = True

    def _cavity_and_gain_offsets_Hz(self) -> tuple[float, float]:
        c = self.config
        d_current = self.current_A - c.nominal_current_A
        cavity = c.cavity_current_tuning_Hz_per_A * d_current + c.cavity_piezo_tuning_Hz_per_V * (
            self.piezo_V
        )
        gain = (
            c.gain_current_tuning_Hz_per_A * d_current
            + c.gain_temperature_tuning_Hz_per_K * (self.temperature_C - c.nominal_temperature_C)
            + c.piezo_feedforward * c.cavity_piezo_tuning_Hz_per_V * self.piezo_V
        )
        return cavity, gain

    @property
    def mode_index(self) -> int:
        """Return how many cavity modes the laser has hopped from the nominal one."""
        cavity, gain = self._cavity_and_gain_offsets_Hz()
        return round((gain - cavity) / self.config.free_spectral_range_Hz)

    @property
    def detuning_Hz(self) -> float:
        """Return the optical detuning from the D1 F=2 line in Hz."""
        cavity, _ = self._cavity_and_gain_offsets_Hz()
        hops = self.mode_index * self.config.free_spectral_range_Hz
        return self.config.detuning_at_nominal_Hz + cavity + hops

    @property
    def emitting(self) -> bool:
        """Return True when light comes out: emission enabled, interlock closed, above threshold."""
        return (
            self.emission_enabled
            and self.interlock_closed
            and self.current_A > self.config.threshold_current_A
        )

    @property
    def output_power_W(self) -> float:
        """Return the optical power out of the laser head in W."""
        if not self.emitting:
            return 0.0
        c = self.config
        return c.slope_efficiency_W_per_A * (
            min(self.current_A, c.max_current_A) - (c.threshold_current_A)
        )

    @property
    def power_at_cell_W(self) -> float:
        """Return the probe power entering the cell in W."""
        return self.output_power_W * self.config.delivery_efficiency

    @property
    def wavelength_m(self) -> float:
        """Return the vacuum wavelength of the light in m."""
        return SPEED_OF_LIGHT_c / probe_frequency_Hz(self.detuning_Hz)
