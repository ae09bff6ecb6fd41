"""Fits of spin-noise spectra: the two-manifold model of docs/physics.md §3, and one Lorentzian.

The spin-noise model: S(f) = N·S₁(f; |B|, R_SE, R_SD′) + S_w + A/f, where S₁ is the atomic PSD of
one atom (`SpinModel` with the couplings c_a, c_b, the field direction and the probe axis fixed by
the apparatus), S_w the white floor (photon shot noise plus detector noise) and A/f an optional
electronic flicker term. The diffusion rate R_D is held at its value from the cell geometry and
the buffer gas: it adds to every relaxation rate like R_SD′ does (in SERF the narrow line decays
at R_SD′/6 + R_D + (5/3)ω²/R_SE), so a spectrum cannot tell the two apart; R_SD′ absorbs any error
in R_D as 6·δR_D in SERF.

How the model meets the data: for a Welch spectrum whose window is known, the model is the exact
mean of the estimate (`Spectrum.expectation`: window leakage and aliasing included) from the
sampled autocovariance R(τ) = Re Σ_blocks w κ Φᵏ s; for a sampled record without the window,
`SpinModel.sampled_psd`; otherwise the continuous `SpinModel.psd`.

Likelihood: an averaged periodogram bin is Gamma distributed with mean M_k and variance
M_k²/K_eff. Least squares weighted by σ_k taken from the data is biased low (bins that fluctuate
low get small σ and pull the fit down); σ_k = M_k/√K_eff from the model is not, when the fit
maximises the Gamma (Whittle) likelihood Σ_k [P_k/M_k + ln M_k]. That is done as least squares
on deviance residuals sign(P−M)·√(2(P/M − 1 − ln(P/M))), whose minimum is the maximum-likelihood
point. Uncertainties: Cov = s²·H⁻¹ G H⁻¹ with J̃ = ∂M/∂θ / M, H = J̃ᵀJ̃ and G = J̃ᵀ C̃ J̃, C̃ the
correlation of neighbouring bins (window leakage and segment overlap, see analysis.spectra) and
s² = 1/K_eff pooled from the per-bin standard errors: Σ_k (σ̂_k/M_k)²/n. So the standard errors
set the scale of the weights, the model their shape. Without standard errors s² = 1/K_eff of the
spectrum; without either, s² comes from the residuals and the result says that no χ² test was
possible. χ² = Σ (P−M)²/(s M)², with a p-value from a χ² scaled to the mean and variance it has
for correlated Gamma bins (Satterthwaite). Over 50 seeded records the pulls of every parameter
have unit width (tests/test_fits.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from hotspin.analysis.checks import check_positive, check_range, check_vector
from hotspin.analysis.detection import DetectionChain, detected_atoms, detected_white_noise
from hotspin.analysis.experiment import DerivedQuantities
from hotspin.analysis.spectra import Spectrum
from hotspin.analysis.spin_model import (
    PROBE_AXIS,
    QUADRATIC_ZEEMAN_TOLERANCE,
    THERMAL_VARIANCE_PER_ATOM,
    SpinModel,
    exp2x2,
    quadratic_zeeman_peak_change,
)
from scipy import optimize, signal, special, stats
from threadpoolctl import ThreadpoolController

# The model's small matrices (6 × 6 blocks; 21 × 21 exponentials behind a detection chain) are
# evaluated hundreds of times a fit: with OpenBLAS's worker threads a 21 × 21 expm takes 15 ms on
# a busy machine instead of 0.1 ms, so fits run on one BLAS thread. The controller is found once
# (a fresh threadpool_limits scans the loaded libraries each time).
_THREADPOOLS = ThreadpoolController()

# Relative step of the forward differences of the model in its nonlinear log-parameters.
_DIFFERENCE_STEP = 1e-6
# Condition number of the Fisher matrix beyond which parameters are called degenerate.
_MAX_CONDITION = 1e13
# The fit searches each positive parameter within this factor (in ln) of its starting value.
_LOG_RANGE = math.log(1e4)
# The data's highest peaks tried as the Larmor line for the fit's starting field.
_START_PEAKS = 3
# A mode must carry this much of the observed variance to be called the Larmor line.
_LARMOR_LINE_MIN_FRACTION = 0.1


@dataclass(frozen=True)
class Estimate:
    """A measured value with its one-standard-deviation uncertainty and unit."""

    value: float
    uncertainty: float
    unit: str = ""

    def __str__(self) -> str:
        """Return 'value ± uncertainty unit' with two significant digits of the uncertainty."""
        unit = f" {self.unit}" if self.unit else ""
        u = self.uncertainty
        if not (math.isfinite(u) and u > 0 and math.isfinite(self.value)):
            return f"{self.value:.6g} ± {u:.2g}{unit}"
        exponent = math.floor(math.log10(u)) - 1  # of the last digit shown
        magnitude = math.floor(math.log10(abs(self.value))) if self.value else exponent
        if -3 <= magnitude < 5:
            decimals = max(0, -exponent)
            return f"{self.value:.{decimals}f} ± {u:.{decimals}f}{unit}"
        return f"{self.value:.{max(0, magnitude - exponent)}e} ± {u:.1e}{unit}"


def _sqrt(variance: float) -> float:
    """Return √variance, 0 for a rounding-negative variance, NaN for an undefined one."""
    return math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan


# --- what the apparatus fixes ---------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeGeometry:
    """The known inputs of the fit: couplings, field direction, probe axis, R_D and τ_D.

    ``transit_time_s`` τ_D = w²/(4D) is the time to diffuse across the beam (inf: no transit);
    the fit holds it unless asked to free it. ``detection`` makes the expected spectrum that of
    the samples behind the detector's pole and the digitiser's (averaging) decimation.
    """

    coupling_upper_rad: float
    coupling_lower_rad: float
    field_direction: np.ndarray
    diffusion_rate: float
    probe_axis: np.ndarray = field(default_factory=lambda: PROBE_AXIS.copy())
    transit_time_s: float = math.inf
    # The detector's pole and the digitiser's decimation (None: ideal, instantaneous samples).
    detection: DetectionChain | None = None

    def __post_init__(self) -> None:
        for name in ("coupling_upper_rad", "coupling_lower_rad"):
            value = check_range(name, getattr(self, name), -1.0, 1.0, "rad")
            if value == 0.0:
                raise ValueError(f"{name} = 0: the probe does not see that manifold")
        for name in ("field_direction", "probe_axis"):
            vector = check_vector(name, getattr(self, name))
            norm = float(np.linalg.norm(vector))
            if norm == 0.0:
                raise ValueError(f"{name} must be a nonzero vector")
            object.__setattr__(self, name, vector / norm)
        check_range("diffusion_rate", self.diffusion_rate, 0.0, math.inf, "s^-1", high_open=True)
        if self.transit_time_s != math.inf:
            check_positive("transit_time_s", self.transit_time_s, "s")

    @classmethod
    def from_apparatus(
        cls, derived: DerivedQuantities, detection: DetectionChain | None = None
    ) -> ProbeGeometry:
        """Return the geometry of an apparatus (a zero field is taken along x, across the probe)."""
        field_T = np.asarray(derived.parameters.field_T, dtype=float)
        direction = field_T if np.any(field_T) else np.array([1.0, 0.0, 0.0])
        return cls(
            coupling_upper_rad=derived.coupling_upper_rad,
            coupling_lower_rad=derived.coupling_lower_rad,
            field_direction=direction,
            diffusion_rate=derived.diffusion_rate,
            transit_time_s=derived.transit_time_s,
            detection=detection,
        )

    @property
    def variance_per_atom_rad2(self) -> float:
        """Return the thermal variance of θ per atom, c_a²·5/4 + c_b²·1/4, in rad²."""
        kappa = np.array([self.coupling_upper_rad, self.coupling_lower_rad])
        return float(kappa**2 @ THERMAL_VARIANCE_PER_ATOM)

    def model(
        self,
        field_magnitude_T: float,
        spin_exchange_rate: float,
        spin_destruction_rate: float,
        atom_number: float = 1.0,
        transit_time_s: float | None = None,
    ) -> SpinModel:
        """Return the spin model with the field along the known direction (τ_D: the geometry's)."""
        return SpinModel(
            field_T=field_magnitude_T * self.field_direction,
            spin_exchange_rate=spin_exchange_rate,
            spin_destruction_rate=spin_destruction_rate,
            diffusion_rate=self.diffusion_rate,
            atom_number=atom_number,
            transit_time_s=self.transit_time_s if transit_time_s is None else transit_time_s,
        )


def angle_autocovariance(
    model: SpinModel,
    coupling_upper: float,
    coupling_lower: float,
    lags: int,
    sample_rate_Hz: float,
    axis: np.ndarray = PROBE_AXIS,
) -> np.ndarray:
    """Return R(k) = ⟨θ(t) θ(t + k/f_s)⟩ of θ = C x for k = 0 … lags−1, in rad².

    Per block of the field frame, R(k) = Re w κ Φᵏ s with Φ = exp(X/f_s); the powers Φᵏ s are
    built by doubling (log₂ lags matrix products), which stays exact at the exceptional point
    where the block has no eigenbasis. The transit modes multiply it by Σ_m w_m e^{−s_m k/(f_s τ_D)}
    (each mode's Φ is the wall mode's times a scalar), exactly the block model's R(k).
    """
    fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
    kappa = np.array([coupling_upper, -coupling_lower])
    s = THERMAL_VARIANCE_PER_ATOM * model.atom_number * kappa
    total = np.zeros(lags)
    for weight, X in model.blocks(axis):
        if weight == 0.0:
            continue
        step = exp2x2(X / fs)
        # Rows of Φᵏ s; written out because BLAS calls on 2×n arrays stall on a busy machine.
        first, second = np.array([s[0]], dtype=complex), np.array([s[1]], dtype=complex)
        while first.size < lags:
            first, second = (
                np.concatenate([first, step[0, 0] * first + step[0, 1] * second]),
                np.concatenate([second, step[1, 0] * first + step[1, 1] * second]),
            )
            step = step @ step
        total += weight * (kappa[0] * first[:lags] + kappa[1] * second[:lags]).real
    if model.transit_time_s != math.inf:
        total *= model.transit_correlation(np.arange(lags) / fs)
    return total


# --- the generic Gamma-likelihood fit -------------------------------------------------------------
@dataclass(frozen=True)
class _Outcome:
    """What the likelihood fit returns, in the optimiser's parameters x."""

    x: np.ndarray
    covariance: np.ndarray
    predicted: np.ndarray
    chi2: float
    dof: int
    p_value: float
    flags: tuple[str, ...]
    deviance: float  # Whittle deviance 2 Σ (P/M − 1 − ln P/M) / s²: −2 ln L up to a constant


def _deviance(observed: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the Gamma deviance residuals and their derivative with respect to the model."""
    delta = observed / predicted - 1.0
    half_deviance = np.clip(delta - np.log1p(delta), 0.0, None)
    residual = np.sign(delta) * np.sqrt(2.0 * half_deviance)
    # dr/dM = −g/M with g = |δ|/√(2D) → 1 + δ/3 as δ → 0 (where the ratio loses precision).
    small = np.abs(delta) < 1e-4
    ratio = np.divide(
        np.abs(delta), np.sqrt(2.0 * half_deviance), out=np.ones_like(delta), where=~small
    )
    ratio[small] = 1.0 + delta[small] / 3.0
    return residual, -ratio / predicted


def _variance_scale(
    spectrum: Spectrum, mask: np.ndarray, predicted: np.ndarray
) -> tuple[float, str | None]:
    """Return s² = 1/K_eff and where it came from (None: from the data's own errors)."""
    if spectrum.standard_error is not None:
        se = spectrum.standard_error[mask]
        if np.all(se > 0):
            return float(np.mean((se / predicted) ** 2)), None
    if spectrum.effective_averages is not None:
        return 1.0 / spectrum.effective_averages, None
    return math.nan, "no standard errors or averages: scale from the residuals, no χ² test"


def _correlated_gram(columns: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """Return J̃ᵀ C̃ J̃ for the banded Toeplitz correlation C̃ of neighbouring bins."""
    gram = columns.T @ columns
    for j in range(1, min(correlation.size, columns.shape[0])):
        cross = columns[:-j].T @ columns[j:]
        gram += correlation[j] * (cross + cross.T)
    return gram


def _whittle_fit(
    spectrum: Spectrum,
    mask: np.ndarray,
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    names: Sequence[str],
) -> _Outcome:
    """Maximise the Gamma likelihood of the masked bins; ``predict`` gives (M, ∂M/∂x).

    ``names`` name the parameters in the flags (which one ended at a bound).
    """
    observed = spectrum.psd[mask]
    if np.any(observed <= 0):
        raise ValueError("the spectrum has bins with zero power in the fit range")
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = x.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = predict(x)
        return cache[key]

    # Every model here is positive by construction (positive parameters, positive spectra).
    def residuals(x: np.ndarray) -> np.ndarray:
        return _deviance(observed, evaluate(x)[0])[0]

    def jacobian(x: np.ndarray) -> np.ndarray:
        predicted, derivative = evaluate(x)
        return _deviance(observed, predicted)[1][:, None] * derivative

    solution = optimize.least_squares(
        residuals,
        x0,
        jac=jacobian,
        bounds=(lower, upper),
        method="trf",
        xtol=1e-10,
        ftol=1e-10,
        gtol=1e-10,
        max_nfev=200,
    )
    flags = []
    if not solution.success:
        flags.append(f"optimiser did not converge: {solution.message}")
    # The trust-region solver stays strictly inside the bounds: "at" means within 1e-6.
    at_bound = (np.isfinite(lower) & (solution.x <= lower + 1e-6)) | (
        np.isfinite(upper) & (solution.x >= upper - 1e-6)
    )
    predicted, derivative = evaluate(solution.x)
    relative = derivative / predicted[:, None]
    fisher = relative.T @ relative
    free = ~at_bound
    covariance = np.full((x0.size, x0.size), math.nan)
    if np.any(at_bound):
        held = ", ".join(
            f"{name} (at its {'lower' if solution.x[i] <= lower[i] + 1e-6 else 'upper'} bound)"
            for i, name in enumerate(names)
            if at_bound[i]
        )
        flags.append(f"not determined by this spectrum: {held}; no uncertainty for it")
    sub = fisher[np.ix_(free, free)]
    if np.linalg.cond(sub) > _MAX_CONDITION:
        flags.append("degenerate parameters: the spectrum does not determine them all")
    inverse = np.linalg.pinv(sub)
    gram = _correlated_gram(relative[:, free], spectrum.bin_correlation)
    scale, scale_flag = _variance_scale(spectrum, mask, predicted)
    residual = observed / predicted - 1.0
    dof = observed.size - int(np.count_nonzero(free))
    if scale_flag is not None:
        flags.append(scale_flag)
        scale = float(residual @ residual) / dof
    covariance[np.ix_(free, free)] = scale * inverse @ gram @ inverse
    chi2 = float(residual @ residual) / scale
    deviance_residuals = _deviance(observed, predicted)[0]
    deviance = float(deviance_residuals @ deviance_residuals) / scale
    if scale_flag is None:
        # Correlated, Gamma-shaped bins: Var(χ²) ≈ dof·(2 + 6 s²)·(1 + 2 Σ_j c_j²).
        correlation = spectrum.bin_correlation[1:]
        variance = dof * (2.0 + 6.0 * scale) * (1.0 + 2.0 * float(correlation @ correlation))
        factor = variance / (2.0 * dof)
        p_value = float(stats.chi2.sf(chi2 / factor, 2.0 * dof**2 / variance))
    else:
        p_value = math.nan
    return _Outcome(
        x=solution.x,
        covariance=covariance,
        predicted=predicted,
        chi2=chi2,
        dof=dof,
        p_value=p_value,
        flags=tuple(flags),
        deviance=deviance,
    )


def _fit_mask(
    spectrum: Spectrum, fmin_Hz: float | None, fmax_Hz: float | None, parameters: int
) -> tuple[np.ndarray, list[str]]:
    """Return the bins to fit (by default no DC, mean-removal or Nyquist bin) and data flags."""
    f = spectrum.frequency_Hz
    mask = np.ones(f.size, dtype=bool)
    mask[: spectrum.mean_removed_bins] = False
    if spectrum.sample_rate_Hz is not None and math.isclose(f[-1], spectrum.sample_rate_Hz / 2):
        mask[-1] = False
    if fmin_Hz is not None:
        mask &= f >= fmin_Hz
    if fmax_Hz is not None:
        mask &= f <= fmax_Hz
    flags = []
    if spectrum.clipped_samples:
        flags.append(
            f"record clipped: {spectrum.clipped_samples} of {spectrum.samples} samples at the "
            "limits; the spectrum is distorted"
        )
    bins = int(np.count_nonzero(mask))
    if bins == 0:
        raise ValueError("no bins in the fit range")
    # The starting values smooth over five bins; the fit needs more bins than parameters.
    if bins < max(parameters + 1, 8):
        raise ValueError(f"only {bins} bins in the fit range for {parameters} parameters")
    return mask, flags


def _propagate(
    function: Callable[[np.ndarray], np.ndarray], x: np.ndarray, covariance: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return f(x) and its standard deviations from the covariance of x (central differences).

    A parameter whose variance is undefined (a fit parameter held at a bound) counts as fixed:
    the result is the uncertainty given its value, as the covariance of the others is.
    """
    value = np.asarray(function(x), dtype=float)
    known = np.isfinite(np.diag(covariance))
    sigma = np.sqrt(np.clip(np.where(known, np.diag(covariance), 0.0), 0.0, None))
    gradient = np.zeros((value.size, x.size))
    for i in np.flatnonzero(known & (sigma > 0)):
        # A small step, and never across zero: a rate poorly determined next to zero must not
        # be evaluated negative.
        h = 1e-3 * sigma[i] if x[i] == 0 else 1e-3 * min(sigma[i], abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        gradient[:, i] = (np.asarray(function(up)) - np.asarray(function(down))) / (2 * h)
    block = covariance[np.ix_(known, known)]
    if not np.all(np.isfinite(block)):
        return value, np.full(value.size, math.nan)
    g = gradient[:, known]
    return value, np.sqrt(np.clip(np.einsum("ij,jk,ik->i", g, block, g), 0.0, None))


# --- the spin-noise model -------------------------------------------------------------------------
SPIN_NOISE_PARAMETERS: dict[str, str] = {
    "field_T": "T",  # |B|, along the apparatus's field direction
    "spin_exchange_rate": "s^-1",  # R_SE
    "spin_destruction_rate": "s^-1",  # R_SD′ = R_SD + R_pr
    "atom_number": "",  # N of the beam-weighted mode (n π w² L)
    "white_noise_psd": "rad^2/Hz",  # shot noise + detector noise, one-sided
    "transit_time_s": "s",  # τ_D = w²/(4D), when freed
    "flicker_coefficient": "rad^2",  # A of the technical A/f term
}
# The parameters fitted in ln (all but the flicker coefficient, which may be 0).
_LOG_PARAMETERS = tuple(n for n in SPIN_NOISE_PARAMETERS if n != "flicker_coefficient")
# Of those, the ones the model depends on nonlinearly (N and S_w enter linearly).
_NONLINEAR = ("field_T", "spin_exchange_rate", "spin_destruction_rate", "transit_time_s")


@dataclass(frozen=True)
class ModeEstimate:
    """An eigenmode of the fitted model as the probe sees it, with propagated uncertainties."""

    frequency_Hz: Estimate
    hwhm_Hz: Estimate
    decay_rate: Estimate
    fraction: float  # share of the atomic variance of θ


@dataclass(frozen=True)
class SpinNoiseFit:
    """The spin-noise model fitted to a spectrum."""

    parameters: dict[str, Estimate]
    covariance: np.ndarray  # of the fitted parameters, in their SI units, order of `names`
    names: tuple[str, ...]
    modes: tuple[ModeEstimate, ...]
    larmor_frequency_Hz: Estimate
    linewidth_hwhm_Hz: Estimate
    chi2: float
    dof: int
    p_value: float
    flags: tuple[str, ...]
    frequency_Hz: np.ndarray = field(repr=False)  # the fitted bins
    predicted: np.ndarray = field(repr=False)  # the fitted model on them (to plot)
    geometry: ProbeGeometry = field(repr=False)
    deviance: float = math.nan  # −2 ln L (Whittle) up to a constant, for likelihood ratios

    @property
    def reduced_chi2(self) -> float:
        """Return χ²/dof."""
        return self.chi2 / self.dof

    def value(self, name: str) -> float:
        """Return the fitted value of one parameter."""
        return self.parameters[name].value

    def propagate(
        self, function: Callable[[dict[str, float]], np.ndarray | float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return a function of the fitted parameters and its propagated uncertainty."""
        x = np.array([self.value(n) for n in self.names])

        def of_vector(vector: np.ndarray) -> np.ndarray:
            values = {n: self.value(n) for n in self.parameters}
            values.update(zip(self.names, vector, strict=True))
            return np.atleast_1d(np.asarray(function(values), dtype=float))

        return _propagate(of_vector, x, self.covariance)


class _SpinNoiseSpectrum:
    """The model spectrum on the fitted bins, per atom, for given (|B|, R_SE, R_SD′[, τ_D])."""

    def __init__(self, spectrum: Spectrum, geometry: ProbeGeometry, mask: np.ndarray) -> None:
        self.spectrum, self.geometry, self.mask = spectrum, geometry, mask
        self.frequency_Hz = spectrum.frequency_Hz[mask]
        chain = geometry.detection
        self.floor_shape = np.ones(self.frequency_Hz.size)  # of a unit white PSD
        if chain is not None:
            if spectrum.window is None or spectrum.sample_rate_Hz is None:
                raise ValueError("a detection chain needs a Welch spectrum with its window")
            if not math.isclose(spectrum.sample_rate_Hz, chain.sample_rate_Hz, rel_tol=1e-9):
                raise ValueError(
                    f"the spectrum's sample rate {spectrum.sample_rate_Hz:g} Hz is not the "
                    f"detection chain's {chain.sample_rate_Hz:g} Hz"
                )
            R = detected_white_noise(chain).autocovariance(spectrum.window.size)
            self.floor_shape = spectrum.expectation(R)[mask]

    def per_atom(
        self,
        field_T: float,
        spin_exchange: float,
        spin_destruction: float,
        transit_time_s: float | None = None,
    ) -> np.ndarray:
        """Return the atomic PSD of one atom on the fitted bins, in rad²/Hz."""
        g, s = self.geometry, self.spectrum
        if s.sample_rate_Hz is None:
            return self.rough_per_atom(field_T, spin_exchange, spin_destruction, transit_time_s)
        model = g.model(field_T, spin_exchange, spin_destruction, transit_time_s=transit_time_s)
        c_a, c_b = g.coupling_upper_rad, g.coupling_lower_rad
        if g.detection is not None:
            assert s.window is not None  # checked when the grid was made
            output = detected_atoms(model, c_a, c_b, g.detection, g.probe_axis)
            return s.expectation(output.autocovariance(s.window.size))[self.mask]
        if s.window is not None:
            R = angle_autocovariance(model, c_a, c_b, s.window.size, s.sample_rate_Hz, g.probe_axis)
            return s.expectation(R)[self.mask]
        return model.sampled_psd(self.frequency_Hz, s.sample_rate_Hz, c_a, c_b, g.probe_axis)

    def rough_per_atom(
        self,
        field_T: float,
        spin_exchange: float,
        spin_destruction: float,
        transit_time_s: float | None = None,
    ) -> np.ndarray:
        """Return the continuous PSD of one atom on the fitted bins: no window, no aliasing.

        Exact for a spectrum without a sample rate; otherwise a third of the cost of `per_atom`,
        and close enough to choose where a fit starts.
        """
        g = self.geometry
        model = g.model(field_T, spin_exchange, spin_destruction, transit_time_s=transit_time_s)
        c_a, c_b = g.coupling_upper_rad, g.coupling_lower_rad
        return model.psd(self.frequency_Hz, c_a, c_b, g.probe_axis)


@_THREADPOOLS.wrap(limits=1, user_api="blas")
def fit_spin_noise(
    spectrum: Spectrum,
    geometry: ProbeGeometry,
    initial: Mapping[str, float],
    *,
    fmin_Hz: float | None = None,
    fmax_Hz: float | None = None,
    flicker: bool = False,
    free_transit: bool = False,
) -> SpinNoiseFit:
    """Fit |B|, R_SE, R_SD′, N, the white floor (and τ_D, A/f) to a spin-noise spectrum.

    ``initial`` holds starting values for field_T, spin_exchange_rate, spin_destruction_rate,
    atom_number and white_noise_psd (e.g. from `initial_values`); the field, N and the floor are
    first matched to the data's peak. ``fmin_Hz``/``fmax_Hz`` limit the fitted band (default:
    every bin but DC, those biased by mean removal and Nyquist); ``flicker`` adds A/f, A ≥ 0;
    ``free_transit`` fits τ_D (starting from the geometry's) instead of holding it. N is the atom
    number of the beam-weighted mode.
    """
    if free_transit and geometry.transit_time_s == math.inf:
        raise ValueError("free_transit needs a finite starting transit_time_s in the geometry")
    logs = [n for n in _LOG_PARAMETERS if free_transit or n != "transit_time_s"]
    names = logs + (["flicker_coefficient"] if flicker else [])
    nonlinear = [i for i, n in enumerate(logs) if n in _NONLINEAR]
    i_atoms, i_floor = logs.index("atom_number"), logs.index("white_noise_psd")
    mask, flags = _fit_mask(spectrum, fmin_Hz, fmax_Hz, len(names))
    for name in logs[:5]:
        check_positive(f"initial {name}", initial[name], SPIN_NOISE_PARAMETERS[name])
    grid = _SpinNoiseSpectrum(spectrum, geometry, mask)
    f = grid.frequency_Hz
    floor0 = float(initial["white_noise_psd"])
    flicker_unit = floor0 * f[0]  # A in units of the floor at the lowest fitted frequency
    flicker_shape = _flicker_shape(spectrum, mask) if flicker else np.empty(0)

    def physical(x: np.ndarray) -> dict[str, float]:
        values = {n: math.exp(x[i]) for i, n in enumerate(logs)}
        if flicker:
            values["flicker_coefficient"] = x[-1] * flicker_unit
        return values

    def shape(log_nonlinear: np.ndarray) -> np.ndarray:
        return grid.per_atom(*np.exp(log_nonlinear))

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = physical(x)
        base = x[nonlinear]
        per_atom = shape(base)
        atomic = v["atom_number"] * per_atom
        floor = v["white_noise_psd"] * grid.floor_shape
        predicted = atomic + floor
        columns = [np.empty(0)] * len(names)
        for k, i in enumerate(nonlinear):
            shifted = base.copy()
            shifted[k] += _DIFFERENCE_STEP
            columns[i] = v["atom_number"] * (shape(shifted) - per_atom) / _DIFFERENCE_STEP
        columns[i_atoms] = atomic
        columns[i_floor] = floor
        if flicker:
            predicted = predicted + v["flicker_coefficient"] * flicker_shape
            columns[-1] = flicker_unit * flicker_shape
        return predicted, np.column_stack(columns)

    start = _starting_values(grid, initial)
    if free_transit:
        start["transit_time_s"] = geometry.transit_time_s
    x0 = np.array([math.log(start[n]) for n in logs] + ([0.0] if flicker else []))
    lower = np.concatenate([x0[: len(logs)] - _LOG_RANGE, [0.0] if flicker else []])
    upper = np.concatenate([x0[: len(logs)] + _LOG_RANGE, [math.inf] if flicker else []])
    outcome = _whittle_fit(spectrum, mask, predict, x0, lower, upper, names)
    values = physical(outcome.x)
    # Jacobian of the SI parameters with respect to x: diagonal.
    scale = np.array([values[n] for n in logs] + ([flicker_unit] if flicker else []))
    covariance = outcome.covariance * np.outer(scale, scale)
    parameters = {
        n: Estimate(values[n], _sqrt(covariance[i, i]), SPIN_NOISE_PARAMETERS[n])
        for i, n in enumerate(names)
    }
    modes, larmor = _mode_estimates(geometry, outcome.x, outcome.covariance)
    fitted_model = geometry.model(
        values["field_T"], values["spin_exchange_rate"], values["spin_destruction_rate"]
    )
    change = quadratic_zeeman_peak_change(
        fitted_model.quadratic_zeeman_ratio(
            geometry.coupling_upper_rad, geometry.coupling_lower_rad, geometry.probe_axis
        )
    )
    if change > QUADRATIC_ZEEMAN_TOLERANCE:
        flags.append(
            f"quadratic Zeeman effect: the fitted field's splitting changes this spectrum by "
            f"{100 * change:.2g} % (> {100 * QUADRATIC_ZEEMAN_TOLERANCE:g} %), which the model "
            "leaves out"
        )
    return SpinNoiseFit(
        parameters=parameters,
        covariance=covariance,
        names=tuple(names),
        modes=modes,
        larmor_frequency_Hz=larmor.frequency_Hz if larmor else Estimate(math.nan, math.nan, "Hz"),
        linewidth_hwhm_Hz=larmor.hwhm_Hz if larmor else Estimate(math.nan, math.nan, "Hz"),
        chi2=outcome.chi2,
        dof=outcome.dof,
        p_value=outcome.p_value,
        flags=tuple(flags) + outcome.flags,
        frequency_Hz=f,
        predicted=outcome.predicted,
        geometry=geometry,
        deviance=outcome.deviance,
    )


# The lowest frequency of the 1/f model's band, relative to the sample rate: below the record's
# length, where it only moves the mean, which the Welch segments remove.
_FLICKER_LOW_EDGE = 1e-9


def _flicker_shape(spectrum: Spectrum, mask: np.ndarray) -> np.ndarray:
    """Return the mean Welch estimate of a unit 1/f noise on the fitted bins, in 1/Hz.

    Without a window: 1/f. With one: the exact expectation of a 1/f noise sampled at f_s, from
    its autocovariance R(k) = −Ci(2π f_low k/f_s) at lags k ≥ 1 (∫ cos(2πfτ)/f df above f_low).
    The window's leakage of the steep 1/f into the lowest bins is a few per cent (≈ 1/(3k²) at
    bin k for Hann), which A/f at the bin frequency misses. Two parts of R are not determined by
    the spectrum and need no knowledge of the band: f_low only adds a constant (it goes to the
    removed mean), and R(0), set by how far above f_s the noise reaches, is flat in frequency
    (it reads as part of the white floor); R(0) = ln(f_s/(2 f_low)) is the band ending at Nyquist.
    """
    f = spectrum.frequency_Hz[mask]
    if spectrum.window is None or spectrum.sample_rate_Hz is None:
        return 1.0 / f
    lags = np.arange(1, spectrum.window.size, dtype=float)
    R = np.concatenate(
        [
            [math.log(0.5 / _FLICKER_LOW_EDGE)],
            -special.sici(2 * math.pi * _FLICKER_LOW_EDGE * lags)[1],
        ]
    )
    return spectrum.expectation(R)[mask]


# Flicker is added when the likelihood ratio rejects "no flicker" at this level.
FLICKER_TEST_LEVEL = 0.01


@dataclass(frozen=True)
class FlickerTest:
    """Whether a spectrum calls for the A/f term: the likelihood-ratio test of A = 0."""

    statistic: float  # −2 ln(L₀/L₁), divided by the bin-correlation inflation
    p_value: float  # under A = 0: ½χ²₀ + ½χ²₁ (A ≥ 0 sits on the boundary)
    selected: bool  # p_value < FLICKER_TEST_LEVEL: the fit with A/f is the one reported

    def summary(self) -> str:
        """Return one line for a report: the test's statistic, p-value and decision."""
        verdict = "A/f fitted" if self.selected else "no A/f term"
        return (
            f"flicker LR test: statistic {self.statistic:.3g}, p = {self.p_value:.3g} ({verdict})"
        )


def fit_spin_noise_testing_flicker(
    spectrum: Spectrum,
    geometry: ProbeGeometry,
    initial: Mapping[str, float],
    *,
    fmin_Hz: float | None = None,
    fmax_Hz: float | None = None,
    free_transit: bool = False,
) -> tuple[SpinNoiseFit, FlickerTest]:
    """Fit with and without A/f; return the fit the likelihood-ratio test picks, and the test.

    Neighbouring Welch bins are correlated, which inflates the deviance difference by about
    1 + 2 Σ_j C̃(j) for a term as smooth as A/f; the statistic is divided by it.
    """
    band = {"fmin_Hz": fmin_Hz, "fmax_Hz": fmax_Hz, "free_transit": free_transit}
    without = fit_spin_noise(spectrum, geometry, initial, **band)
    start = {n: e.value for n, e in without.parameters.items()}
    with_flicker = fit_spin_noise(spectrum, geometry, start, flicker=True, **band)
    inflation = 1.0 + 2.0 * float(np.sum(spectrum.bin_correlation[1:]))
    statistic = max(without.deviance - with_flicker.deviance, 0.0) / inflation
    p_value = 0.5 * float(stats.chi2.sf(statistic, 1)) if statistic > 0 else 1.0
    test = FlickerTest(statistic, p_value, p_value < FLICKER_TEST_LEVEL)
    return (with_flicker if test.selected else without), test


def split_white_floor(
    fit: SpinNoiseFit, shot_noise_psd_rad2_per_Hz: float
) -> tuple[Estimate, Estimate]:
    """Return (photon shot noise, electronic noise) of the fitted white floor, in rad²/Hz.

    The shot noise 1/(2Φ) follows from the detected power (no fitted uncertainty); the rest of
    the floor is the detector's (and digitiser's) electronic noise, with the floor's uncertainty.
    """
    shot = check_positive("shot_noise_psd_rad2_per_Hz", shot_noise_psd_rad2_per_Hz, "rad²/Hz")
    floor = fit.parameters["white_noise_psd"]
    return (
        Estimate(shot, 0.0, floor.unit),
        Estimate(floor.value - shot, floor.uncertainty, floor.unit),
    )


def _starting_values(grid: _SpinNoiseSpectrum, initial: Mapping[str, float]) -> dict[str, float]:
    """Return starting values: the likeliest of a few candidate fields, N and S_w matched to it.

    The apparatus's field is often not the field the atoms see (residual field, coil
    calibration); a line tens of linewidths away gives the optimiser no gradient to follow. So
    the candidates are the apparatus's field and the fields that put the model's line on each of
    the data's highest peaks; each is scored by the Whittle likelihood with N and S_w matched to
    the data. Scoring matters when the field leans towards the probe: the spin component along
    the field adds a line at zero frequency, whose top can be the data's highest point.
    """
    start = {name: float(initial[name]) for name in SPIN_NOISE_PARAMETERS if name in initial}
    observed = np.convolve(grid.spectrum.psd[grid.mask], np.ones(5) / 5, mode="same")
    floor = float(np.percentile(observed, 10))
    rates = (start["spin_exchange_rate"], start["spin_destruction_rate"])
    f = grid.frequency_Hz

    def line_on(peak: int, field_T: float, per_atom: np.ndarray) -> tuple[float, np.ndarray]:
        """Scale the field until the model's highest bin is ``peak`` (a few steps: q(|B|))."""
        for _ in range(3):
            top = int(np.argmax(per_atom))
            if f[top] <= 0 or top == peak:
                break
            field_T *= f[peak] / f[top]
            per_atom = grid.rough_per_atom(field_T, *rates)
        return field_T, per_atom

    given = (start["field_T"], grid.rough_per_atom(start["field_T"], *rates))
    peaks, _ = signal.find_peaks(observed[: observed.size - 2])
    highest = peaks[np.argsort(observed[peaks])[::-1][:_START_PEAKS]]
    candidates = [given] + [line_on(int(peak), *given) for peak in highest]
    data = grid.spectrum.psd[grid.mask]
    best = math.inf
    for field_T, per_atom in candidates:
        top = int(np.argmax(per_atom))
        excess = observed[top] - floor
        atoms = excess / per_atom[top] if excess > 0 and per_atom[top] > 0 else start["atom_number"]
        predicted = atoms * per_atom + floor
        score = float(np.sum(data / predicted + np.log(predicted)))  # −ln L, Whittle
        if score < best:
            best = score
            start.update(field_T=field_T, atom_number=atoms)
    start["white_noise_psd"] = floor
    return start


def _mode_estimates(
    geometry: ProbeGeometry, x: np.ndarray, covariance: np.ndarray
) -> tuple[tuple[ModeEstimate, ...], ModeEstimate | None]:
    """Return the eigenmodes (narrowest first) with uncertainties, and the Larmor line."""

    def modes_of(vector: np.ndarray) -> list:
        field_T, r_se, r_sd = np.exp(vector[:3])
        model = geometry.model(field_T, r_se, r_sd, math.exp(vector[3]))
        return model.eigenmodes(
            geometry.coupling_upper_rad, geometry.coupling_lower_rad, geometry.probe_axis
        )

    reference = modes_of(x)

    def flattened(vector: np.ndarray) -> np.ndarray:
        modes = modes_of(vector)
        if len(modes) != len(reference):
            return np.full(2 * len(reference), math.nan)
        return np.array([v for m in modes for v in (m.frequency_Hz, m.decay_rate)])

    values, sigmas = _propagate(flattened, x[:4], covariance[:4, :4])
    estimates = []
    for i, mode in enumerate(reference):
        frequency, decay = values[2 * i], values[2 * i + 1]
        sigma_f, sigma_d = sigmas[2 * i], sigmas[2 * i + 1]
        estimates.append(
            ModeEstimate(
                frequency_Hz=Estimate(frequency, sigma_f, "Hz"),
                hwhm_Hz=Estimate(decay / (2 * math.pi), sigma_d / (2 * math.pi), "Hz"),
                decay_rate=Estimate(decay, sigma_d, "s^-1"),
                fraction=mode.fraction,
            )
        )
    precessing = [
        e for e in estimates if e.frequency_Hz.value > 0 and e.fraction >= _LARMOR_LINE_MIN_FRACTION
    ]
    return tuple(estimates), (precessing[0] if precessing else None)


def initial_values(derived: DerivedQuantities) -> dict[str, float]:
    """Return starting values of the spin-noise fit from an apparatus's derived quantities."""
    return {
        "field_T": max(derived.field_magnitude_T, 1e-12),
        "spin_exchange_rate": derived.spin_exchange_rate,
        "spin_destruction_rate": derived.spin_destruction_rate,
        "atom_number": derived.atom_number,
        "white_noise_psd": derived.white_noise_psd_rad2_per_Hz,
    }


# --- one Lorentzian on a flat floor ---------------------------------------------------------------
LORENTZIAN_PARAMETERS: dict[str, str] = {
    "area": "rad^2",
    "center_frequency_Hz": "Hz",
    "hwhm_Hz": "Hz",
    "white_noise_psd": "rad^2/Hz",
}


@dataclass(frozen=True)
class LorentzianFit:
    """One damped-oscillator line on a flat floor, and the atom number its area implies."""

    parameters: dict[str, Estimate]
    implied_atom_number: Estimate  # area / (thermal variance of θ per atom)
    chi2: float
    dof: int
    p_value: float
    flags: tuple[str, ...]
    predicted: np.ndarray = field(repr=False)

    @property
    def reduced_chi2(self) -> float:
        """Return χ²/dof."""
        return self.chi2 / self.dof


def _lorentzian_autocovariance(
    area: float, center_Hz: float, hwhm_Hz: float, lags: int, sample_rate_Hz: float
) -> np.ndarray:
    """Return A e^{−γk/f_s} cos(ω₀k/f_s), the autocovariance of one damped line, sampled."""
    k = np.arange(lags) / sample_rate_Hz
    return area * np.exp(-2 * math.pi * hwhm_Hz * k) * np.cos(2 * math.pi * center_Hz * k)


def _lorentzian_psd(
    frequency_Hz: np.ndarray,
    area: float,
    center_Hz: float,
    hwhm_Hz: float,
    sample_rate_Hz: float | None,
) -> np.ndarray:
    """Return the one-sided PSD of one damped line: continuous, or sampled (aliased)."""
    if sample_rate_Hz is None:
        f = frequency_Hz
        return (area / math.pi) * (
            hwhm_Hz / ((f - center_Hz) ** 2 + hwhm_Hz**2)
            + hwhm_Hz / ((f + center_Hz) ** 2 + hwhm_Hz**2)
        )
    total = np.ones(frequency_Hz.size)
    for sign in (1.0, -1.0):
        z = np.exp(2j * math.pi * (sign * center_Hz - frequency_Hz + 1j * hwhm_Hz) / sample_rate_Hz)
        total += (z / (1.0 - z)).real
    return 2.0 * area / sample_rate_Hz * total


def fit_lorentzian(
    spectrum: Spectrum,
    geometry: ProbeGeometry,
    *,
    fmin_Hz: float | None = None,
    fmax_Hz: float | None = None,
) -> LorentzianFit:
    """Fit one Lorentzian line plus a flat floor; report the atom number its area implies."""
    mask, flags = _fit_mask(spectrum, fmin_Hz, fmax_Hz, len(LORENTZIAN_PARAMETERS))
    f = spectrum.frequency_Hz[mask]
    observed = spectrum.psd[mask]
    # Start from the data: floor from the low bins, line at the smoothed maximum above it.
    floor0 = float(np.percentile(observed, 20))
    excess = np.convolve(observed - floor0, np.ones(5) / 5, mode="same")
    peak = int(np.argmax(excess))
    bin_width = float(f[-1] - f[0]) / (f.size - 1)
    area0 = max(float(np.sum(np.clip(excess, 0, None))) * bin_width, 1e-30)
    hwhm0 = max(area0 / (math.pi * max(excess[peak], 1e-300)), bin_width)

    def line(x: np.ndarray) -> np.ndarray:
        area, center, hwhm = math.exp(x[0]), x[1] * bin_width, math.exp(x[2])
        if spectrum.window is not None:
            assert spectrum.sample_rate_Hz is not None
            R = _lorentzian_autocovariance(
                area, center, hwhm, spectrum.window.size, spectrum.sample_rate_Hz
            )
            return spectrum.expectation(R)[mask]
        return _lorentzian_psd(f, area, center, hwhm, spectrum.sample_rate_Hz)

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base = line(x)
        columns = []
        for i in range(3):
            shifted = x.copy()
            shifted[i] += _DIFFERENCE_STEP
            columns.append((line(shifted) - base) / _DIFFERENCE_STEP)
        floor = math.exp(x[3])
        columns.append(np.full(f.size, floor))
        return base + floor, np.column_stack(columns)

    # ln area, centre in bins, ln HWHM, ln floor; the centre stays in the band.
    x0 = np.array(
        [math.log(area0), f[peak] / bin_width, math.log(hwhm0), math.log(max(floor0, 1e-300))]
    )
    lower = x0 - _LOG_RANGE
    upper = x0 + _LOG_RANGE
    lower[1], upper[1] = 0.0, f[-1] / bin_width
    outcome = _whittle_fit(spectrum, mask, predict, x0, lower, upper, list(LORENTZIAN_PARAMETERS))
    x = outcome.x
    values = [math.exp(x[0]), x[1] * bin_width, math.exp(x[2]), math.exp(x[3])]
    scale = np.array([values[0], bin_width, values[2], values[3]])
    covariance = outcome.covariance * np.outer(scale, scale)
    parameters = {
        n: Estimate(values[i], _sqrt(covariance[i, i]), unit)
        for i, (n, unit) in enumerate(LORENTZIAN_PARAMETERS.items())
    }
    per_atom = geometry.variance_per_atom_rad2
    area = parameters["area"]
    return LorentzianFit(
        parameters=parameters,
        implied_atom_number=Estimate(area.value / per_atom, area.uncertainty / per_atom),
        chi2=outcome.chi2,
        dof=outcome.dof,
        p_value=outcome.p_value,
        flags=tuple(flags) + outcome.flags,
        predicted=outcome.predicted,
    )
