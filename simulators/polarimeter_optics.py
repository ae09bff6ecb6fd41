"""Half-wave plate, polarising beam splitter and balanced detector (docs/physics.md §4).

The two arms get (P/2)(1 ± sin(2θ + 4(ϑ − ϑ₀))); the PDB450A gives V_diff = G_diff ℛ (P₊ − P₋)
on its RF output and V_sum = G_sum ℛ (P₊ + P₋) on its monitor outputs. Light noise is added where
it arises, in the photocurrents: shot noise 2eI and the detector's noise-equivalent power.

Behind a detection chain (`analysis.detection`: the RF output's pole, the digitiser's
decimation with or without averaging) the difference current's white noise is generated exactly
through it (`ChainedWhiteNoise`), and the atomic angle arrives already through it (the lab's
`AngleNoise`). The chain acts on the current ℛP sin(2θ + φ); taking sin of the chained angle
instead differs by ½|f″| times the angle's variance within the chain's memory (one output
interval plus 1/ω_c), ≤ 2 sin|2θ + φ|·Var ≤ 2·(2σ_θ)² rad: below 10⁻¹⁰ of ℛP for σ_θ ≈ 3 µrad,
far below one ADC code. The monitor (sum) outputs are not put through the chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hotspin.analysis.checks import check_positive, check_range
from hotspin.analysis.constants import ELEMENTARY_CHARGE_e
from hotspin.analysis.detection import DetectionChain, detected_white_noise
from hotspin.analysis.optics import DETECTOR_SATURATION_V
from scipy import linalg, signal

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


class ChainedWhiteNoise:
    """White noise of one-sided PSD 1 behind a detection chain, exact, carried across records.

    `detected_white_noise` gives its exact discrete form: the pole's Ornstein–Uhlenbeck state
    s_{k+1} = a s_k + w_k, the sample y_k = h s_k + u_k with (w_k, u_k) jointly Gaussian. It is
    generated in its innovations form, one Gaussian per sample: ŝ = E[s | y so far] with steady
    error p (the scalar Riccati equation), y_k = h ŝ_k + e_k, ŝ_{k+1} = a ŝ_k + κ e_k — an
    ARMA(1, 1) filter whose state is h ŝ. A gap keeps it exact: the law of s after it is
    N(a_t ŝ, a_t² p + V(1 − a_t²)) with V the stationary variance, wider than p, so ŝ is redrawn
    inside it (as `spin_noise.AngleNoise` does). A change of chain (gain or decimation) draws ŝ
    afresh from its stationary law N(0, V − p): the pole forgets in 1/ω_c ≤ 1.6 µs.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._chain: DetectionChain | None = None
        self._estimate = 0.0

    def _use(self, chain: DetectionChain) -> None:
        if chain == self._chain:
            return
        model = detected_white_noise(chain)
        a, h = float(model.transition[0, 0]), float(model.output[0])
        W, cross, R = (float(v) for v in (model.noise[0, 0], model.noise[0, 1], model.noise[1, 1]))
        p = float(
            linalg.solve_discrete_are(
                np.array([[a]]), np.array([[h]]), np.array([[W]]), np.array([[R]]),
                s=np.array([[cross]]),
            )[0, 0]
        )  # fmt: skip
        self._sd = math.sqrt(h * h * p + R)
        self._carry, self._gain, self._output = a, (a * p * h + cross) / self._sd**2, h
        self._error, self._variance = p, float(model.stationary[0, 0])
        self._chain = chain
        self._estimate = math.sqrt(max(self._variance - p, 0.0)) * float(self.rng.standard_normal())

    def advance(self, duration_s: float) -> None:
        """Let the pole relax for ``duration_s`` without samples, exactly."""
        if self._chain is None or duration_s <= 0.0:
            return
        decay = math.exp(-self._chain.pole_rate * duration_s)
        wider = decay**2 * self._error + self._variance * (1 - decay**2) - self._error
        spread = math.sqrt(max(wider, 0.0))
        self._estimate = decay * self._estimate + spread * float(self.rng.standard_normal())

    def block(self, n: int, chain: DetectionChain) -> np.ndarray:
        """Return the next ``n`` samples (unit one-sided PSD) behind ``chain``."""
        self._use(chain)
        a, h = self._carry, self._output
        innovations = self.rng.standard_normal(n, dtype=np.float32) * np.float32(self._sd)
        # y = e + z, z' = (hκ − a) e + a y: lfilter's transposed form, its state z = h ŝ (h is
        # 1 without averaging, the mean of the D pole weights with it: never 0).
        out, final = signal.lfilter(
            [1.0, h * self._gain - a], [1.0, -a], innovations, zi=[h * self._estimate]
        )
        self._estimate = float(final[0]) / h
        return out


class BalancedPolarimeter:
    """Turns the atomic rotation angle and the transmitted power into the detector's voltages."""

    def __init__(self, config: PolarimeterConfig) -> None:
        self.config = config
        self._rf_noise: ChainedWhiteNoise | None = None

    def advance(self, duration_s: float) -> None:
        """Let the detector's pole relax through a stretch without samples."""
        if self._rf_noise is not None:
            self._rf_noise.advance(duration_s)

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
        chain: DetectionChain | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (V_diff, V_sum) for a block of atomic angles and the power at the detector.

        With ``chain`` the angle is the one behind it and the difference current's noise is put
        through it; without, the detector is ideal and the noise white up to f_s/2.
        """
        c = self.config
        check_range("power_W", power_W, 0.0, 10.0, "W")
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        n = atomic_angle_rad.shape[0]
        current = c.responsivity_A_per_W * power_W
        density = self.current_noise_density_A_per_rtHz(power_W)
        # A one-sided density S sampled at f_s has variance S f_s/2 per sample. float32 draws:
        # their resolution (2⁻²⁴) is far below the ADC's (2⁻¹³ of full scale).
        sigma_current = density * math.sqrt(fs / 2)
        if chain is None:
            noise_diff = rng.standard_normal(n, dtype=np.float32) * np.float32(sigma_current)
        else:
            if self._rf_noise is None or self._rf_noise.rng is not rng:
                self._rf_noise = ChainedWhiteNoise(rng)
            noise_diff = density * self._rf_noise.block(n, chain)
        phase = 2.0 * atomic_angle_rad + imbalance_rad(hwp_angle_deg, c.hwp_zero_deg)
        v_diff = np.sin(phase)
        v_diff *= current
        v_diff += noise_diff
        v_diff *= c.gain_diff_V_per_A
        v_sum = rng.standard_normal(n, dtype=np.float32).astype(float)
        v_sum *= sigma_current
        v_sum += current
        v_sum *= c.gain_sum_V_per_A
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
