"""Quantities derived from fitted spectra: γ and q, R_SE, density, SNR, magnetic sensitivity.

* Larmor frequency against applied field: f = (γ/2π)|B| + f₀, weighted straight line. The
  slowing-down factor is quoted against the free electron of the Rb ground state,
  q = γ_e/γ with γ_e = g_J μ_B/ħ (28.025 Hz/nT): q ≈ 4.006 (≈ 2I+1) for the F = 2 line in slow
  exchange, ≈ 6.015 in SERF (the textbook 6 leaves out the nuclear moment, docs/physics.md §3).
* SERF quadratic broadening (docs/physics.md §3, I = 3/2, low polarisation): the narrow line decays
  at Γ = Γ₀ + (5/3) ω²/R_SE with Γ₀ = R_SD′/6 + R_D, so R_SE = (5/3)/slope of Γ against ω².
* Density: from the temperature by the vapour-pressure curve (analysis.vapour), or from a
  fitted R_SE by n = R_SE/(σ_SE v̄).
* Spin-noise-to-shot-noise ratio: the atomic PSD at the Larmor line over the white floor.
* Magnetic sensitivity: δB = √S_θ(f)/|∂θ/∂B(f)|, the angle noise over the measured response
  to a calibration field, in fT/√Hz; and the field resolution of spin-noise (Larmor-frequency)
  magnetometry, σ_|B|·√T for a spectrum from a record of duration T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis import vapour
from hotspin.analysis.checks import check_positive, check_range
from hotspin.analysis.fits import Estimate, SpinNoiseFit
from scipy import stats

# SERF quadratic broadening coefficient for I = 3/2 at low polarisation (docs/physics.md §3).
SERF_BROADENING_COEFFICIENT = 5.0 / 3.0
# A sweep's spectra count as SERF below this ω/R_SE (the quadratic broadening holds there).
SERF_OMEGA_OVER_RSE = 0.08
FEMTOTESLA = 1e-15


def _finite_vector(name: str, values: np.ndarray) -> np.ndarray:
    """Return a one-dimensional finite float array, else raise ValueError naming it."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty one-dimensional array")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


@dataclass(frozen=True)
class LineFit:
    """A weighted straight line y = slope·x + intercept with absolute uncertainties."""

    slope: Estimate
    intercept: Estimate
    chi2: float
    dof: int
    p_value: float


@dataclass(frozen=True)
class PolynomialFit:
    """y = Σ c_p x^p over chosen powers p, weighted, with absolute uncertainties."""

    terms: dict[int, Estimate]  # c_p by power p
    chi2: float
    dof: int
    p_value: float


def weighted_polynomial(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray, powers: tuple[int, ...]
) -> PolynomialFit:
    """Fit y = Σ_p c_p x^p (the given powers) by least squares weighted with σ of y."""
    xs, ys, ss = _finite_vector("x", x), _finite_vector("y", y), _finite_vector("sigma", sigma)
    if not xs.size == ys.size == ss.size:
        raise ValueError(f"x, y and sigma have {xs.size}, {ys.size} and {ss.size} entries")
    if np.unique(xs).size < len(powers):
        raise ValueError(f"{len(powers)} terms need at least {len(powers)} distinct x values")
    if np.any(ss <= 0):
        raise ValueError("every sigma must be > 0")
    scale = float(np.max(np.abs(xs))) or 1.0  # x/scale ≤ 1: a well-conditioned design
    design = np.column_stack([(xs / scale) ** p for p in powers]) / ss[:, None]
    coefficients, *_ = np.linalg.lstsq(design, ys / ss, rcond=None)
    covariance = np.linalg.inv(design.T @ design)
    residual = design @ coefficients - ys / ss
    dof = xs.size - len(powers)
    chi2 = float(residual @ residual)
    terms = {
        p: Estimate(float(c) / scale**p, math.sqrt(covariance[i, i]) / scale**p)
        for i, (p, c) in enumerate(zip(powers, coefficients, strict=True))
    }
    p_value = float(stats.chi2.sf(chi2, dof)) if dof > 0 else math.nan
    return PolynomialFit(terms, chi2, dof, p_value)


def weighted_line(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> LineFit:
    """Fit y = a x + b by least squares weighted with the standard deviations of y."""
    if np.unique(np.asarray(x, dtype=float)).size < 2:
        raise ValueError("a straight line needs at least two distinct x values")
    fit = weighted_polynomial(x, y, sigma, (1, 0))
    return LineFit(fit.terms[1], fit.terms[0], fit.chi2, fit.dof, fit.p_value)


@dataclass(frozen=True)
class LarmorCalibration:
    """The gyromagnetic ratio and slowing-down factor from Larmor frequency against field."""

    gyromagnetic_ratio: Estimate  # rad s⁻¹ T⁻¹
    slowing_down_factor: Estimate  # q = γ_e/γ
    offset_Hz: Estimate  # intercept (a residual field along the sweep shows here)
    line: PolynomialFit


def larmor_calibration(
    field_T: np.ndarray,
    larmor_frequency_Hz: np.ndarray,
    larmor_sigma_Hz: np.ndarray,
    cubic: bool = False,
) -> LarmorCalibration:
    """Return γ and q from Larmor frequencies measured at several field magnitudes.

    ``cubic`` adds a B³ term, f = f₀ + (γ/2π)B + cB³: as ω/R_SE grows the SERF line speeds up
    (q falls towards its slow-exchange value), and a straight line through fields up to
    ω = 0.08 R_SE gives q 3 % low; with the B³ term γ is the zero-field limit.
    """
    powers = (0, 1, 3) if cubic else (0, 1)
    line = weighted_polynomial(field_T, larmor_frequency_Hz, larmor_sigma_Hz, powers)
    slope, intercept = line.terms[1], line.terms[0]
    gamma = Estimate(2 * math.pi * slope.value, 2 * math.pi * slope.uncertainty, "rad/(s T)")
    q = k.GAMMA_ELECTRON_rad_per_sT / gamma.value
    return LarmorCalibration(
        gyromagnetic_ratio=gamma,
        slowing_down_factor=Estimate(q, q * gamma.uncertainty / abs(gamma.value)),
        offset_Hz=Estimate(intercept.value, intercept.uncertainty, "Hz"),
        line=line,
    )


@dataclass(frozen=True)
class BroadeningFit:
    """R_SE and the zero-field decay rate from the SERF line's quadratic broadening."""

    spin_exchange_rate: Estimate  # s⁻¹
    zero_field_decay_rate: Estimate  # Γ₀ = R_SD′/6 + R_D, s⁻¹
    line: PolynomialFit


def spin_exchange_from_broadening(
    larmor_frequency_Hz: np.ndarray,
    decay_rate: np.ndarray,
    decay_sigma: np.ndarray,
    quartic: bool = False,
) -> BroadeningFit:
    """Return R_SE from SERF decay rates Γ (s⁻¹) at several Larmor frequencies (Hz).

    ``quartic`` adds an ω⁴ term to Γ = Γ₀ + (5/3)ω²/R_SE: through fields up to ω = 0.08 R_SE
    the quadratic alone gives R_SE 8 % and Γ₀ 40 % high; with the ω⁴ term both are unbiased.
    """
    omega = 2 * math.pi * _finite_vector("larmor_frequency_Hz", larmor_frequency_Hz)
    powers = (0, 1, 2) if quartic else (0, 1)
    line = weighted_polynomial(omega**2, decay_rate, decay_sigma, powers)
    slope, intercept = line.terms[1], line.terms[0]
    if slope.value <= 0:
        raise ValueError(
            f"the decay rate does not grow with ω² (slope {slope}): no SERF broadening to measure"
        )
    rate = SERF_BROADENING_COEFFICIENT / slope.value
    return BroadeningFit(
        spin_exchange_rate=Estimate(rate, rate * slope.uncertainty / slope.value, "s^-1"),
        zero_field_decay_rate=Estimate(intercept.value, intercept.uncertainty, "s^-1"),
        line=line,
    )


@dataclass(frozen=True)
class FieldSweepAnalysis:
    """What a field sweep shows as a whole: γ and q from the Larmor line, R_SE and R_SD′ from its
    width (Γ = R_SD′/6 + R_D + (5/3)ω²/R_SE, R_D from the cell), on the SERF points."""

    used: np.ndarray  # mask of the spectra in SERF with a resolved line
    calibration: LarmorCalibration
    broadening: BroadeningFit | None
    spin_destruction_rate: Estimate | None
    problem: str | None  # why the width gave no rates, if it did not

    def summary(self) -> dict[str, tuple[float, float, str]]:
        """Return the results as {name: (value, uncertainty, units)}, γ in Hz/nT."""
        gamma, q = self.calibration.gyromagnetic_ratio, self.calibration.slowing_down_factor
        per_nT = 1e-9 / (2 * math.pi)
        result = {
            "gyromagnetic_ratio_Hz_per_nT": (
                gamma.value * per_nT, gamma.uncertainty * per_nT, "Hz/nT"
            ),
            "slowing_down_factor": (q.value, q.uncertainty, ""),
            "larmor_offset_Hz": (
                self.calibration.offset_Hz.value, self.calibration.offset_Hz.uncertainty, "Hz"
            ),
        }  # fmt: skip
        if self.broadening is not None and self.spin_destruction_rate is not None:
            r_se, gamma0 = self.broadening.spin_exchange_rate, self.broadening.zero_field_decay_rate
            r_sd = self.spin_destruction_rate
            result["spin_exchange_rate_from_broadening"] = (r_se.value, r_se.uncertainty, "s^-1")
            result["zero_field_decay_rate"] = (gamma0.value, gamma0.uncertainty, "s^-1")
            result["spin_destruction_rate_from_broadening"] = (r_sd.value, r_sd.uncertainty, "s^-1")
        return result


def analyse_field_sweep(
    field_T: np.ndarray, fits: list[SpinNoiseFit], diffusion_rate: float
) -> FieldSweepAnalysis:
    """Return γ, q, R_SE and R_SD′ from spectra fitted at several field magnitudes.

    Only spectra in SERF (ω < 0.08 R_SE) with a resolved line count; fewer than four raise
    ValueError. The Larmor frequency is fitted with a B³ term and the decay rate with an ω⁴
    term, so that γ, q and the rates are their zero-field limits. ``diffusion_rate`` (R_D, s⁻¹)
    is taken out of the zero-field decay rate.
    """
    fields = _finite_vector("field_T", field_T)
    if fields.size != len(fits):
        raise ValueError(f"{fields.size} fields for {len(fits)} fitted spectra")
    used = np.array([_in_serf(fit) for fit in fits], dtype=bool)
    if used.sum() < 4:
        raise ValueError(
            f"only {int(used.sum())} of {used.size} spectra are in SERF with a resolved line "
            "(4 needed): lower the fields or add points"
        )
    kept = [fit for fit, keep in zip(fits, used, strict=True) if keep]
    larmor = np.array([fit.larmor_frequency_Hz.value for fit in kept])
    calibration = larmor_calibration(
        fields[used],
        larmor,
        np.array([fit.larmor_frequency_Hz.uncertainty for fit in kept]),
        cubic=True,
    )
    decay = 2 * math.pi * np.array([fit.linewidth_hwhm_Hz.value for fit in kept])
    decay_sigma = 2 * math.pi * np.array([fit.linewidth_hwhm_Hz.uncertainty for fit in kept])
    try:
        broadening = spin_exchange_from_broadening(larmor, decay, decay_sigma, quartic=True)
    except ValueError as error:
        return FieldSweepAnalysis(used, calibration, None, None, str(error))
    gamma0 = broadening.zero_field_decay_rate
    r_sd = Estimate(6 * (gamma0.value - diffusion_rate), 6 * gamma0.uncertainty, "s^-1")
    return FieldSweepAnalysis(used, calibration, broadening, r_sd, None)


def _in_serf(fit: SpinNoiseFit) -> bool:
    """Return whether a fitted spectrum has a resolved line well inside SERF (ω < 0.08 R_SE)."""
    larmor = fit.larmor_frequency_Hz
    r_se = fit.parameters["spin_exchange_rate"].value
    return bool(
        math.isfinite(larmor.value) and larmor.uncertainty > 0
        and 2 * math.pi * larmor.value < SERF_OMEGA_OVER_RSE * r_se
    )  # fmt: skip


def spin_exchange_cross_section(
    temperature_K: np.ndarray, rate: np.ndarray, rate_sigma: np.ndarray
) -> LineFit:
    """Return the line R_SE = σ_SE·n v̄ + b through spin-exchange rates fitted at several cell
    temperatures (n from the vapour-pressure curve, v̄ the Rb–Rb relative speed); slope σ_SE, m²."""
    temperatures = _finite_vector("temperature_K", temperature_K)
    collisions = np.array(
        [vapour.rb_number_density_m3(t)
         * vapour.mean_relative_speed_m_per_s(t, k.RB87_MASS_kg, k.RB87_MASS_kg)
         for t in temperatures]
    )  # fmt: skip
    return weighted_line(collisions, rate, rate_sigma)


@dataclass(frozen=True)
class TemperatureSweepAnalysis:
    """What a temperature sweep shows as a whole: σ_SE, the slope of R_SE against n v̄."""

    used: np.ndarray  # mask of the spectra with an R_SE uncertainty
    line: LineFit

    def summary(self) -> dict[str, tuple[float, float, str]]:
        """Return the results as {name: (value, uncertainty, units)}."""
        slope = self.line.slope
        return {"spin_exchange_cross_section_m2": (slope.value, slope.uncertainty, "m^2")}


def analyse_temperature_sweep(
    temperature_K: np.ndarray, fits: list[SpinNoiseFit]
) -> TemperatureSweepAnalysis:
    """Return σ_SE from spectra fitted at several cell temperatures (those with an R_SE
    uncertainty count; fewer than two raise ValueError)."""
    temperatures = _finite_vector("temperature_K", temperature_K)
    if temperatures.size != len(fits):
        raise ValueError(f"{temperatures.size} temperatures for {len(fits)} fitted spectra")
    rate = np.array([fit.parameters["spin_exchange_rate"].value for fit in fits])
    sigma = np.array([fit.parameters["spin_exchange_rate"].uncertainty for fit in fits])
    used = np.isfinite(sigma) & (sigma > 0)
    if used.sum() < 2:
        raise ValueError(f"only {int(used.sum())} spectra have an R_SE uncertainty (2 needed)")
    return TemperatureSweepAnalysis(
        used, spin_exchange_cross_section(temperatures[used], rate[used], sigma[used])
    )


def density_from_temperature(temperature_K: float, temperature_sigma_K: float = 0.0) -> Estimate:
    """Return the saturated Rb density (m⁻³) at a temperature, with its propagated uncertainty."""
    T = check_positive("temperature_K", temperature_K, "K")
    sigma = check_range("temperature_sigma_K", temperature_sigma_K, 0.0, 100.0, "K")
    step = 1e-3  # K; the vapour curve is smooth on this scale on either side of the melting point
    slope = (vapour.rb_number_density_m3(T + step) - vapour.rb_number_density_m3(T - step)) / (
        2 * step
    )
    return Estimate(vapour.rb_number_density_m3(T), abs(slope) * sigma, "m^-3")


def density_from_spin_exchange(rate: Estimate, temperature_K: float) -> Estimate:
    """Return the Rb density n = R_SE/(σ_SE v̄) (m⁻³) that a fitted spin-exchange rate implies."""
    speed = vapour.mean_relative_speed_m_per_s(temperature_K, k.RB87_MASS_kg, k.RB87_MASS_kg)
    factor = 1.0 / (k.SIGMA_SE_RbRb_m2 * speed)
    return Estimate(rate.value * factor, rate.uncertainty * factor, "m^-3")


def spin_noise_to_shot_noise(fit: SpinNoiseFit) -> Estimate:
    """Return the atomic PSD at the Larmor line over the white floor, with its uncertainty."""
    larmor = fit.larmor_frequency_Hz.value
    frequency = np.array([larmor if math.isfinite(larmor) else 0.0])
    g = fit.geometry

    def ratio(values: dict[str, float]) -> float:
        model = g.model(
            values["field_T"],
            values["spin_exchange_rate"],
            values["spin_destruction_rate"],
            values["atom_number"],
        )
        peak = model.psd(frequency, g.coupling_upper_rad, g.coupling_lower_rad, g.probe_axis)[0]
        return peak / values["white_noise_psd"]

    value, sigma = fit.propagate(ratio)
    return Estimate(float(value[0]), float(sigma[0]))


def tone_response(
    record_rad: np.ndarray,
    sample_rate_Hz: float,
    tone_frequency_Hz: float,
    field_amplitude_T: float,
    noise_psd_rad2_per_Hz: float,
) -> Estimate:
    """Return |∂θ/∂B| at a calibration tone (rad/T) by lock-in demodulation of the record.

    The in-phase and quadrature amplitudes (2/n) Σ θ_k (cos, sin)(ωt_k) each carry the noise
    √(S/T) for a one-sided angle noise S near the tone and a record of duration T.
    """
    theta = _finite_vector("record_rad", record_rad)
    fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
    f = check_range("tone_frequency_Hz", tone_frequency_Hz, 0.0, fs / 2, "Hz", low_open=True)
    amplitude_T = check_positive("field_amplitude_T", field_amplitude_T, "T")
    noise = check_positive("noise_psd_rad2_per_Hz", noise_psd_rad2_per_Hz, "rad^2/Hz")
    phase = np.exp(-2j * math.pi * f * np.arange(theta.size) / fs)
    amplitude = 2.0 * abs(np.dot(theta - theta.mean(), phase)) / theta.size
    sigma = math.sqrt(noise * fs / theta.size)
    return Estimate(amplitude / amplitude_T, sigma / amplitude_T, "rad/T")


def magnetic_sensitivity_fT_per_rtHz(
    noise_psd_rad2_per_Hz: np.ndarray | float, response: Estimate
) -> tuple[np.ndarray, np.ndarray]:
    """Return δB = √S_θ/|∂θ/∂B| in fT/√Hz and its uncertainty from that of the response."""
    psd = np.asarray(noise_psd_rad2_per_Hz, dtype=float)
    if not np.all(np.isfinite(psd)) or np.any(psd < 0):
        raise ValueError("the noise PSD must be finite and ≥ 0")
    gain = check_positive("response", abs(response.value), "rad/T")
    sensitivity = np.sqrt(psd) / gain / FEMTOTESLA
    return sensitivity, sensitivity * response.uncertainty / gain


def field_resolution_fT_per_rtHz(fit: SpinNoiseFit, duration_s: float) -> float:
    """Return σ_|B|·√T in fT/√Hz: the field resolution of spin-noise magnetometry."""
    duration = check_positive("duration_s", duration_s, "s")
    return fit.parameters["field_T"].uncertainty * math.sqrt(duration) / FEMTOTESLA
