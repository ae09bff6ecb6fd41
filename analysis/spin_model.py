"""The two-manifold Bloch–Langevin model of the collective ⁸⁷Rb spin (docs/physics.md §3).

State x = (F⁽ᵃ⁾, F⁽ᵇ⁾) ∈ ℝ⁶, ordered (F⁽ᵃ⁾ₓ, F⁽ᵃ⁾ᵧ, F⁽ᵃ⁾_z, F⁽ᵇ⁾ₓ, F⁽ᵇ⁾ᵧ, F⁽ᵇ⁾_z), summed over
the N atoms in the beam; dx/dt = A x + ξ with A = R ⊗ 1₃ + diag(γ_a, γ_b) ⊗ [B×] and the
isotropic 2×2 relaxation matrix R = R_SE M_SE + R_SD′ M_SD − R_D.

Because R and Σ are isotropic, A splits in the frame of B into three 2×2 blocks: the component
along B relaxes with R, the two circular components transverse to B evolve with R ± i|B|Γ
(Γ = diag(γ_a, γ_b)). A probe along ẑ at an angle α to B sees the first with weight cos²α and
each of the others with sin²α/2. Spectra are evaluated block by block in closed form, which is
exact, fast (a fit evaluates it thousands of times) and well conditioned at the exceptional
point where the two transverse modes merge on the way into SERF.

Transit through the probe beam (Lucivero et al., PRA 96, 062702 (2017)). The probe weights each
atom by the intensity I(r) ∝ exp(−2r²/w²) at its place (w the 1/e² intensity radius). Atoms
diffuse freely across the beam (the cell is much wider than w), so the correlation of the
beam-weighted spin is ∫∫ I(r) I(r′) G(r − r′, τ) / ∫ I² = 1/(1 + τ/τ_D) with τ_D = w²/(4D): the
intensity autocorrelation has a variance w²/2 per axis, and the diffusion kernel adds 2Dτ. That
factor multiplies the wall mode's correlation. To stay a linear Gaussian state-space model, it
is written as an exponential sum, 1/(1 + x) = ∫₀^∞ e^{−s} e^{−sx} ds ≈ Σ_m w_m e^{−s_m x}: M
copies of the 6-dim model ("transit modes"), copy m with the extra decay s_m/τ_D and stationary
covariance w_m Σ (w_m N of the atoms). Copies are independent and all seen by the same C.

The quadrature: Gauss–Laguerre converges slowly here (its nodes leave out the long 1/x tail that
a slow wall mode reaches: 7 % error in the spectrum with 8 nodes when Γ τ_D = 0.1), so the
integral is taken in u = ln s by the trapezoidal (sinc) rule, s_m = exp(u₀ + m h), weights
∝ h s_m e^{−s_m} scaled to Σ w_m = 1 (the variance stays exact). With M = 7, h = 1.28,
u₀ = −7 (s from 9×10⁻⁴ to 2.0): the spectrum of any line whose decay without transit Γ
satisfies Γτ_D ≥ 0.01 is within 1 % of the exact one (the Laplace transform of the sum is within
0.8 % of e^p E₁(p) for Re p ≥ 0.01, where the maximum principle puts the worst case), the
correlation is within 0.4 % of 1 absolutely at every τ and within 0.7 % relatively for
τ ≤ 10 τ_D. (tests/test_spin_model.py checks these against the closed forms.)

The atom number N is that of the beam-weighted mode: N = n π w² L, the atoms in the effective
area A = (∫I)²/∫I² = π w² of the beam, so that Var θ = Σ c² Var(F)·N holds as without transit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis.checks import check_positive, check_range, check_vector
from scipy.linalg import expm

M_SE = np.array([[-1.0, 5.0], [1.0, -5.0]]) / 8.0
M_SD = np.array([[-7.0, 15.0], [3.0, -11.0]]) / 16.0
# Thermal variance per atom and per axis of F⁽ᵃ⁾ and F⁽ᵇ⁾: 5/8·2 and 3/8·2/3.
THERMAL_VARIANCE_PER_ATOM = np.array([5.0 / 4.0, 1.0 / 4.0])
_EYE3 = np.eye(3)
PROBE_AXIS = np.array([0.0, 0.0, 1.0])
# The transit quadrature (module docstring): M nodes s_m = exp(u₀ + m h) of the sinc rule in ln s.
TRANSIT_MODE_COUNT = 7
_TRANSIT_FIRST_LOG_NODE = -7.0
_TRANSIT_LOG_STEP = 1.28
#: What the transit quadrature guarantees: spectra within this for Γ τ_D ≥ TRANSIT_MIN_DECAY.
TRANSIT_SPECTRUM_ACCURACY = 0.01
TRANSIT_MIN_DECAY = 0.01


def transit_quadrature(count: int = TRANSIT_MODE_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """Return (s_m, w_m) with 1/(1 + x) ≈ Σ w_m e^{−s_m x}, Σ w_m = 1: the transit modes.

    ``count`` other than the default keeps the step and the upper end (for convergence tests).
    """
    count = int(check_range("count", count, 1, 64, "modes"))
    top = _TRANSIT_FIRST_LOG_NODE + _TRANSIT_LOG_STEP * (TRANSIT_MODE_COUNT - 1)
    nodes = np.exp(top - _TRANSIT_LOG_STEP * np.arange(count)[::-1])
    weights = _TRANSIT_LOG_STEP * nodes * np.exp(-nodes)
    return nodes, weights / weights.sum()


def cross_matrix(vector: np.ndarray) -> np.ndarray:
    """Return the matrix [v×] with [v×] u = v × u."""
    x, y, z = vector
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def exp2x2(matrix: np.ndarray) -> np.ndarray:
    """Return exp(M) of a 2×2 matrix in closed form, exact also where M has no eigenbasis.

    exp(M) = [(e^{λ₊} + e^{λ₋})/2] 1 + [(e^{λ₊} − e^{λ₋})/(λ₊ − λ₋)] (M − t 1), λ± = t ± d,
    t = tr M/2, d² = t² − det M. The divided difference becomes e^t (1 + d²/6 + d⁴/120) for
    small d. (scipy.linalg.expm costs 10⁴ times more per 2×2 call on a busy multi-core machine,
    where its BLAS threads wait for a time slice.)
    """
    t = 0.5 * (matrix[0, 0] + matrix[1, 1])
    d = np.sqrt(complex(t * t - (matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0])))
    upper, lower = np.exp(t + d), np.exp(t - d)
    if abs(d) < 1e-3:
        divided = np.exp(t) * (1.0 + d * d / 6.0 + d**4 / 120.0)
    else:
        divided = (upper - lower) / (2.0 * d)
    return 0.5 * (upper + lower) * np.eye(2) + divided * (matrix - t * np.eye(2))


# Quadratic Zeeman effect (Breit–Rabi, second order in x = (g_J − g_I) μ_B B/(h ν_hfs)): the
# F = 2 level m moves by (ν_hfs x²/4)(1 − m²/4), so the line m ↔ m−1 moves by (ν_hfs x²/16)(1 − 2m):
# −3, −1, +1, +3 units for m = 2 … −1, seen by spin noise with weights F(F+1) − m(m−1) = 4, 6, 6,
# 4 (F = 1: ±1 unit, smaller). A Lorentzian of half width Γ split over lines at δ_i changes at
# its peak by 1 − Σ p_i/(1 + δ_i²/Γ²) ≈ ⟨δ²⟩/Γ² relative: the model, which has no such term, is
# refused where that exceeds QUADRATIC_ZEEMAN_TOLERANCE. (Spin exchange narrows the spread in
# SERF, so the refusal is conservative there, where it only matters at high field.)
QUADRATIC_ZEEMAN_TOLERANCE = 0.01
_QUADRATIC_ZEEMAN_SHIFTS = np.array([-3.0, -1.0, 1.0, 3.0])  # units of ν_hfs x²/16
_QUADRATIC_ZEEMAN_WEIGHTS = np.array([4.0, 6.0, 6.0, 4.0]) / 20.0
_QUADRATIC_ZEEMAN_RMS_UNITS = math.sqrt(
    float(_QUADRATIC_ZEEMAN_WEIGHTS @ _QUADRATIC_ZEEMAN_SHIFTS**2)
)
# A mode must carry this share of the observed variance to count as a precessing line.
_LINE_MIN_FRACTION = 0.1


def quadratic_zeeman_spread_rad_per_s(field_magnitude_T: float) -> float:
    """Return the rms second-order Zeeman shift of the F = 2 spin-noise lines, in rad/s."""
    x = (k.G_J - k.G_I) * k.BOHR_MAGNETON_OVER_h_Hz_per_T * field_magnitude_T
    x /= k.HYPERFINE_SPLITTING_Hz
    return 2 * math.pi * _QUADRATIC_ZEEMAN_RMS_UNITS * k.HYPERFINE_SPLITTING_Hz * x * x / 16.0


def quadratic_zeeman_peak_change(ratio: float) -> float:
    """Return 1 − Σ p_i/(1 + δ_i²/Γ²), the relative change of a line's peak, from rms δ/Γ."""
    relative = (ratio / _QUADRATIC_ZEEMAN_RMS_UNITS * _QUADRATIC_ZEEMAN_SHIFTS) ** 2
    return float(_QUADRATIC_ZEEMAN_WEIGHTS @ (relative / (1.0 + relative)))


@dataclass(frozen=True)
class Mode:
    """One eigenmode of the spin dynamics as seen by an observable."""

    frequency_Hz: float  # precession frequency (≥ 0)
    decay_rate: float  # amplitude decay rate Γ in s⁻¹; the line's HWHM is Γ/2π in Hz
    variance: float  # contribution to the observable's variance (may carry a dispersive part)
    fraction: float  # variance / total variance of the observable

    @property
    def hwhm_Hz(self) -> float:
        """Return the half width at half maximum of the mode's Lorentzian in Hz."""
        return self.decay_rate / (2 * math.pi)


@dataclass(frozen=True)
class SpinModel:
    """Linear spin dynamics of a thermal ⁸⁷Rb ensemble: field, rates and atom number."""

    field_T: np.ndarray
    spin_exchange_rate: float  # R_SE, s⁻¹
    spin_destruction_rate: float  # R_SD′ = R_SD + R_pr, s⁻¹
    diffusion_rate: float = 0.0  # R_D, s⁻¹
    atom_number: float = 1.0  # N of the beam-weighted mode (module docstring)
    transit_time_s: float = math.inf  # τ_D = w²/(4D); inf: no transit through the beam
    gamma_upper: float = field(default=k.GAMMA_UPPER_rad_per_sT)
    gamma_lower: float = field(default=k.GAMMA_LOWER_rad_per_sT)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_T", check_vector("field_T", self.field_T, 3, "T"))
        for name in ("spin_exchange_rate", "spin_destruction_rate", "diffusion_rate"):
            check_range(name, getattr(self, name), 0.0, math.inf, "s^-1", high_open=True)
        check_positive("atom_number", self.atom_number)
        if self.transit_time_s != math.inf:
            check_positive("transit_time_s", self.transit_time_s, "s")
        if self.spin_destruction_rate + self.diffusion_rate <= 0.0:
            raise ValueError(
                "spin_destruction_rate + diffusion_rate must be > 0: without relaxation the "
                "spin-temperature mode never decays and the thermal state is not stationary"
            )

    # --- the matrices of docs/physics.md §3 ------------------------------------------------------
    @property
    def gyromagnetic_ratios(self) -> np.ndarray:
        """Return diag(γ_a, γ_b) in rad s⁻¹ T⁻¹."""
        return np.diag([self.gamma_upper, self.gamma_lower])

    def transit_modes(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (extra decay rates s_m/τ_D in s⁻¹, weights w_m) of the transit modes."""
        if math.isinf(self.transit_time_s):
            return np.zeros(1), np.ones(1)
        nodes, weights = transit_quadrature()
        return nodes / self.transit_time_s, weights

    def transit_correlation(self, lag_s: np.ndarray) -> np.ndarray:
        """Return Σ w_m e^{−s_m τ/τ_D}, the model's transit factor ≈ 1/(1 + τ/τ_D), at lags τ."""
        rates, weights = self.transit_modes()
        tau = np.abs(np.asarray(lag_s, dtype=float))
        return np.exp(-np.multiply.outer(tau, rates)) @ weights

    def relaxation_matrix(self) -> np.ndarray:
        """Return the 2×2 relaxation matrix R = R_SE M_SE + R_SD′ M_SD − R_D 1 in s⁻¹."""
        return (
            self.spin_exchange_rate * M_SE
            + self.spin_destruction_rate * M_SD
            - self.diffusion_rate * np.eye(2)
        )

    def drift_matrix(self) -> np.ndarray:
        """Return the 6×6 drift matrix A of the wall mode (no transit) in s⁻¹."""
        # R ⊗ 1₃ + diag(γ_a, γ_b) ⊗ [B×], block by block (np.kron's overhead, three times per
        # model, was a tenth of a fit's evaluation).
        R, cross = self.relaxation_matrix(), cross_matrix(self.field_T)
        A = np.zeros((6, 6))
        for i, gamma in enumerate((self.gamma_upper, self.gamma_lower)):
            for j in range(2):
                A[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] = R[i, j] * _EYE3
            A[3 * i : 3 * i + 3, 3 * i : 3 * i + 3] += gamma * cross
        return A

    def stationary_covariance(self) -> np.ndarray:
        """Return the thermal covariance Σ (6×6): Var F⁽ᵃ⁾ₖ = 5N/4, Var F⁽ᵇ⁾ₖ = N/4."""
        return np.diag(np.repeat(THERMAL_VARIANCE_PER_ATOM * self.atom_number, 3))

    def noise_covariance(self) -> np.ndarray:
        """Return Q = −(AΣ + ΣAᵀ), the Langevin noise that keeps Σ stationary."""
        A, S = self.drift_matrix(), self.stationary_covariance()
        return -(A @ S + S @ A.T)

    def observation_vector(
        self, coupling_upper: float, coupling_lower: float, axis: np.ndarray = PROBE_AXIS
    ) -> np.ndarray:
        """Return C with θ = C x = c_a F⁽ᵃ⁾·n − c_b F⁽ᵇ⁾·n for a probe along the unit vector n."""
        n = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        return np.concatenate([coupling_upper * n, -coupling_lower * n])

    def block_model(
        self, coupling_upper: float, coupling_lower: float, axis: np.ndarray = PROBE_AXIS
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (A, Q, Σ, C) of the full model with transit, dimension 6M: dx/dt = Ax + ξ.

        x stacks the M transit modes (F⁽ᵃ⁾, F⁽ᵇ⁾)_m; A = diag(A_wall − s_m/τ_D), Σ = diag(w_m Σ),
        Q = −(AΣ + ΣAᵀ), θ = C x with C the 6-dim observation repeated; the beam-weighted spin
        is the sum of the modes. Without transit (τ_D = ∞) it is the 6-dim model itself.
        """
        A_m, S_m, c = self.mode_blocks(coupling_upper, coupling_lower, axis)
        size = 6 * len(A_m)
        A, S = np.zeros((size, size)), np.zeros((size, size))
        for m in range(len(A_m)):
            b = slice(6 * m, 6 * m + 6)
            A[b, b], S[b, b] = A_m[m], S_m[m]
        Q = -(A @ S + S @ A.T)
        return A, 0.5 * (Q + Q.T), S, np.tile(c, len(A_m))

    def mode_blocks(
        self, coupling_upper: float, coupling_lower: float, axis: np.ndarray = PROBE_AXIS
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the transit modes' (A_m, Σ_m) stacked (M × 6 × 6) and the observation c of
        each: A_m = A_wall − s_m/τ_D, Σ_m = w_m Σ, θ = Σ_m c x_m (the diagonal blocks of
        `block_model`, for what treats the modes one by one)."""
        rates, weights = self.transit_modes()
        A = self.drift_matrix()[None] - rates[:, None, None] * np.eye(6)
        S = weights[:, None, None] * self.stationary_covariance()
        return A, S, self.observation_vector(coupling_upper, coupling_lower, axis)

    def discrete_transition(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Return (Φ, W) of the wall mode's exact update x_{k+1} = Φ x_k + w_k, w_k ~ N(0, W)."""
        check_positive("dt_s", dt_s, "s")
        Phi = expm(self.drift_matrix() * dt_s)
        S = self.stationary_covariance()
        W = S - Phi @ S @ Phi.T
        return Phi, 0.5 * (W + W.T)

    # --- the block structure ------------------------------------------------------------------
    def blocks(self, axis: np.ndarray = PROBE_AXIS) -> list[tuple[float, np.ndarray]]:
        """Return [(weight, X)]: the 2×2 generators along B and of the two circular components.

        The weights cos²α, sin²α/2, sin²α/2 are how much of each block a probe along ``axis`` sees.
        """
        R = self.relaxation_matrix().astype(complex)
        b = float(np.linalg.norm(self.field_T))
        n = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        cos2 = 1.0 if b == 0.0 else float(np.dot(self.field_T / b, n)) ** 2
        rotation = 1j * b * self.gyromagnetic_ratios
        return [(cos2, R), ((1 - cos2) / 2, R + rotation), ((1 - cos2) / 2, R - rotation)]

    def _coupling_pair(self, coupling_upper: float, coupling_lower: float) -> np.ndarray:
        """Return κ = (c_a, −c_b), the per-axis weights of F⁽ᵃ⁾ and F⁽ᵇ⁾ in θ."""
        return np.array([coupling_upper, -coupling_lower])

    def variance(self, coupling_upper: float, coupling_lower: float) -> float:
        """Return the variance of θ = C x in the thermal state, in rad²."""
        kappa = self._coupling_pair(coupling_upper, coupling_lower)
        return float(kappa @ (THERMAL_VARIANCE_PER_ATOM * self.atom_number * kappa))

    def psd(
        self,
        frequency_Hz: np.ndarray,
        coupling_upper: float,
        coupling_lower: float,
        axis: np.ndarray = PROBE_AXIS,
    ) -> np.ndarray:
        """Return the one-sided PSD of θ = C x in rad²/Hz: 4 Re[C (iω − A)⁻¹ Σ Cᵀ].

        With transit, the sum over the modes of w_m times the wall spectrum at decay + s_m/τ_D.
        """
        omega = 2 * math.pi * np.asarray(frequency_Hz, dtype=float)
        kappa = self._coupling_pair(coupling_upper, coupling_lower)
        s = THERMAL_VARIANCE_PER_ATOM * self.atom_number * kappa
        rates, shares = self.transit_modes()
        total = np.zeros(omega.shape, dtype=complex)
        iw = 1j * omega[..., None] + rates  # the transit modes side by side on the last axis
        for weight, X in self.blocks(axis):
            if weight == 0.0:
                continue
            m11, m22 = iw - X[0, 0], iw - X[1, 1]
            m12, m21 = -X[0, 1], -X[1, 0]
            u = (kappa[0] * (m22 * s[0] - m12 * s[1]) + kappa[1] * (m11 * s[1] - m21 * s[0])) / (
                m11 * m22 - m12 * m21
            )
            total += weight * (u @ shares)
        return 4.0 * total.real

    def sampled_psd(
        self,
        frequency_Hz: np.ndarray,
        sample_rate_Hz: float,
        coupling_upper: float,
        coupling_lower: float,
        axis: np.ndarray = PROBE_AXIS,
    ) -> np.ndarray:
        """Return the one-sided PSD of θ sampled instantaneously at ``sample_rate_Hz``, in rad²/Hz.

        This is the aliased spectrum a digitiser without anti-alias filter records:
        (2/f_s)·[R₀ + 2 Re Σ_{k≥1} R_k e^{−iωk/f_s}], with R_k = C Φᵏ Σ Cᵀ (summed over the
        transit modes, whose Φ is the wall mode's times e^{−s_m/(τ_D f_s)}).
        """
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        z = np.exp(2j * math.pi * np.asarray(frequency_Hz, dtype=float) / fs)
        kappa = self._coupling_pair(coupling_upper, coupling_lower)
        s = THERMAL_VARIANCE_PER_ATOM * self.atom_number * kappa
        lagged = np.zeros(z.shape, dtype=complex)
        rates, shares = self.transit_modes()
        for weight, X in self.blocks(axis):
            if weight == 0.0:
                continue
            wall = exp2x2(X / fs)
            for rate, share in zip(rates, shares, strict=True):
                Phi = wall * math.exp(-rate / fs)
                t = Phi @ s  # Φ Σ κᵀ
                m11, m22 = z - Phi[0, 0], z - Phi[1, 1]
                m12, m21 = -Phi[0, 1], -Phi[1, 0]
                det = m11 * m22 - m12 * m21
                u1 = (m22 * t[0] - m12 * t[1]) / det
                u2 = (m11 * t[1] - m21 * t[0]) / det
                lagged += share * weight * (kappa[0] * u1 + kappa[1] * u2)
        variance = float(kappa @ s)
        return (2.0 / fs) * (variance + 2.0 * lagged.real)

    def quadratic_zeeman_ratio(
        self, coupling_upper: float, coupling_lower: float, axis: np.ndarray = PROBE_AXIS
    ) -> float:
        """Return the rms quadratic Zeeman spread over Γ, the narrowest precessing line's decay.

        Γ is the wall mode's (transit only broadens the line, so this is an upper bound); 0 when
        the probe sees no precessing line.
        """
        lines = [
            m
            for m in self.eigenmodes(coupling_upper, coupling_lower, axis)
            if m.frequency_Hz > 0 and m.fraction >= _LINE_MIN_FRACTION
        ]
        if not lines:
            return 0.0
        spread = quadratic_zeeman_spread_rad_per_s(float(np.linalg.norm(self.field_T)))
        return spread / lines[0].decay_rate

    def eigenmodes(
        self, coupling_upper: float, coupling_lower: float, axis: np.ndarray = PROBE_AXIS
    ) -> list[Mode]:
        """Return the wall modes seen by θ = C x, at frequencies ≥ 0, narrowest first.

        With transit every one of them is further multiplied by ≈ 1/(1 + τ/τ_D) in time: the
        decay rates here are those of the wall modes, without the transit through the beam.
        """
        kappa = self._coupling_pair(coupling_upper, coupling_lower)
        s = THERMAL_VARIANCE_PER_ATOM * self.atom_number * kappa
        total = float(kappa @ s)
        modes = []
        for weight, X in self.blocks(axis):
            if weight == 0.0:
                continue
            eigenvalues, V = np.linalg.eig(X)
            W = np.linalg.inv(V)
            for j, lam in enumerate(eigenvalues):
                if lam.imag < 0 or (lam.imag == 0 and X.imag.any()):
                    # Negative frequencies are the conjugate block's; a transverse mode at zero
                    # frequency (B = 0 with weight 0) never reaches here.
                    continue
                amplitude = weight * (kappa @ V[:, j]) * (W[j] @ s)
                # A mode at ω > 0 from one circular block has its mirror in the other block.
                variance = 2.0 * amplitude.real if lam.imag > 0 else amplitude.real
                modes.append(
                    Mode(
                        frequency_Hz=float(lam.imag / (2 * math.pi)),
                        decay_rate=float(-lam.real),
                        variance=float(variance),
                        fraction=float(variance / total),
                    )
                )
        return sorted(modes, key=lambda m: m.decay_rate)
