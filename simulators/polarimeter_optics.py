"""Half-wave plate, polarising beam splitter and balanced detector (docs/physics.md §4).

The two arms get (P/2)(1 ± sin(2θ + 4(ϑ − ϑ₀))); the PDB450A gives V_diff = G_diff ℛ (P₊ − P₋)
on its RF output and V_sum = G_sum ℛ (P₊ + P₋) on its monitor outputs. Light noise is added where
it arises, in the photocurrents: shot noise 2eI and the detector's noise-equivalent power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hotspin.analysis.checks import check_positive, check_range
from hotspin.analysis.constants import ELEMENTARY_CHARGE_e
from hotspin.analysis.optics import DETECTOR_SATURATION_V
from scipy import signal

# Corner frequencies of the relaxation processes that make up 1/f noise, per decade: the sum of
# their Lorentzians ripples about A/f by 5e-5 (with 2 per decade 8e-4, which at A/f ≫ the floor
# is already visible in a fit); near the band's corners it falls short by ≈ f_low/f and f/f_high.
_FLICKER_PROCESSES_PER_DECADE = 4


class FlickerNoise:
    """Technical 1/f noise of the polarisation angle (pointing, stress birefringence), exact.

    One-sided S(f) = A/f between the band's corners, built as a sum of Ornstein–Uhlenbeck
    processes with log-spaced rates γ_j (ratio r) and equal variances A ln r: Σ_j 4Vγ_j/(γ_j² + ω²)
    ≈ (V/ln r)/f. Each process is sampled exactly, x_{k+1} = e^{−γΔt} x_k + √(V(1 − e^{−2γΔt})) ξ,
    and carried across records and the gaps between them.
    """

    def __init__(
        self,
        coefficient_rad2: float,
        band_Hz: tuple[float, float],
        rng: np.random.Generator,
    ) -> None:
        self.coefficient_rad2 = check_range(
            "flicker_coefficient_rad2", coefficient_rad2, 0.0, 1.0, "rad²"
        )
        low, high = (float(f) for f in band_Hz)
        check_positive("flicker_band_Hz[0]", low, "Hz")
        check_range("flicker_band_Hz[1]", high, low, math.inf, "Hz", low_open=True, high_open=True)
        count = max(1, math.ceil(_FLICKER_PROCESSES_PER_DECADE * math.log10(high / low)))
        ratio = (high / low) ** (1.0 / count)
        self.rates = 2 * math.pi * low * ratio ** np.arange(count + 1)
        self.variance = self.coefficient_rad2 * math.log(ratio)
        self.rng = rng
        self._state = math.sqrt(self.variance) * rng.standard_normal(self.rates.size)

    def advance(self, duration_s: float) -> None:
        """Let the processes evolve for ``duration_s`` without samples."""
        decay = np.exp(-self.rates * check_range("duration_s", duration_s, 0.0, math.inf, "s"))
        fresh = self.rng.standard_normal(self.rates.size)
        self._state = decay * self._state + np.sqrt(self.variance * (1 - decay**2)) * fresh

    def block(self, n: int, sample_rate_Hz: float) -> np.ndarray:
        """Return the next ``n`` samples of the 1/f angle noise in rad; the state carries on."""
        total = np.zeros(n)
        if self.coefficient_rad2 == 0.0:
            return total
        decay = np.exp(-self.rates / check_positive("sample_rate_Hz", sample_rate_Hz, "Hz"))
        kicks = np.sqrt(self.variance * (1 - decay**2))
        for j, (a, kick) in enumerate(zip(decay, kicks, strict=True)):
            # x_{k+1} = a x_k + kick ξ_k; lfilter's output i is x_{i+1}, started from x_0.
            following, _ = signal.lfilter(
                [kick], [1.0, -a], self.rng.standard_normal(n), zi=[a * self._state[j]]
            )
            total[0] += self._state[j]
            total[1:] += following[:-1]
            self._state[j] = following[-1]
        return total


@dataclass(frozen=True)
class PolarimeterConfig:
    """Calibration of the balanced detector and the zero of the half-wave plate."""

    responsivity_A_per_W: float = 0.52
    gain_diff_V_per_A: float = 1.0e5  # RF output, set by the gain switch
    gain_sum_V_per_A: float = 1.0e3  # monitor outputs
    nep_W_per_rtHz: float = 5e-12
    hwp_zero_deg: float = 12.3  # plate angle ϑ₀ at which the polarimeter is balanced
    optics_transmission: float = 0.95

    def __post_init__(self) -> None:
        check_positive("responsivity_A_per_W", self.responsivity_A_per_W, "A/W")
        check_positive("gain_diff_V_per_A", self.gain_diff_V_per_A, "V/A")
        check_positive("gain_sum_V_per_A", self.gain_sum_V_per_A, "V/A")
        check_range("nep_W_per_rtHz", self.nep_W_per_rtHz, 0.0, 1e-6, "W/√Hz")
        check_range("hwp_zero_deg", self.hwp_zero_deg, -360.0, 360.0, "deg")
        check_range("optics_transmission", self.optics_transmission, 0.0, 1.0, low_open=True)


def imbalance_rad(hwp_angle_deg: float, hwp_zero_deg: float) -> float:
    """Return the polarimeter's rotation offset 4(ϑ − ϑ₀) in rad."""
    return 4.0 * math.radians(hwp_angle_deg - hwp_zero_deg)


class BalancedPolarimeter:
    """Turns the atomic rotation angle and the transmitted power into the detector's voltages."""

    def __init__(self, config: PolarimeterConfig) -> None:
        self.config = config

    def current_noise_density_A_per_rtHz(self, power_W: float) -> float:
        """Return the one-sided photocurrent noise √(2eI + (ℛ NEP)²) in A/√Hz."""
        c = self.config
        current = c.responsivity_A_per_W * power_W
        electronic = c.responsivity_A_per_W * c.nep_W_per_rtHz
        return math.sqrt(2 * ELEMENTARY_CHARGE_e * current + electronic**2)

    def voltages(
        self,
        atomic_angle_rad: np.ndarray,
        power_W: float,
        hwp_angle_deg: float,
        sample_rate_Hz: float,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (V_diff, V_sum) for a block of atomic angles and the power at the detector."""
        c = self.config
        check_range("power_W", power_W, 0.0, 10.0, "W")
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        n = atomic_angle_rad.shape[0]
        current = c.responsivity_A_per_W * power_W
        # A one-sided density S sampled at f_s has variance S f_s/2 per sample.
        sigma_current = self.current_noise_density_A_per_rtHz(power_W) * math.sqrt(fs / 2)
        noise = sigma_current * rng.standard_normal((2, n))
        phase = 2.0 * atomic_angle_rad + imbalance_rad(hwp_angle_deg, c.hwp_zero_deg)
        v_diff = c.gain_diff_V_per_A * (current * np.sin(phase) + noise[0])
        v_sum = c.gain_sum_V_per_A * (current + noise[1])
        np.clip(v_diff, -DETECTOR_SATURATION_V, DETECTOR_SATURATION_V, out=v_diff)
        np.clip(v_sum, -DETECTOR_SATURATION_V, DETECTOR_SATURATION_V, out=v_sum)
        return v_diff, v_sum

    def difference_voltage_at_balance(
        self, observed_angle_rad: np.ndarray, power_W: float
    ) -> np.ndarray:
        """Return float32 V_diff = G ℛ P sin(2θ) at balance, from an angle holding the light noise.

        At balance the shot and detector noise of the difference current is exactly an angle
        noise of the same spectrum (S_θ = S_I/(2ℛP)²), so a generator of the observed angle
        (`FastAngleNoise`) feeds the detector without a second noise draw.
        """
        c = self.config
        current = c.responsivity_A_per_W * check_range("power_W", power_W, 0.0, 10.0, "W")
        v_diff = np.multiply(observed_angle_rad, 2.0, dtype=np.float32)
        np.sin(v_diff, out=v_diff)
        v_diff *= np.float32(c.gain_diff_V_per_A * current)
        np.clip(v_diff, -DETECTOR_SATURATION_V, DETECTOR_SATURATION_V, out=v_diff)
        return v_diff

    def sum_voltage(
        self, n: int, power_W: float, sample_rate_Hz: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Return float32 V_sum = G_sum ℛ P plus its own shot and detector noise, n samples."""
        c = self.config
        current = c.responsivity_A_per_W * check_range("power_W", power_W, 0.0, 10.0, "W")
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        sigma_current = self.current_noise_density_A_per_rtHz(power_W) * math.sqrt(fs / 2)
        v_sum = rng.standard_normal(n, dtype=np.float32)
        v_sum *= np.float32(c.gain_sum_V_per_A * sigma_current)
        v_sum += np.float32(c.gain_sum_V_per_A * current)
        np.clip(v_sum, -DETECTOR_SATURATION_V, DETECTOR_SATURATION_V, out=v_sum)
        return v_sum
