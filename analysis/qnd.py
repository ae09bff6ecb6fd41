"""Continuous QND readout of the collective spin: Kalman filter, Riccati covariance, witness.

PHYSICS.md §6. The spin x = (F⁽ᵃ⁾, F⁽ᵇ⁾) obeys dx = A x dt + dW with E[dW dWᵀ] = Q dt,
Q = −(AΣ + ΣAᵀ) (§3), and the polarimeter records y(t) = C x(t) + v(t), v white.

Noise densities, explicitly (the factor of two):
* The measured angle spectrum is one-sided: its white floor S_θ (rad²/Hz, shot noise plus
  detector noise) satisfies Var = ∫₀^∞ S df. The same noise has the two-sided density S_θ/2,
  E[v(t) v(t′)] = (S_θ/2) δ(t − t′): the Kalman–Bucy observation intensity is R_c = S_θ/2.
* Sampled instantaneously at f_s (as the digitiser and the simulator do), each sample carries
  the variance R_d = (S_θ/2)·f_s, and the spin update is x_{k+1} = Φ x_k + w_k with
  Φ = exp(A/f_s), W = Σ − ΦΣΦᵀ (exact, §3).
* Continuous time: the conditional covariance solves AΣ_c + Σ_cAᵀ + Q − Σ_cCᵀR_c⁻¹CΣ_c = 0
  (scipy.linalg.solve_continuous_are with a = Aᵀ, b = Cᵀ, r = S_θ/2).
* Discrete time: the predicted covariance P solves the DARE of (Φ, C, W, R_d); the filtered one
  is P⁺ = P − PCᵀ(CPCᵀ + R_d)⁻¹CP. As f_s → ∞, W → Q/f_s and R_d/f_s = R_c, so P⁺ → Σ_c.

Both are computed in units of √N (x̃ = x/√N), where every matrix is of order one.

Entanglement witness (Tóth & Mitchell, NJP 12, 053007 (2010)): for F = F⁽ᵃ⁾ + F⁽ᵇ⁾ separable
states obey Σₖ Var(Fₖ) ≥ N b. For one atom with hyperfine populations p_a, p_b the bound is
b = ⟨f²⟩ − max|⟨f⟩|² = 6p_a + 2p_b − (2p_a + p_b)² (f is block-diagonal in F, so ⟨f⟩ is at most
2p_a + p_b long). We use the thermal populations p_a = 5/8, p_b = 3/8 (b = 1.859): in the hot,
unpolarised vapour every atom's reduced state is the maximally mixed one (ΔE_hfs ≪ k_B T and
spin-exchange and the collective measurement do not change single-atom populations), so each
atom's bound is b(5/8). Because b(p) = 1 + 2p − p² is concave, the bound must be applied per atom:
atoms with unequal populations could share a lower total. b = 1 (the minimum over p) needs no
knowledge of the populations and is available as ``POPULATION_FREE_BOUND``.
ξ² = Σₖ Var_c(Fₖ)/(N b) < 1 witnesses entanglement, with at least (1 − ξ²) N entangled atoms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis.checks import check_positive, check_range
from hotspin.analysis.experiment import DerivedQuantities
from hotspin.analysis.fits import Estimate, SpinNoiseFit
from hotspin.analysis.spin_model import PROBE_AXIS, SpinModel
from scipy import linalg, signal, stats

# Eigenvector conditioning beyond which the modal form of the filter would lose accuracy.
_MAX_EIGENVECTOR_CONDITION = 1e10
# The filter starts from the prior mean with the steady gain; this much of the start-up error
# amplitude may remain in the samples the whiteness test uses.
_SETTLED_AMPLITUDE = 1e-3


def separable_bound(upper_population: float = k.POPULATION_UPPER) -> float:
    """Return b = 6p_a + 2p_b − (2p_a + p_b)², the per-atom separable bound on Σₖ Var(fₖ)."""
    p_a = check_range("upper_population", upper_population, 0.0, 1.0)
    p_b = 1.0 - p_a
    return 6 * p_a + 2 * p_b - (2 * p_a + p_b) ** 2


THERMAL_BOUND = separable_bound()  # 1.859375
POPULATION_FREE_BOUND = 1.0


@dataclass(frozen=True)
class ContinuousReadout:
    """The spin model, the Faraday observation and the white readout noise of a QND probe."""

    model: SpinModel
    coupling_upper_rad: float
    coupling_lower_rad: float
    white_noise_psd: float  # one-sided S_θ of the readout noise, rad²/Hz
    probe_axis: np.ndarray = field(default_factory=lambda: PROBE_AXIS.copy())

    def __post_init__(self) -> None:
        check_positive("white_noise_psd", self.white_noise_psd, "rad^2/Hz")

    @classmethod
    def from_apparatus(cls, derived: DerivedQuantities) -> ContinuousReadout:
        """Return the readout an apparatus provides (its model, couplings and noise floor)."""
        return cls(
            derived.model,
            derived.coupling_upper_rad,
            derived.coupling_lower_rad,
            derived.white_noise_psd_rad2_per_Hz,
        )

    @classmethod
    def from_fit(
        cls, fit: SpinNoiseFit, values: dict[str, float] | None = None
    ) -> ContinuousReadout:
        """Return the readout described by a spin-noise fit (or by ``values`` of its parameters)."""
        v = {n: e.value for n, e in fit.parameters.items()} if values is None else values
        g = fit.geometry
        return cls(
            g.model(
                v["field_T"], v["spin_exchange_rate"], v["spin_destruction_rate"], v["atom_number"]
            ),
            g.coupling_upper_rad,
            g.coupling_lower_rad,
            v["white_noise_psd"],
            g.probe_axis,
        )

    def unit_matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (A, Q/N, Σ/N, C√N): the model in units of √N."""
        m, n = self.model, self.model.atom_number
        Q = m.noise_covariance() / n
        C = m.observation_vector(self.coupling_upper_rad, self.coupling_lower_rad, self.probe_axis)
        return m.drift_matrix(), 0.5 * (Q + Q.T), m.stationary_covariance() / n, C * math.sqrt(n)

    def unit_conditional_covariance(self) -> np.ndarray:
        """Return Σ_c/N from the continuous Riccati equation with R_c = S_θ/2."""
        A, Q, _, C = self.unit_matrices()
        intensity = self.white_noise_psd / 2.0
        solution = linalg.solve_continuous_are(A.T, C[:, None], Q, np.array([[intensity]]))
        # One Newton (Kleinman) step: the Schur solver leaves a residual ~1e-6 of the terms for
        # this stiff A (R_SE ≫ the slow rates); the step takes it to rounding, so that
        # derivatives by finite differences (uncertainty propagation) are smooth.
        gain = np.outer(solution @ C, C) / intensity
        solution = linalg.solve_continuous_lyapunov(A - gain, -(Q + gain @ solution))
        return 0.5 * (solution + solution.T)

    def conditional_covariance(self) -> np.ndarray:
        """Return the stationary covariance Σ_c of the spin given the record, in units of ħ²."""
        return self.unit_conditional_covariance() * self.model.atom_number


def total_spin_variance(covariance: np.ndarray) -> float:
    """Return Σₖ Var(Fₖ) of F = F⁽ᵃ⁾ + F⁽ᵇ⁾ from a 6×6 covariance of (F⁽ᵃ⁾, F⁽ᵇ⁾)."""
    T = np.hstack([np.eye(3), np.eye(3)])
    return float(np.trace(T @ covariance @ T.T))


def squeezing_parameter(readout: ContinuousReadout, bound: float = THERMAL_BOUND) -> float:
    """Return ξ² = Σₖ Var_c(Fₖ)/(N b) of the conditional state."""
    check_positive("bound", bound)
    return total_spin_variance(readout.unit_conditional_covariance()) / bound


@dataclass(frozen=True)
class WitnessResult:
    """The entanglement witness with uncertainties propagated from a spin-noise fit."""

    squeezing_parameter: Estimate  # ξ²
    entangled_atoms: Estimate  # (1 − ξ²) N, a lower bound when ξ² < 1
    bound: float  # the separable bound b per atom
    entangled: bool  # ξ² below 1 by more than three standard deviations

    def summary(self) -> str:
        """Return one line saying what the witness shows."""
        if self.entangled:
            return f"ξ² = {self.squeezing_parameter}: ≥ {self.entangled_atoms} atoms entangled"
        return f"ξ² = {self.squeezing_parameter}: no entanglement claimed"


def entanglement_witness(fit: SpinNoiseFit, bound: float = THERMAL_BOUND) -> WitnessResult:
    """Return ξ² and (1 − ξ²) N of the conditional state a fit describes, with uncertainties."""

    def witness(values: dict[str, float]) -> np.ndarray:
        xi2 = squeezing_parameter(ContinuousReadout.from_fit(fit, values), bound)
        return np.array([xi2, (1.0 - xi2) * values["atom_number"]])

    value, sigma = fit.propagate(witness)
    xi2 = Estimate(float(value[0]), float(sigma[0]))
    return WitnessResult(
        squeezing_parameter=xi2,
        entangled_atoms=Estimate(float(value[1]), float(sigma[1])),
        bound=bound,
        entangled=bool(xi2.value + 3.0 * xi2.uncertainty < 1.0),
    )


# --- the discrete Kalman filter -------------------------------------------------------------------
@dataclass(frozen=True)
class FilterOutput:
    """Filtered spin estimates and innovations of a record."""

    estimates: np.ndarray  # (n, 6) E[x_k | y_0 … y_k], units of ħ
    innovations: np.ndarray  # (n,) y_k − C E[x_k | y_0 … y_{k−1}], rad
    innovation_variance: float  # its predicted variance in the steady state, rad²
    settle_samples: int  # samples before the start-up transient has decayed


class KalmanFilter:
    """The steady-state Kalman filter of a sampled QND record θ_k = C x_k + v_k."""

    def __init__(self, readout: ContinuousReadout, sample_rate_Hz: float) -> None:
        self.readout = readout
        self.sample_rate_Hz = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        A, _, sigma, C = readout.unit_matrices()
        Phi = linalg.expm(A / self.sample_rate_Hz)
        W = sigma - Phi @ sigma @ Phi.T
        self.measurement_variance = readout.white_noise_psd * self.sample_rate_Hz / 2.0
        P = linalg.solve_discrete_are(
            Phi.T, C[:, None], 0.5 * (W + W.T), np.array([[self.measurement_variance]])
        )
        P = 0.5 * (P + P.T)
        self.innovation_variance = float(C @ P @ C) + self.measurement_variance
        gain = P @ C / self.innovation_variance
        self._unit_predicted = P
        self._unit_filtered = P - np.outer(gain, C @ P)
        self._Phi, self._C, self._gain = Phi, C, gain
        # x⁺_k = F x⁺_{k−1} + K y_k with F = (1 − K C) Φ, run mode by mode.
        F = (np.eye(6) - np.outer(gain, C)) @ Phi
        eigenvalues, V = np.linalg.eig(F)
        if np.linalg.cond(V) > _MAX_EIGENVECTOR_CONDITION:
            raise np.linalg.LinAlgError("the filter's transition matrix has no usable eigenbasis")
        self._eigenvalues, self._modes = eigenvalues, V
        self._mode_gain = np.linalg.solve(V, gain.astype(complex))
        slowest = float(np.max(np.abs(eigenvalues)))
        self.settle_samples = math.ceil(math.log(_SETTLED_AMPLITUDE) / math.log(slowest))

    @property
    def predicted_covariance(self) -> np.ndarray:
        """Return the steady one-step prediction covariance P, in units of ħ²."""
        return self._unit_predicted * self.readout.model.atom_number

    @property
    def filtered_covariance(self) -> np.ndarray:
        """Return the steady filtered covariance P⁺ = Cov(x_k | y_0 … y_k), in units of ħ²."""
        return self._unit_filtered * self.readout.model.atom_number

    def run(self, record_rad: np.ndarray) -> FilterOutput:
        """Filter a record of the observed angle (starting from the thermal prior mean)."""
        y = np.asarray(record_rad, dtype=float)
        if y.ndim != 1 or y.size == 0:
            raise ValueError("the record must be a non-empty one-dimensional array")
        if not np.all(np.isfinite(y)):
            raise ValueError("the record holds NaN or infinite samples")
        modes = np.empty((6, y.size), dtype=complex)
        for j, lam in enumerate(self._eigenvalues):
            modes[j] = signal.lfilter([self._mode_gain[j]], [1.0, -lam], y)
        unit = (self._modes @ modes).real
        predicted = np.concatenate([[0.0], (self._C @ self._Phi) @ unit[:, :-1]])
        return FilterOutput(
            estimates=unit.T * math.sqrt(self.readout.model.atom_number),
            innovations=y - predicted,
            innovation_variance=self.innovation_variance,
            settle_samples=self.settle_samples,
        )


@dataclass(frozen=True)
class InnovationsCheck:
    """Whether the filter's innovations are white with the predicted variance."""

    normalised_variance: float  # sample variance / predicted variance (1 for a right model)
    variance_p_value: float  # two-sided, from χ²(n)
    ljung_box: float  # Q = n(n+2) Σ ρ̂ₖ²/(n−k)
    lags: int
    autocorrelation_p_value: float  # from χ²(lags)
    samples: int

    @property
    def consistent(self) -> bool:
        """Return True when neither test rejects the model at the 1 % level."""
        return self.variance_p_value > 0.01 and self.autocorrelation_p_value > 0.01


def innovations_check(
    innovations: np.ndarray, predicted_variance: float, *, skip: int = 0, lags: int = 20
) -> InnovationsCheck:
    """Test innovations for whiteness (Ljung–Box) and for their predicted variance."""
    e = np.asarray(innovations, dtype=float)[skip:]
    variance = check_positive("predicted_variance", predicted_variance, "rad^2")
    lags = int(check_range("lags", lags, 1, math.inf))
    n = e.size
    if n <= 10 * lags:
        raise ValueError(f"{n} innovations after skipping {skip}: need more than {10 * lags}")
    if not np.all(np.isfinite(e)):
        raise ValueError("the innovations hold NaN or infinite values")
    u = e / math.sqrt(variance)
    sum_squares = float(u @ u)
    tail = stats.chi2.sf(sum_squares, n)
    variance_p = float(min(1.0, 2.0 * min(tail, 1.0 - tail)))
    centred = u - u.mean()
    c0 = float(centred @ centred)
    rho = np.array([float(centred[:-j] @ centred[j:]) / c0 for j in range(1, lags + 1)])
    q = n * (n + 2) * float(np.sum(rho**2 / (n - np.arange(1, lags + 1))))
    return InnovationsCheck(
        normalised_variance=sum_squares / n,
        variance_p_value=variance_p,
        ljung_box=q,
        lags=lags,
        autocorrelation_p_value=float(stats.chi2.sf(q, lags)),
        samples=n,
    )
