"""Continuous QND readout of the collective spin: Kalman filter, Riccati covariance, witness.

PHYSICS.md §6. The spin x obeys dx = A x dt + dW with E[dW dWᵀ] = Q dt, Q = −(AΣ + ΣAᵀ) (§3),
and the polarimeter records y(t) = C x(t) + v(t), v white. x is the 6-vector (F⁽ᵃ⁾, F⁽ᵇ⁾) of
the two-manifold model, or a stack of M such 6-vectors (spatial modes of a diffusion model,
each with its own decay and stationary weight) whose sum is the beam-weighted spin that the
probe sees and that the witness is about; every function here takes any such dimension.

Noise densities, explicitly (the factor of two):
* The measured angle spectrum is one-sided: its white floor S_θ (rad²/Hz, shot noise plus
  detector noise) satisfies Var = ∫₀^∞ S df. The same noise has the two-sided density S_θ/2,
  E[v(t) v(t′)] = (S_θ/2) δ(t − t′): the Kalman–Bucy observation intensity is R_c = S_θ/2.
* Sampled instantaneously at f_s (as the digitiser and the simulator do), each sample carries
  the variance R_d = (S_θ/2)·f_s, and the spin update is x_{k+1} = Φ x_k + w_k with
  Φ = exp(A/f_s), W = Σ − ΦΣΦᵀ (exact, §3).
* Continuous time: the conditional covariance solves AΣ_c + Σ_cAᵀ + Q − Σ_cCᵀR_c⁻¹CΣ_c = 0.
* Discrete time: the predicted covariance P solves the DARE of (Φ, C, W, R_d); the filtered one
  is P⁺ = P − PCᵀ(CPCᵀ + R_d)⁻¹CP. As f_s → ∞, W → Q/f_s and R_d/f_s = R_c, so P⁺ → Σ_c.

Both are computed in units of √N (x̃ = x/√N), where the matrices of one spatial mode are of
order one.

Entanglement witness (Tóth & Mitchell, NJP 12, 053007 (2010)): every separable state of atoms
with spins fᵢ obeys Σₖ Var(Fₖ) ≥ Σᵢ fᵢ; for ⁸⁷Rb the bound is built up atom by atom. The operators
f of one ⁸⁷Rb atom are block-diagonal in its two hyperfine manifolds, so an atom with upper
population p has Σₖ Var(fₖ) = ⟨f²⟩ − |⟨f⟩|² ≥ 6p + 2(1 − p) − (2p + 1 − p)² = 1 + 2p − p²
(``single_atom_bound``). A separable state is a mixture of products, and the variance of a
mixture is at least the mixture of the variances, so the bound of N atoms is the smallest mean
of b₁(pᵢ) over atoms whose populations average to p_a. b₁ is concave, so that smallest mean is
not b₁(p_a) but the chord through its end points: atoms each wholly in F = 2 (b₁ = 2) or wholly
in F = 1 (b₁ = 1) reach N(1 + p_a). The bound is therefore b = 1 + p_a per atom
(``separable_bound``): 13/8 for the thermal populations p_a = 5/8 of the hot vapour, and b = 1
when nothing is assumed about the populations. (b₁(5/8) = 1.859 is not a separability bound: a
separable mixture with thermal marginals reaches 13N/8.) ξ² = Σₖ Var_c(Fₖ)/(N b) < 1 witnesses
entanglement, with at least (1 − ξ²) N entangled atoms (Behbood et al., PRL 113, 093601 (2014)).
The thermal state itself has ξ² = 3·(5/4 + 1/4)/(13/8) = 4.5/1.625. The systematic of the
population assumption is reported as the spread ξ²(b = 1) − ξ²(13/8): the thermal value's own
uncertainty is negligible (the Boltzmann factor of the 6.8 GHz splitting at 450 K moves p_a by
−1.7 × 10⁻⁴), but hyperfine pumping by the probe could move the populations, and b = 1 holds
whatever they are.

After the readout stops, the covariance relaxes back from Σ_c to Σ:
Σ(τ) = Σ + e^{Aτ}(Σ_c − Σ)e^{Aᵀτ}, and ξ²(τ) rises back to the thermal value; the entanglement
lifetime τ_ent is the first τ where ξ²(τ) reaches 1.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis.checks import check_positive, check_range
from hotspin.analysis.detection import DetectionChain, detected_atoms, detected_white_noise
from hotspin.analysis.experiment import DerivedQuantities
from hotspin.analysis.fits import Estimate, SpinNoiseFit
from hotspin.analysis.spin_model import PROBE_AXIS, SpinModel
from scipy import linalg, optimize, signal, stats
from threadpoolctl import ThreadpoolController, threadpool_limits

# A detection chain's state whose carry e^{−ω_c T} over one sample is below this has forgotten
# itself: the sampled model of plain decimation is reduced to the spins (`sampled`).
_FORGOTTEN = 1e-12
# Eigenvector conditioning beyond which the modal form of the filter would lose accuracy.
_MAX_EIGENVECTOR_CONDITION = 1e10
# The filter starts from the prior mean with the steady gain; this much of the start-up error
# amplitude may remain in the samples the whiteness test uses.
_SETTLED_AMPLITUDE = 1e-3
_MAX_SETTLE_SAMPLES = 1 << 26  # beyond any record: reported as is
# Newton–Kleinman iterations of the Riccati equation: at most this many, stopped when a step
# changes Σ_c by less than this fraction, or no longer shrinks once below the next one (rounding),
# and the result refused when the residual of the equation exceeds the last fraction of its
# largest term.
_NEWTON_MAX_STEPS = 100
_NEWTON_STEP_TOLERANCE = 1e-13
_NEWTON_STALLED = 1e-9
_RICCATI_RESIDUAL_TOLERANCE = 1e-9
# The lifetime search: steps of at most this fraction of the fastest precession period and of
# the slowest decay time, and no further than this many slowest decay times.
_LIFETIME_STEPS_PER_PERIOD = 32
_LIFETIME_STEPS_PER_DECAY = 20
_LIFETIME_SEARCH_DECAYS = 200.0
# OpenBLAS threads stall the small matrix products of these solvers on a busy machine (a 96 × 96
# block model takes seconds instead of milliseconds): one thread.
_ONE_BLAS_THREAD = {"limits": 1, "user_api": "blas"}
# Found once: a new threadpool_limits looks the libraries up again (milliseconds, per block).
_BLAS = ThreadpoolController()
# Batches of the τ-ahead prediction errors for the standard error of their variance.
_PREDICTION_BATCHES = 30


# --- the separable bound --------------------------------------------------------------------------
def single_atom_bound(upper_population: float) -> float:
    """Return 1 + 2p − p², the least Σₖ Var(fₖ) of one ⁸⁷Rb atom with upper population p."""
    p = check_range("upper_population", upper_population, 0.0, 1.0)
    return 1.0 + 2.0 * p - p * p


def separable_bound(upper_population: float = k.POPULATION_UPPER) -> float:
    """Return b = 1 + p_a, the least Σₖ Var(Fₖ)/N of a separable state with mean population p_a."""
    return 1.0 + check_range("upper_population", upper_population, 0.0, 1.0)


THERMAL_BOUND = separable_bound()  # 13/8
POPULATION_FREE_BOUND = separable_bound(0.0)  # 1: every atom could be in F = 1


# --- generic linear-Gaussian algebra --------------------------------------------------------------
def spin_projection(dimension: int) -> np.ndarray:
    """Return P (3 × n) with F = P x, the beam-weighted F⁽ᵃ⁾ + F⁽ᵇ⁾ of a stack of 6-dim modes."""
    if dimension <= 0 or dimension % 6:
        raise ValueError(
            f"state dimension {dimension}: a spin state is a stack of 6-dimensional "
            "(F⁽ᵃ⁾, F⁽ᵇ⁾) modes"
        )
    return np.tile(np.hstack([np.eye(3), np.eye(3)]), dimension // 6)


def total_spin_variance(covariance: np.ndarray, projection: np.ndarray | None = None) -> float:
    """Return Σₖ Var(Fₖ) of F = P x from the covariance of the spin state x."""
    P = spin_projection(covariance.shape[0]) if projection is None else projection
    return float(np.trace(P @ covariance @ P.T))


def riccati_residual(
    drift: np.ndarray,
    noise: np.ndarray,
    observation: np.ndarray,
    intensity: float | np.ndarray,
    covariance: np.ndarray,
) -> float:
    """Return |AX + XAᵀ + Q − XCᵀR⁻¹CX| relative to its largest term (max norm)."""
    C = np.atleast_2d(observation)
    XC = covariance @ C.T
    terms = (
        drift @ covariance,
        covariance @ drift.T,
        noise,
        XC @ np.linalg.solve(np.atleast_2d(intensity), XC.T),
    )
    residual = terms[0] + terms[1] + terms[2] - terms[3]
    return float(np.abs(residual).max() / max(np.abs(t).max() for t in terms))


@threadpool_limits.wrap(**_ONE_BLAS_THREAD)
def solve_conditional_covariance(
    drift: np.ndarray,
    noise: np.ndarray,
    observation: np.ndarray,
    intensity: float | np.ndarray,
    stationary: np.ndarray,
) -> np.ndarray:
    """Return Σ_c, the stationary Kalman–Bucy covariance of dx = Ax dt + dW given y = Cx + v.

    ``noise`` is Q (E[dW dWᵀ] = Q dt), ``intensity`` R (E[v vᵀ] = R δ), ``stationary`` Σ, the
    unconditioned covariance, used to scale every state component to unit variance first.
    Solved by Kleinman's Newton iteration (IEEE TAC 13, 114 (1968)) from Σ₀ = 0: each step
    is one Lyapunov equation (A − Σ_kG)X + X(A − Σ_kG)ᵀ = −(Q + Σ_kGΣ_k), G = CᵀR⁻¹C, whose
    matrix stays stable, and the iterates fall monotonically and at last quadratically to the
    stabilising solution (A is stable, so Σ₀ = 0 is a stabilising start; Σ₁ is Σ). scipy's
    solve_continuous_are (the Schur vectors of the Hamiltonian) is not used: on these stiff
    models (R_SE ≫ the slow rates) it leaves residuals of 1e-7 to 1e-3 of the terms, and on
    block models with spatial modes of very unequal weight it stops with "eigenvalues too
    close to the imaginary axis". The residual of the result is checked.
    """
    A = np.asarray(drift, dtype=float)
    n = A.shape[0]
    if A.shape != (n, n) or np.shape(noise) != (n, n) or np.shape(stationary) != (n, n):
        raise ValueError(
            f"drift {A.shape}, noise {np.shape(noise)} and stationary {np.shape(stationary)} "
            "must be square matrices of one dimension"
        )
    C = np.atleast_2d(np.asarray(observation, dtype=float))
    if C.shape[1] != n:
        raise ValueError(f"observation {C.shape} does not act on a state of dimension {n}")
    R = np.atleast_2d(np.asarray(intensity, dtype=float))
    if R.shape != (C.shape[0], C.shape[0]) or np.any(np.linalg.eigvalsh(R) <= 0):
        raise ValueError(f"intensity {R.tolist()} must be positive definite, one per observation")
    if np.max(np.linalg.eigvals(A).real) >= 0.0:
        raise ValueError("the drift matrix has a mode that does not decay: no stationary state")
    scale = np.sqrt(np.diag(stationary))
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("the stationary covariance must have a positive diagonal")
    A_unit = A * scale[None, :] / scale[:, None]  # D⁻¹ A D, D = diag(√Σ_ii)
    Q_unit = np.asarray(noise, dtype=float) / np.outer(scale, scale)
    Q_unit = 0.5 * (Q_unit + Q_unit.T)
    C_unit = C * scale[None, :]
    G = C_unit.T @ np.linalg.solve(R, C_unit)
    X = np.zeros((n, n))
    previous = math.inf
    for _ in range(_NEWTON_MAX_STEPS):
        closed = A_unit - X @ G
        following = linalg.solve_continuous_lyapunov(closed, -(Q_unit + X @ G @ X))
        following = 0.5 * (following + following.T)
        change = np.abs(following - X).max() / np.abs(following).max()
        X = following
        # Converged, or stalled at rounding (quadratic convergence ends in one step there).
        if change <= _NEWTON_STEP_TOLERANCE or (change >= previous and change < _NEWTON_STALLED):
            break
        previous = change
    residual = riccati_residual(A_unit, Q_unit, C_unit, R, X)
    if not residual < _RICCATI_RESIDUAL_TOLERANCE:
        raise np.linalg.LinAlgError(
            f"the Riccati equation was not solved: relative residual {residual:.2g} after "
            f"{_NEWTON_MAX_STEPS} Newton steps (accepted: {_RICCATI_RESIDUAL_TOLERANCE:g})"
        )
    return X * np.outer(scale, scale)


def relaxed_covariance(
    drift: np.ndarray, stationary: np.ndarray, conditional: np.ndarray, delay_s: float
) -> np.ndarray:
    """Return Σ(τ) = Σ + e^{Aτ}(Σ_c − Σ)e^{Aᵀτ}: the covariance τ after the readout stopped."""
    tau = check_range("delay_s", delay_s, 0.0, math.inf, "s", high_open=True)
    E = linalg.expm(np.asarray(drift) * tau)
    relaxed = stationary + E @ (conditional - stationary) @ E.T
    return 0.5 * (relaxed + relaxed.T)


@threadpool_limits.wrap(**_ONE_BLAS_THREAD)
def entanglement_lifetime_of(
    drift: np.ndarray,
    stationary: np.ndarray,
    conditional: np.ndarray,
    bound_variance: float,
    projection: np.ndarray | None = None,
) -> float:
    """Return the first τ ≥ 0 where Σₖ Var_τ(Fₖ) reaches ``bound_variance`` (N b), in s.

    0 when the conditional state is not below the bound to begin with. The search steps
    through τ (finer than the fastest precession period and the slowest decay time, after a
    geometric start that resolves the fastest decays) to the first crossing, which Brent's
    method then refines: ξ²(τ) oscillates with the precession and need not rise monotonically.
    """
    A = np.asarray(drift, dtype=float)
    P = spin_projection(A.shape[0]) if projection is None else projection
    check_positive("bound_variance", bound_variance)
    difference = conditional - stationary
    floor = total_spin_variance(stationary, P)

    def excess(E: np.ndarray) -> float:
        return floor + total_spin_variance(E @ difference @ E.T, P) - bound_variance

    if excess(np.eye(A.shape[0])) >= 0.0:
        return 0.0
    if floor <= bound_variance:
        raise ValueError("the unconditioned state is itself below the bound: it never relaxes")
    eigenvalues = np.linalg.eigvals(A)
    slowest, fastest = float(np.min(-eigenvalues.real)), float(np.max(-eigenvalues.real))
    precession = float(np.max(np.abs(eigenvalues.imag)))
    step = 1.0 / (_LIFETIME_STEPS_PER_DECAY * slowest)
    if precession > 0:
        step = min(step, 2 * math.pi / (_LIFETIME_STEPS_PER_PERIOD * precession))
    start = min(step, 1e-3 / fastest)
    grid = list(np.geomspace(start, step, 40)) if start < step else [step]
    tau_previous, tau_limit = 0.0, _LIFETIME_SEARCH_DECAYS / slowest
    E_step = linalg.expm(A * step)
    E = np.eye(A.shape[0])
    for tau in grid:
        E = linalg.expm(A * tau)
        if excess(E) >= 0.0:
            break
        tau_previous = tau
    else:
        tau = grid[-1]
        while True:
            tau += step
            E = E_step @ E
            if excess(E) >= 0.0:
                break
            if tau > tau_limit:
                raise ArithmeticError(
                    f"ξ²(τ) stays below 1 for {tau_limit:.3g} s: the lifetime search gave up"
                )
            tau_previous = tau
    return float(
        optimize.brentq(
            lambda t: excess(linalg.expm(A * t)), tau_previous, tau, xtol=1e-15, rtol=1e-13
        )
    )


# --- the readout of the spin model ----------------------------------------------------------------
@dataclass(frozen=True)
class SampledReadout:
    """s_{k+1} = Φ s_k + w_k, y_k = H s_k + u_k: the samples of a readout, exactly.

    (w_k, u_k) are Gaussian, white from sample to sample, Cov w = W, Cov(w_k, u_k) = cross,
    Var u = R; s ~ N(0, Σ). The spin x̃ = x/√N is the part ``atoms`` of s (the rest: detector
    and noise states of the detection chain, in rad); y is in rad.
    """

    transition: np.ndarray  # Φ
    output: np.ndarray  # H
    process_noise: np.ndarray  # W
    cross: np.ndarray  # Cov(w_k, u_k)
    measurement_variance: float  # R, rad²
    stationary: np.ndarray  # Σ
    atoms: np.ndarray  # indices of x̃ in s
    # y_k holds light of the interval after t_k (a boxcar, or a reduced model of plain
    # decimation): the spin the record conditions is then x(t_{k+1}), else x(t_k).
    averaged: bool = False

    def riccati(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the steady predicted and filtered covariances (P, P⁺) of s, from the DARE."""
        H, R = self.output, self.measurement_variance
        P = solve_predicted_covariance(
            self.transition, self.process_noise, H, R, self.stationary, self.cross
        )
        gain = P @ H / (float(H @ P @ H) + R)
        return P, P - np.outer(gain, H @ P)

    def conditional_covariance(self) -> np.ndarray:
        """Return the spin's covariance given the samples up to the last one, at the end of
        the light they recorded (P at t_{k+1} behind a boxcar, P⁺ at t_k otherwise), units N."""
        predicted, filtered = self.riccati()
        both = predicted if self.averaged else filtered
        return both[np.ix_(self.atoms, self.atoms)]


@dataclass(frozen=True)
class ContinuousReadout:
    """The spin model, the Faraday observation and the white readout noise of a QND probe."""

    model: SpinModel
    coupling_upper_rad: float
    coupling_lower_rad: float
    white_noise_psd: float  # one-sided S_θ of the readout noise, rad²/Hz
    probe_axis: np.ndarray = field(default_factory=lambda: PROBE_AXIS.copy())
    # The detector's pole and the digitiser's decimation between the light and the samples
    # (None: instantaneous samples): the filters and the witness take the samples as they are
    # (`sampled`).
    detection: DetectionChain | None = None

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
        """Return the readout described by a spin-noise fit (or by ``values`` of its parameters),
        behind the detection chain the fit modelled."""
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
            g.detection,
        )

    @property
    def intensity(self) -> float:
        """Return the two-sided readout-noise intensity R_c = S_θ/2, in rad²/Hz."""
        return self.white_noise_psd / 2.0

    def unit_matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (A, Q/N, Σ/N, C√N): the model with its transit modes, in units of √N.

        The state stacks the M spatial modes of the atoms' transit through the beam (one 6-dim
        block without transit); the beam-weighted spin is their sum (`spin_projection`).
        """
        m, n = self.model, self.model.atom_number
        A, Q, S, C = m.block_model(
            self.coupling_upper_rad, self.coupling_lower_rad, self.probe_axis
        )
        return A, Q / n, S / n, C * math.sqrt(n)

    def sampled(self, sample_rate_Hz: float) -> SampledReadout:
        """Return the exact discrete model of the samples at f_s, behind the detection chain.

        Without a chain: s = x̃, Φ = exp(A/f_s), W = Σ − ΦΣΦᵀ, R = (S_θ/2) f_s, no cross term.
        With one (`hotspin.analysis.detection`): each spatial mode carries its detector-pole
        state, and the white noise its own, through the pole and the digitiser's boxcar; the
        boxcar makes the sample noise u_k correlate with the state noise w_k (the cross term).
        The boxcar matters: in the SERF regime a broad spin-exchange component (width ~R_SE)
        carries much of the spin noise, and averaged samples hold about half its instantaneous
        variance at decimation 1024 (122 kS/s), so a filter of instantaneous samples predicts
        innovations 6 % too large (450 K, 100 nT, PDB450A at 10⁵ V/A). The information is
        not lost: ξ² of the spin the averaged samples condition equals the continuous record's
        to 10⁻³ at decimations 64 – 4096, while plain decimation (`ACQ:AVG OFF`) folds the
        detector's whole bandwidth of white noise into the band and raises ξ² (0.86 → 1.46 at
        decimation 64 and 4 MHz), so the witness is this model's (`unit_conditional_covariance`;
        `test_qnd.py`).
        """
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        A, _, sigma, C = self.unit_matrices()
        n = A.shape[0]
        chain = self.detection
        if chain is None:
            Phi = linalg.expm(A / fs)
            W = sigma - Phi @ sigma @ Phi.T
            return SampledReadout(
                Phi, C, 0.5 * (W + W.T), np.zeros(n), self.intensity * fs, sigma, np.arange(n)
            )
        if not math.isclose(fs, chain.sample_rate_Hz, rel_tol=1e-9):
            raise ValueError(
                f"sample_rate_Hz = {fs:g} is not the detection chain's {chain.sample_rate_Hz:g} "
                f"Hz (decimation {chain.decimation})"
            )
        atoms = detected_atoms(
            self.model, self.coupling_upper_rad, self.coupling_lower_rad, chain, self.probe_axis
        )
        white = detected_white_noise(chain)
        # detected_atoms keeps x̃ and puts the pole states and y in units of σ_θ: the pole
        # states to rad (D), y to rad (σ_θ); the white noise's state to rad (√S_θ).
        size = atoms.transition.shape[0]
        pole = np.arange(size) % 7 == 6
        d = np.where(pole, atoms.scale, 1.0)
        to_rad = np.append(d, atoms.scale)
        noise_a = atoms.noise * np.outer(to_rad, to_rad)
        noise_w = white.noise * self.white_noise_psd
        Phi = linalg.block_diag(atoms.transition * d[:, None] / d[None, :], white.transition)
        H = np.concatenate([atoms.scale * atoms.output / d, white.output])
        W = linalg.block_diag(noise_a[:size, :size], noise_w[:1, :1])
        cross = np.concatenate([noise_a[:size, size], noise_w[:1, 1]])
        R = float(noise_a[size, size] + noise_w[1, 1])
        stationary = linalg.block_diag(
            atoms.stationary * np.outer(d, d), white.stationary * self.white_noise_psd
        )
        spins = np.flatnonzero(~pole)
        if chain.decimation_averaging or white.transition[0, 0] > _FORGOTTEN:
            return SampledReadout(Phi, H, W, cross, R, stationary, spins, True)
        # Plain decimation behind a pole that forgets within a sample (e^{−ω_c T} below
        # _FORGOTTEN): y_k = Σ v_k + white_k, and v_k = Φ_vx x_{k−1} + w_v, white_k = w_white,
        # noise of the interval before sample k. So y_k observes x_{k−1}: the samples are
        # y′_j = y_{j+1} = H′x_j + u′_j with H′ = Σ Φ_vx, u′ the interval's pole and white noise,
        # correlated with x's through the cross term. The reduced model has no states that
        # vanish in one step (the full one's filter has no eigenbasis) and the same samples;
        # its spin estimate is one interval behind each sample. x̃(t_{j+1}) given y′ up to j
        # is the spin at the last sample: the predicted covariance (``averaged``).
        poles = np.flatnonzero(pole)
        rows = H[poles]  # 1 rad per rad of each mode's pole state
        noise = W[:size, :size]
        return SampledReadout(
            Phi[np.ix_(spins, spins)],
            rows @ Phi[np.ix_(poles, spins)],
            noise[np.ix_(spins, spins)],
            noise[np.ix_(spins, poles)] @ rows,
            float(rows @ noise[np.ix_(poles, poles)] @ rows + noise_w[0, 0]),
            stationary[np.ix_(spins, spins)],
            np.arange(spins.size),
            True,
        )

    def unit_conditional_covariance(self) -> np.ndarray:
        """Return Σ_c/N, the stationary covariance given the record: of the continuous record
        (R_c = S_θ/2), or behind a detection chain of its samples (`SampledReadout`)."""
        if self.detection is not None:
            return self.sampled(self.detection.sample_rate_Hz).conditional_covariance()
        A, Q, sigma, C = self.unit_matrices()
        return solve_conditional_covariance(A, Q, C, self.intensity, sigma)

    def conditional_covariance(self) -> np.ndarray:
        """Return the stationary covariance Σ_c of the spin given the record, in units of ħ²."""
        return self.unit_conditional_covariance() * self.model.atom_number

    def unit_relaxed_covariance(self, delay_s: float) -> np.ndarray:
        """Return Σ(τ)/N, the covariance τ after the readout stopped."""
        A, _, sigma, _ = self.unit_matrices()
        return relaxed_covariance(A, sigma, self.unit_conditional_covariance(), delay_s)


def squeezing_parameter(
    readout: ContinuousReadout, bound: float = THERMAL_BOUND, delay_s: float = 0.0
) -> float:
    """Return ξ² = Σₖ Var(Fₖ)/(N b) of the conditional state, τ = ``delay_s`` after the readout."""
    check_positive("bound", bound)
    covariance = (
        readout.unit_conditional_covariance()
        if delay_s == 0.0
        else readout.unit_relaxed_covariance(delay_s)
    )
    return total_spin_variance(covariance) / bound


def entanglement_lifetime(readout: ContinuousReadout, bound: float = THERMAL_BOUND) -> float:
    """Return τ_ent, the time after the readout stops at which ξ²(τ) reaches 1, in s."""
    check_positive("bound", bound)
    A, _, sigma, _ = readout.unit_matrices()
    return entanglement_lifetime_of(A, sigma, readout.unit_conditional_covariance(), bound)


# --- the witness with its uncertainties -----------------------------------------------------------
# What a witness reports, {name: unit}: ξ², N_ent and τ_ent under the assumed populations, the
# bound b, whether entanglement is witnessed (1/0), the same without the population assumption,
# and the population systematic ξ²(b = 1) − ξ²(b).
WITNESS_QUANTITIES: dict[str, str] = {
    "squeezing_parameter": "",
    "entangled_atoms": "",
    "entanglement_lifetime_s": "s",
    "separable_bound_per_atom": "",
    "entanglement_witnessed": "",
    "squeezing_parameter_population_free": "",
    "entangled_atoms_population_free": "",
    "entanglement_lifetime_population_free_s": "s",
    "entanglement_witnessed_population_free": "",
    "population_systematic": "",
}


@dataclass(frozen=True)
class WitnessBound:
    """ξ², the entangled atoms and the lifetime under one separable bound."""

    bound: float  # b per atom
    assumption: str  # what b rests on
    squeezing_parameter: Estimate  # ξ² = Σ Var_c(Fₖ)/(N b), statistical uncertainty
    entangled_atoms: Estimate  # (1 − ξ²) N, a lower bound when ξ² < 1
    lifetime: Estimate  # τ_ent in s; 0 when the state is not entangled

    @property
    def entangled(self) -> bool:
        """Return True when ξ² is below 1 by more than three standard deviations."""
        xi2 = self.squeezing_parameter
        return bool(xi2.value + 3.0 * xi2.uncertainty < 1.0)


@dataclass(frozen=True)
class WitnessResult:
    """The entanglement witness under the population assumption and without it."""

    assumed: WitnessBound  # b = 1 + p_a with the assumed upper-manifold population
    population_free: WitnessBound  # b = 1

    # The headline numbers are the assumed bound's.
    @property
    def squeezing_parameter(self) -> Estimate:
        """Return ξ² under the assumed populations."""
        return self.assumed.squeezing_parameter

    @property
    def entangled_atoms(self) -> Estimate:
        """Return (1 − ξ²) N under the assumed populations."""
        return self.assumed.entangled_atoms

    @property
    def lifetime(self) -> Estimate:
        """Return τ_ent (s) under the assumed populations."""
        return self.assumed.lifetime

    @property
    def bound(self) -> float:
        """Return the separable bound b per atom of the assumed populations."""
        return self.assumed.bound

    @property
    def entangled(self) -> bool:
        """Return True when ξ² + 3σ < 1 under the assumed populations."""
        return self.assumed.entangled

    @property
    def population_systematic(self) -> float:
        """Return ξ²(b = 1) − ξ²(b): how much ξ² rises if nothing is assumed of the populations."""
        return self.population_free.squeezing_parameter.value - self.squeezing_parameter.value

    def quantities(self) -> dict[str, tuple[Estimate, str]]:
        """Return every reported number as {name: (estimate, unit)}, for tables and run files;
        the names and units are those of ``WITNESS_QUANTITIES``."""
        a, free = self.assumed, self.population_free
        exact = 0.0
        values = (
            a.squeezing_parameter,
            a.entangled_atoms,
            a.lifetime,
            Estimate(a.bound, exact),
            Estimate(float(a.entangled), exact),
            free.squeezing_parameter,
            free.entangled_atoms,
            free.lifetime,
            Estimate(float(free.entangled), exact),
            Estimate(self.population_systematic, exact),
        )
        return {
            name: (value, unit)
            for (name, unit), value in zip(WITNESS_QUANTITIES.items(), values, strict=True)
        }

    def summary(self) -> str:
        """Return one line saying what the witness shows and under which bound."""
        a, free = self.assumed, self.population_free
        head = f"ξ² = {a.squeezing_parameter} (b = {a.bound:.4g} per atom, {a.assumption})"
        if a.entangled:
            tau = Estimate(1e3 * a.lifetime.value, 1e3 * a.lifetime.uncertainty, "ms")
            head += f": ≥ {a.entangled_atoms} atoms entangled, for τ_ent = {tau} after the readout"
        else:
            head += ": no entanglement claimed"
        tail = f"; with b = 1 (no population assumed) ξ² = {free.squeezing_parameter}"
        if free.entangled:
            tail += f", ≥ {free.entangled_atoms} atoms"
        return head + tail


def entanglement_witness(
    fit: SpinNoiseFit, upper_population: float = k.POPULATION_UPPER
) -> WitnessResult:
    """Return ξ², (1 − ξ²) N and τ_ent of the conditional state a fit describes, under the bound
    of the upper-manifold population ``upper_population`` and under b = 1, with uncertainties."""
    bounds = (separable_bound(upper_population), POPULATION_FREE_BOUND)

    def witness(values: dict[str, float]) -> np.ndarray:
        readout = ContinuousReadout.from_fit(fit, values)
        A, _, sigma, _ = readout.unit_matrices()
        conditional = readout.unit_conditional_covariance()
        n = values["atom_number"]
        out = []
        for b in bounds:
            xi2 = total_spin_variance(conditional) / b
            out += [xi2, (1.0 - xi2) * n, entanglement_lifetime_of(A, sigma, conditional, b)]
        return np.array(out)

    value, sigma = fit.propagate(witness)
    estimates = [Estimate(float(v), float(s)) for v, s in zip(value, sigma, strict=True)]
    assumptions = (
        f"upper-manifold population p_a = {upper_population:.4g} assumed"
        + (" (thermal)" if upper_population == k.POPULATION_UPPER else ""),
        "no population assumed",
    )
    return WitnessResult(
        *(
            WitnessBound(b, text, estimates[3 * i], estimates[3 * i + 1], estimates[3 * i + 2])
            for i, (b, text) in enumerate(zip(bounds, assumptions, strict=True))
        )
    )


# --- the discrete Kalman filter -------------------------------------------------------------------
@dataclass(frozen=True)
class FilterOutput:
    """Filtered spin estimates and innovations of a record."""

    estimates: np.ndarray  # (n, dim) E[x_k | y_0 … y_k], units of ħ
    innovations: np.ndarray  # (n,) y_k − C E[x_k | y_0 … y_{k−1}], rad
    innovation_variance: float  # its predicted variance in the steady state, rad²
    settle_samples: int  # samples before the start-up transient has decayed
    states: np.ndarray = field(repr=False)  # (dim s, n) ŝ_{k|k} of the whole sampled state


def _settling_samples(
    eigenvalues: np.ndarray,
    modes: np.ndarray,
    initial_excess: np.ndarray,
    rows: dict[str, np.ndarray],
    steady: dict[str, float],
) -> int:
    """Return the first k at which every trace(R F^k D₀ F^kᵀ Rᵀ) is below ε² of its steady value.

    F = V diag(λ) V⁻¹ is evaluated in its eigenbasis; k is found by doubling, then bisection.
    """
    inverse = np.linalg.inv(modes)
    excess_modes = inverse @ initial_excess @ inverse.conj().T
    projected = {name: R @ modes for name, R in rows.items()}
    tolerance = _SETTLED_AMPLITUDE**2

    def settled(k: int) -> bool:
        powers = eigenvalues**k
        scaled = excess_modes * np.outer(powers, powers.conj())
        return all(
            float(np.trace(Rm @ scaled @ Rm.conj().T).real) <= tolerance * steady[name]
            for name, Rm in projected.items()
        )

    high = 1
    while not settled(high):
        if high > _MAX_SETTLE_SAMPLES:
            return high
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if not settled(middle) else (low, middle)
    return high


class KalmanFilter:
    """The steady-state Kalman filter of a sampled QND record y_k = H s_k + u_k.

    The samples are the readout's exact discrete model (`ContinuousReadout.sampled`: the spin,
    and the detection chain's states when the readout has one). With the sample noise u_k
    correlated with the state noise w_k (the chain's boxcar), the predictor is
    ŝ_{k+1|k} = Φ ŝ_{k|k−1} + K_p e_k with K_p = (ΦPHᵀ + c)/(HPHᵀ + R), e_k = y_k − Hŝ_{k|k−1}
    (P from the DARE with the cross term c), and the filtered state ŝ_{k|k} = ŝ_{k|k−1} + PHᵀe_k/
    (HPHᵀ + R). The predictor's recursion F = Φ − K_pH is run mode by mode (`lfilter`).
    """

    def __init__(self, readout: ContinuousReadout, sample_rate_Hz: float) -> None:
        self.readout = readout
        self.sample_rate_Hz = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        sampled = readout.sampled(self.sample_rate_Hz)
        Phi, H, sigma = sampled.transition, sampled.output, sampled.stationary
        n = Phi.shape[0]
        self.measurement_variance = sampled.measurement_variance
        P, filtered = sampled.riccati()
        self.innovation_variance = float(H @ P @ H) + self.measurement_variance
        self._filter_gain = P @ H / self.innovation_variance
        self._predictor_gain = (Phi @ P @ H + sampled.cross) / self.innovation_variance
        self._atoms = sampled.atoms
        pick = np.ix_(self._atoms, self._atoms)
        self._unit_predicted, self._unit_filtered = P, filtered
        self._unit_stationary = sigma
        self._Phi, self._H = Phi, H
        F = Phi - np.outer(self._predictor_gain, H)
        eigenvalues, V = np.linalg.eig(F)
        if np.linalg.cond(V) > _MAX_EIGENVECTOR_CONDITION:
            raise np.linalg.LinAlgError("the filter's transition matrix has no usable eigenbasis")
        self._eigenvalues, self._modes = eigenvalues, V
        self._mode_gain = np.linalg.solve(V, self._predictor_gain.astype(complex))
        # Started from the prior mean, the predicted error covariance exceeds the steady one by
        # D_k = F^k (Σ − P) F^kᵀ. The filter has settled when that excess, seen in the
        # innovations and in the filtered beam-weighted spin, is below _SETTLED_AMPLITUDE² of
        # their steady values. (The slowest eigenvalue alone overstates it many times: the
        # slowest transit modes carry a tiny part of the spin.)
        spin = np.zeros((3, n))
        spin[:, self._atoms] = spin_projection(self._atoms.size)
        self.settle_samples = _settling_samples(
            eigenvalues,
            V,
            sigma - P,
            {
                "innovations": H[None, :],
                "spin": spin @ (np.eye(n) - np.outer(self._filter_gain, H)),
            },
            {
                "innovations": self.innovation_variance,
                "spin": total_spin_variance(filtered[pick]),
            },
        )

    def _in_hbar2(self, unit: np.ndarray) -> np.ndarray:
        """Return the spin block of a covariance of s, in units of ħ²."""
        return unit[np.ix_(self._atoms, self._atoms)] * self.readout.model.atom_number

    @property
    def predicted_covariance(self) -> np.ndarray:
        """Return the spin's steady one-step prediction covariance P, in units of ħ²."""
        return self._in_hbar2(self._unit_predicted)

    @property
    def filtered_covariance(self) -> np.ndarray:
        """Return the spin's steady filtered covariance Cov(x_k | y_0 … y_k), in units of ħ²."""
        return self._in_hbar2(self._unit_filtered)

    def _unit_prediction_covariance(self, steps: int) -> np.ndarray:
        """Return Cov(s_{k+m} | y_0 … y_k) = Σ + Φᵐ⁻¹(P − Σ)Φᵐ⁻¹ᵀ of the whole state, m ≥ 1."""
        E = np.linalg.matrix_power(self._Phi, steps - 1)
        sigma = self._unit_stationary
        unit = sigma + E @ (self._unit_predicted - sigma) @ E.T
        return 0.5 * (unit + unit.T)

    def prediction_covariance(self, steps: int) -> np.ndarray:
        """Return the spin's Cov(x_{k+m} | y_0 … y_k) for m = ``steps``, in units of ħ²."""
        m = int(check_range("steps", steps, 0, math.inf, "samples"))
        if m == 0:
            return self.filtered_covariance
        return self._in_hbar2(self._unit_prediction_covariance(m))

    def run(self, record_rad: np.ndarray) -> FilterOutput:
        """Filter a record of the observed angle (starting from the thermal prior mean)."""
        y = _checked_record(record_rad)
        modes = np.empty((self._eigenvalues.size, y.size), dtype=complex)
        for j, lam in enumerate(self._eigenvalues):
            modes[j] = signal.lfilter([0.0, self._mode_gain[j]], [1.0, -lam], y)
        predicted = (self._modes @ modes).real  # ŝ_{k|k−1}, from the prior mean ŝ_{0|−1} = 0
        innovations = y - self._H @ predicted
        states = predicted + np.outer(self._filter_gain, innovations)
        return FilterOutput(
            estimates=states[self._atoms].T * math.sqrt(self.readout.model.atom_number),
            innovations=innovations,
            innovation_variance=self.innovation_variance,
            settle_samples=self.settle_samples,
            states=states,
        )

    def _forecast_states(self, output: FilterOutput, steps: int) -> np.ndarray:
        """Return ŝ_{k+m|k} = Φᵐ⁻¹ ŝ_{k+1|k} for k from the settled start to n − m − 1."""
        m = int(check_range("steps", steps, 1, math.inf, "samples"))
        n, start = output.innovations.size, output.settle_samples
        if start + m >= n:
            raise ValueError(f"steps = {m}: the record holds {n} samples, {start} of them settling")
        # ŝ_{k+1|k} = Φ ŝ_{k|k} + (K_p − ΦK_f) e_k (no correction without the cross term).
        ahead = self._Phi @ output.states[:, start : n - m] + np.outer(
            self._predictor_gain - self._Phi @ self._filter_gain,
            output.innovations[start : n - m],
        )
        return np.linalg.matrix_power(self._Phi, m - 1) @ ahead

    def forecast(self, output: FilterOutput, steps: int) -> np.ndarray:
        """Return the spin m = ``steps`` samples ahead as forecast at each k from the settled
        start to n − m − 1 without the samples in between, (n − m − start, dim x) in ħ."""
        states = self._forecast_states(output, steps)
        return states[self._atoms].T * math.sqrt(self.readout.model.atom_number)

    def prediction_errors(
        self, record_rad: np.ndarray, output: FilterOutput, steps: int
    ) -> tuple[np.ndarray, float]:
        """Return y_{k+m} − ŷ_{k+m|k} over the settled record and its predicted variance: the
        measurement m samples ahead against the filter's forecast made without the samples in
        between, as if the readout had stopped at k."""
        y = _checked_record(record_rad)
        if y.size != output.innovations.size:
            raise ValueError(
                f"the record has {y.size} samples, the filter output {output.innovations.size}"
            )
        forecast = self._H @ self._forecast_states(output, steps)
        errors = y[output.settle_samples + int(steps) :] - forecast
        return errors, self.prediction_variance(steps)

    def prediction_variance(self, steps: int) -> float:
        """Return H Σ_pred(m) Hᵀ + R, the variance of the measurement m samples ahead about
        the forecast without the samples in between, in rad²."""
        m = int(check_range("steps", steps, 1, math.inf, "samples"))
        unit = self._unit_prediction_covariance(m)
        return float(self._H @ unit @ self._H) + self.measurement_variance


def _checked_record(record_rad: np.ndarray) -> np.ndarray:
    """Return a record as a float array; refuse an empty one or one with NaN or inf."""
    y = np.asarray(record_rad, dtype=float)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("the record must be a non-empty one-dimensional array")
    if not np.all(np.isfinite(y)):
        raise ValueError("the record holds NaN or infinite samples")
    return y


@dataclass(frozen=True)
class PredictionCheck:
    """The variance of τ-ahead prediction errors against the covariance propagation."""

    delay_s: float
    normalised_variance: float  # sample variance / predicted variance (1 for a right model)
    uncertainty: float  # its standard error, from batch means
    predicted_variance: float  # C Σ_pred(τ) Cᵀ + R_d, rad²
    samples: int

    @property
    def pull(self) -> float:
        """Return (normalised variance − 1) / standard error."""
        return (self.normalised_variance - 1.0) / self.uncertainty


def prediction_check(
    errors: Sequence[np.ndarray], predicted_variance: float, delay_s: float
) -> PredictionCheck:
    """Compare pooled τ-ahead prediction errors with their predicted variance.

    The squared errors are correlated over about the spin's correlation time, so the standard
    error comes from the spread of the means over contiguous batches, not from 2/n.
    """
    variance = check_positive("predicted_variance", predicted_variance, "rad^2")
    squares = [np.asarray(e, dtype=float) ** 2 / variance for e in errors]
    pooled = np.concatenate(squares)
    if pooled.size < 10 * _PREDICTION_BATCHES:
        raise ValueError(
            f"{pooled.size} prediction errors: need at least {10 * _PREDICTION_BATCHES}"
        )
    batches = [
        b.mean() for s in squares for b in np.array_split(s, _per_record_batches(s, squares))
    ]
    error = float(np.std(batches, ddof=1) / math.sqrt(len(batches)))
    return PredictionCheck(
        delay_s=delay_s,
        normalised_variance=float(pooled.mean()),
        uncertainty=error,
        predicted_variance=variance,
        samples=pooled.size,
    )


def _per_record_batches(record: np.ndarray, records: Sequence[np.ndarray]) -> int:
    """Return how many of the batches fall in one record (in proportion to its length)."""
    total = sum(r.size for r in records)
    return max(1, round(_PREDICTION_BATCHES * record.size / total))


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


# --- the continuous filter of a sample stream -----------------------------------------------------
# The exact run-in after a gap (and from the prior) hands over to the steady filter when the
# two can differ by at most this fraction of each output's RMS (a bound, _build_switch_bound).
_RUN_IN_DEVIATION = 1e-10
# ... filtering chunks of this many samples at a time (``_run_in``).
_RUN_IN_L = 64
# The steady filter runs over at most this many samples at a time (bounded temporaries).
_STEADY_CHUNK = 1 << 18
# ... in chunks of this many samples, each three dense matrix products (_build_chunk_matrices).
_STEADY_L = 64
# Hewer's iteration of the discrete Riccati equation: at most this many steps, stopped when a
# step changes P by less than this fraction, refused when the residual exceeds the last one.
_HEWER_MAX_STEPS = 200
_HEWER_STEP_TOLERANCE = 1e-14
_DARE_RESIDUAL_TOLERANCE = 1e-9


@threadpool_limits.wrap(**_ONE_BLAS_THREAD)
def solve_predicted_covariance(
    transition: np.ndarray,
    process_noise: np.ndarray,
    observation: np.ndarray,
    measurement_variance: float,
    stationary: np.ndarray,
    cross: np.ndarray | None = None,
) -> np.ndarray:
    """Return P, the steady one-step prediction covariance of x_{k+1} = Φx_k + w_k, y = Cx + v
    (Cov(w_k, v_k) = ``cross``, none by default).

    Hewer's Newton iteration of the discrete Riccati equation (IEEE TAC 16, 382 (1971)): each
    step solves the Lyapunov equation of the predictor with the previous gain, and the iterates
    fall monotonically and at last quadratically to the stabilising solution. It starts from the
    gain 0, whose solution is the stationary Σ (Φ is stable), and works with every component
    scaled to unit stationary variance, where spatial modes of very unequal weight are alike.
    (The same robustness argument as for ``solve_conditional_covariance``.) The residual of
    P = ΦPΦᵀ + W − (ΦPCᵀ + c)(CPCᵀ + R)⁻¹(ΦPCᵀ + c)ᵀ is checked.
    """
    Phi = np.asarray(transition, dtype=float)
    scale = np.sqrt(np.diag(stationary))
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("the stationary covariance must have a positive diagonal")
    Phi_u = Phi * scale[None, :] / scale[:, None]
    W_u = np.asarray(process_noise, dtype=float) / np.outer(scale, scale)
    W_u = 0.5 * (W_u + W_u.T)
    C_u = np.asarray(observation, dtype=float) * scale
    c_u = np.zeros(scale.size) if cross is None else np.asarray(cross, dtype=float) / scale
    # R = 0: samples without noise of their own (all of it in the state, as behind a detector
    # pole with plain decimation); CPCᵀ stays positive.
    R = check_range("measurement_variance", measurement_variance, 0.0, math.inf, "rad^2")
    X = np.asarray(stationary, dtype=float) / np.outer(scale, scale)
    previous = math.inf
    for _ in range(_HEWER_MAX_STEPS):
        gain = (Phi_u @ X @ C_u + c_u) / (C_u @ X @ C_u + R)
        closed = Phi_u - np.outer(gain, C_u)
        drive = W_u - np.outer(gain, c_u) - np.outer(c_u, gain) + R * np.outer(gain, gain)
        following = linalg.solve_discrete_lyapunov(closed, drive)
        following = 0.5 * (following + following.T)
        change = np.abs(following - X).max() / np.abs(following).max()
        X = following
        # Converged, or at the rounding floor: below _NEWTON_STALLED a step that no longer
        # shrinks is rounding (it ran all _HEWER_MAX_STEPS steps before, a fifth of a second).
        if change <= _HEWER_STEP_TOLERANCE or (change < _NEWTON_STALLED and change >= previous):
            break
        previous = change
    ahead = Phi_u @ X @ C_u + c_u
    terms = (Phi_u @ X @ Phi_u.T, W_u, np.outer(ahead, ahead) / (C_u @ X @ C_u + R))
    residual = np.abs(terms[0] + terms[1] - terms[2] - X).max() / np.abs(X).max()
    if not residual < _DARE_RESIDUAL_TOLERANCE:
        raise np.linalg.LinAlgError(
            f"the discrete Riccati equation was not solved: relative residual {residual:.2g} "
            f"(accepted: {_DARE_RESIDUAL_TOLERANCE:g})"
        )
    return X * np.outer(scale, scale)


@dataclass(frozen=True)
class Whiteness:
    """The running whiteness test of the normalised innovations u_k = e_k/√S_k."""

    normalised_variance: float  # mean u² (1 for the right model)
    variance_uncertainty: float  # its standard error √(2/n) for white Gaussian u
    ljung_box: float  # Q = n(n+2) Σ ρ̂ₖ²/(n−k) over the window
    lags: int
    p_value: float  # of Q under χ²(lags)
    samples: int  # innovations in the window


@dataclass(frozen=True)
class FilteredBlock:
    """The continuous filter's output for one block of the stream."""

    first_index: int  # absolute index of the block's first sample
    spin: np.ndarray  # (n, k) E[F_k | y up to k] (the model's output, e.g. F in ħ); every sample
    innovations: np.ndarray  # (n,) y_k − C E[x_k | y before k], rad; NaN where y_k is missing
    normalised_innovations: np.ndarray  # (n,) innovations / √S_k; NaN where y_k is missing
    gaps: tuple[tuple[int, int], ...]  # (first missing index, length), before and in the block
    run_in_samples: int  # samples of the block filtered with the time-varying gain
    squeezing_parameter: float  # ξ² of the conditional state at the block's last sample
    squeezing_parameter_peak: float  # the largest ξ² in the block (it rises in a gap)
    whiteness: Whiteness | None  # over the recent window; None until it holds enough samples


@dataclass(frozen=True)
class StateSpaceModel:
    """dx = A x dt + dW (E[dW dWᵀ] = Q dt), y = C x + v (E[v v] = R δ), stationary covariance Σ."""

    drift: np.ndarray
    noise: np.ndarray
    observation: np.ndarray  # (n,) one observed quantity
    intensity: float  # two-sided R, rad²/Hz
    stationary: np.ndarray

    def __post_init__(self) -> None:
        A = np.asarray(self.drift, dtype=float)
        n = A.shape[0]
        if (
            A.shape != (n, n)
            or np.shape(self.noise) != (n, n)
            or np.shape(self.stationary)
            != (
                n,
                n,
            )
        ):
            raise ValueError(
                f"drift {A.shape}, noise {np.shape(self.noise)} and stationary "
                f"{np.shape(self.stationary)} must be square matrices of one dimension"
            )
        if np.shape(self.observation) != (n,):
            raise ValueError(f"observation {np.shape(self.observation)} must be a vector of {n}")
        check_positive("intensity", self.intensity, "rad^2/Hz")
        # Σ must be the stationary covariance of (A, Q): the sampled noise W = Σ − ΦΣΦᵀ uses it.
        lyapunov = A @ self.stationary + self.stationary @ A.T + self.noise
        if np.abs(lyapunov).max() > 1e-8 * np.abs(A @ self.stationary).max():
            raise ValueError("stationary is not the stationary covariance: AΣ + ΣAᵀ + Q ≠ 0")

    @property
    def dimension(self) -> int:
        """Return the dimension n of the state."""
        return int(np.shape(self.drift)[0])


class ContinuousKalmanFilter:
    """The Kalman filter of an unbroken sample stream y_k = H s_k + u_k, block after block.

    The model is a continuous one sampled at f_s (`StateSpaceModel`: Φ = exp(A/f_s),
    W = Σ − ΦΣΦᵀ, R = R_c f_s) or the exact samples behind a detection chain (`SampledReadout`,
    whose sample noise u_k correlates with the state noise w_k: Cov(w_k, u_k) = c). The filter
    runs in predictor form, p_k = ŝ_{k|k−1}: p_{k+1} = F p_k + K_p y_k with F = Φ − K_pH and
    K_p = (ΦPHᵀ + c)/S (P, S = HPHᵀ + R the steady prediction and innovation variances); each
    sample's outputs are the filtered spin 𝒫(p_k + K_f e_k), K_f = PHᵀ/S, and the innovation
    e_k = y_k − Hp_k. F is diagonalised once, F = V Λ V⁻¹ (one complex mode per conjugate pair,
    real modes in real arithmetic), and the samples are taken in chunks of L = 64: within a chunk
    the outputs are one dense product of the chunk's samples and its starting modes with fixed
    matrices, and only the modes from chunk to chunk are a recursion, one ``scipy.signal.lfilter``
    per mode over N/L values (``_build_chunk_matrices``). The modes carry the state from block
    to block. (The filtered form x⁺_k = (1 − KH)Φ x⁺_{k−1} + K y_k has no cross term and, behind
    the chain, no eigenbasis: the pole states' e^{−ω_c T} ≈ 0 make it defective.)

    Missing samples (a jump of the absolute index between blocks, or NaN in a block): the state
    is propagated without measurement, p ← Φᵍp, and its covariance with it,
    P ← Σ + Φᵍ(P − Σ)Φᵍᵀ (exact for a stationary model). The samples after the gap are then
    filtered by the exact time-varying filter, a chunk of L samples at a time as one Gaussian
    conditioning (a Cholesky factor of the chunk's covariance, ``_run_in``), until the steady
    filter, taking over, could differ from the exact one by at most 1e-10 of each output's RMS
    (a bound from the closed form of the Riccati difference equation, ``_build_switch_bound``).
    The stream's start is the same run-in, from the prior p = 0, P = Σ. The run-in's length is
    data-independent, about ln(1e-10)/(2 ln|λ|max) samples (``run_in_estimate``; 4.5e4 at
    500 kS/s and ~9e5 at 10 MS/s for the 42-dimensional transit model, BENCHMARKS.md).
    """

    def __init__(
        self,
        model: StateSpaceModel | SampledReadout,
        sample_rate_Hz: float,
        *,
        projection: np.ndarray | None = None,
        output_scale: float = 1.0,
        bound_variance: float | None = None,
        witness: tuple[float, float] | None = None,
        whiteness_lags: int = 10,
        whiteness_window: int = 64,
        exact_run_in: bool = True,
    ) -> None:
        self.model = model
        self.sample_rate_Hz = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        #: From the prior and after a gap: the exact run-in (True), or the steady filter at once
        #: from the prior or the propagated state, its normalised innovations left out of the
        #: whiteness test (NaN) for ``settle_samples`` while its start-up error decays (False:
        #: a live view, where each exact run-in costs about a second of CPU at 2 MS/s).
        self.exact_run_in = bool(exact_run_in)
        if isinstance(model, SampledReadout):
            Phi, H, W = model.transition, model.output, model.process_noise
            R, c, sigma = model.measurement_variance, model.cross, model.stationary
            n = Phi.shape[0]
            default = np.zeros((3, n))
            default[:, model.atoms] = spin_projection(model.atoms.size)
        else:
            n = model.dimension
            A = np.asarray(model.drift, dtype=float)
            sigma = np.asarray(model.stationary, dtype=float)
            H = np.asarray(model.observation, dtype=float)
            Phi = linalg.expm(A / self.sample_rate_Hz)
            W = sigma - Phi @ sigma @ Phi.T
            W = 0.5 * (W + W.T)
            R, c = model.intensity * self.sample_rate_Hz, np.zeros(n)
            default = spin_projection(n) if n % 6 == 0 else np.eye(n)
        self._dimension = n
        self.projection = np.atleast_2d(
            np.asarray(default if projection is None else projection, dtype=float)
        )
        if self.projection.shape[1] != n:
            raise ValueError(f"projection {self.projection.shape} does not act on dimension {n}")
        self.output_scale = float(output_scale)
        self.whiteness_lags = int(check_range("whiteness_lags", whiteness_lags, 1, 1000))
        self.whiteness_window = int(check_range("whiteness_window", whiteness_window, 1, 1e6))
        P = solve_predicted_covariance(Phi, W, H, R, sigma, c)
        S = float(H @ P @ H) + R
        self._Phi, self._W, self._C, self._R, self._c, self._sigma = Phi, W, H, R, c, sigma
        self.predicted_covariance = P
        self.innovation_variance = S
        self.gain = P @ H / S  # K_f: the filtered state's gain
        self._predictor_gain = (Phi @ P @ H + c) / S  # K_p
        self.filtered_covariance = P - np.outer(self.gain, H @ P)
        # The witness: ξ² and τ_ent given (``from_readout``: the readout's, behind its detection
        # chain), or of the continuous model's conditional covariance, with the excess of the
        # prediction covariance over its steady value after a gap.
        self.bound_variance = bound_variance
        self.squeezing_parameter = self.entanglement_lifetime_s = math.nan
        if bound_variance is not None and witness is not None:
            self.squeezing_parameter, self.entanglement_lifetime_s = witness
        elif bound_variance is not None:
            if isinstance(model, SampledReadout):
                raise ValueError("a sampled model's witness (ξ², τ_ent) must be given")
            conditional = solve_conditional_covariance(A, model.noise, H, model.intensity, sigma)
            self.squeezing_parameter = (
                total_spin_variance(conditional, self.projection) / bound_variance
            )
            self.entanglement_lifetime_s = entanglement_lifetime_of(
                A, sigma, conditional, bound_variance, self.projection
            )
        self._steady_trace = total_spin_variance(P, self.projection)
        F = Phi - np.outer(self._predictor_gain, H)
        eigenvalues, V = np.linalg.eig(F)
        if np.linalg.cond(V) > _MAX_EIGENVECTOR_CONDITION:
            raise np.linalg.LinAlgError("the filter's transition matrix has no usable eigenbasis")
        # One section per real eigenvalue and per conjugate pair (the one with Im λ > 0).
        keep = eigenvalues.imag >= 0
        real = np.abs(eigenvalues.imag) <= 1e-14 * np.abs(eigenvalues)
        if np.count_nonzero(keep & ~real) != np.count_nonzero(~keep & ~real):
            raise np.linalg.LinAlgError("the filter's eigenvalues are not in conjugate pairs")
        V_inv = np.linalg.inv(V)
        self._lambda = np.where(real, eigenvalues.real, eigenvalues)[keep]
        self._real = real[keep]
        self._mode_gain = (V_inv @ self._predictor_gain.astype(complex))[keep]
        self._to_modes = V_inv[keep]  # z = V⁻¹ p for the kept modes
        weight = np.where(real, 1.0, 2.0)[keep]  # p = Σ_real V z + Σ_pairs 2 Re(V z)
        # A sample's outputs from the state before it and the sample: h p_k + d y_k, the rows
        # the filtered spin 𝒫(1 − K_fH) (with d = 𝒫K_f) and the prediction H of the sample.
        self._outputs = np.vstack([self.projection @ (np.eye(n) - np.outer(self.gain, H)), H])
        self._direct = np.append(self.projection @ self.gain, 0.0)
        self._mode_outputs = np.ascontiguousarray((self._outputs @ V)[:, keep] * weight[None, :])
        self._from_modes = V[:, keep] * weight[None, :]  # p = Re(this @ z)
        self._chunk_length = _STEADY_L
        self._run_in_length = _RUN_IN_L
        self._run_in_matrices: tuple[np.ndarray, ...] | None = None
        self._build_chunk_matrices(F, self._predictor_gain)
        slowest = float(np.max(np.abs(eigenvalues)))
        # The excess covariance, and with it the bound on the switch, falls as |λ|max^{2k}.
        self.run_in_estimate = math.ceil(math.log(_RUN_IN_DEVIATION) / (2 * math.log(slowest)))
        # ... and the error of a steady filter started from a propagated state, as |λ|max^k.
        self.settle_samples = math.ceil(math.log(_SETTLED_AMPLITUDE) / math.log(slowest))
        self.reset()

    @classmethod
    def from_readout(
        cls,
        readout: ContinuousReadout,
        sample_rate_Hz: float,
        bound: float = THERMAL_BOUND,
        **options: int | bool,
    ) -> ContinuousKalmanFilter:
        """Return the filter of a QND readout (its samples behind its detection chain, if it has
        one): spin F in ħ, ξ² under the bound b per atom (``options``: whiteness_lags,
        whiteness_window, exact_run_in)."""
        check_positive("bound", bound)
        model: StateSpaceModel | SampledReadout
        if readout.detection is None:
            A, Q, sigma, C = readout.unit_matrices()
            model = StateSpaceModel(A, Q, C, readout.intensity, sigma)
        else:
            model = readout.sampled(sample_rate_Hz)
        return cls(
            model,
            sample_rate_Hz,
            output_scale=math.sqrt(readout.model.atom_number),
            bound_variance=bound,
            witness=(squeezing_parameter(readout, bound), entanglement_lifetime(readout, bound)),
            **options,
        )

    def reset(self) -> None:
        """Start again from the prior (p = 0, P = Σ), before sample 0."""
        n = self._dimension
        self._next_index = 0
        self._p = np.zeros(n)  # ŝ of the next sample given the past (transient mode)
        self._z: np.ndarray | None = None  # the modes' state (steady mode), else None
        self._P = self._sigma.copy()  # its covariance (transient mode)
        self._carry = np.zeros(0)  # the last `lags` normalised innovations (contiguous)
        self._window: deque[np.ndarray] = deque(maxlen=self.whiteness_window)
        self._unsettled = 0  # samples still left out of the whiteness after a quick hand-over

    # --- the stream -----------------------------------------------------------------------------
    def run(self, blocks: Iterable[tuple[int, np.ndarray]]) -> Iterator[FilteredBlock]:
        """Filter a stream of blocks (absolute index of the first sample, samples in rad)."""
        for first_index, samples in blocks:
            yield self.filter_block(first_index, samples)

    def filter_block(self, first_index: int, samples_rad: np.ndarray) -> FilteredBlock:
        """Filter the next block; samples before ``first_index`` not yet seen are a gap, and NaN
        samples are missing."""
        y = np.asarray(samples_rad, dtype=float)
        if y.ndim != 1:
            raise ValueError(f"samples_rad has shape {y.shape}: one block is one-dimensional")
        first = int(first_index)
        if first < self._next_index:
            raise ValueError(
                f"first_index = {first}: the stream is at sample {self._next_index}; blocks "
                "must come in order without overlap"
            )
        gaps: list[tuple[int, int]] = []
        if first > self._next_index:
            gaps.append((self._next_index, first - self._next_index))
            self._time_update(first - self._next_index)
            self._carry = np.zeros(0)
        n = y.size
        spin = np.empty((n, self.projection.shape[0]))
        innovations = np.full(n, np.nan)
        normalised = np.full(n, np.nan)
        peak = self._xi2()
        run_in = 0
        missing = ~np.isfinite(y)
        start = 0
        while start < n:
            if missing[start]:
                stop = start + int(np.argmax(~missing[start:])) if (~missing[start:]).any() else n
                gaps.append((first + start, stop - start))
                self._time_update(0)
                for k in range(start, stop):  # the prediction of each missing sample
                    spin[k] = self.projection @ self._p
                    self._time_update(1)
                peak = max(peak, self._xi2())
                self._carry = np.zeros(0)
                start = stop
                continue
            stop = start + int(np.argmax(missing[start:])) if missing[start:].any() else n
            if self._z is None and not self.exact_run_in:
                self._z = self._to_modes @ self._p.astype(complex)
                self._unsettled = self.settle_samples
            if self._z is None:
                done = self._run_in(y, start, stop, spin, innovations, normalised)
                run_in += done - start
            else:
                done = start
            if done < stop:
                self._steady(y, done, stop, spin, innovations, normalised)
            with _BLAS.limit(**_ONE_BLAS_THREAD):  # its dot products stall with threads
                self._accumulate(normalised[start:stop])
            start = stop
        self._next_index = first + n
        return FilteredBlock(
            first_index=first,
            spin=spin * self.output_scale,
            innovations=innovations,
            normalised_innovations=normalised,
            gaps=tuple(gaps),
            run_in_samples=run_in,
            squeezing_parameter=self._xi2(),
            squeezing_parameter_peak=peak,
            whiteness=self.whiteness(),
        )

    # --- the two modes of filtering -------------------------------------------------------------
    def _xi2(self) -> float:
        """Return ξ² of the conditional state after the last sample (at the next one)."""
        if self.bound_variance is None:
            return math.nan
        if self._z is not None:
            return self.squeezing_parameter
        excess = total_spin_variance(self._P, self.projection) - self._steady_trace
        return self.squeezing_parameter + excess / self.bound_variance

    def _time_update(self, steps: int) -> None:
        """Propagate p and P over ``steps`` samples without measurement (leaving steady mode:
        the samples that follow run in with the time-varying gain)."""
        if self._z is not None:
            self._p = (self._from_modes @ self._z).real
            self._P = self.predicted_covariance.copy()
            self._z = None
        if steps:
            E = np.linalg.matrix_power(self._Phi, steps)
            self._p = E @ self._p
            P = self._sigma + E @ (self._P - self._sigma) @ E.T
            self._P = 0.5 * (P + P.T)

    def _run_in(
        self,
        y: np.ndarray,
        start: int,
        stop: int,
        spin: np.ndarray,
        innovations: np.ndarray,
        normalised: np.ndarray,
    ) -> int:
        """Filter y[start:stop] with the exact time-varying filter, chunk by chunk, until the
        covariance has converged; return the index where the steady filter takes over (``stop``
        if it has not).

        A chunk of r ≤ L samples after the prediction p, P of its first is one Gaussian
        conditioning: with Δ = P − Σ, Cov(y) = O Δ Oᵀ + T with the rows HΦⁱ of O and the
        stationary autocovariance T of the samples (T_ij = HΦ^{i−j−1}g for i > j, g = ΦΣHᵀ + c,
        and HΣHᵀ + R on the diagonal). Its Cholesky factor 𝓛 whitens the samples in order:
        ε = 𝓛⁻¹(y − O p) are the normalised innovations, 𝓛_ii ε_i the innovations, and the
        filtered spin at i is 𝒫Φⁱp + Σ_{j≤i} [Cov(𝒫s_i, y) 𝓛⁻ᵀ]_ij ε_j — the per-sample
        recursion's numbers, by matrix products instead of a Python loop per sample. The
        convergence test of the prediction covariance is made between chunks.
        """
        L = self._run_in_length
        if self._run_in_matrices is None:
            self._run_in_matrices = self._build_run_in_matrices()
            self._switch_bound = self._build_switch_bound()
        Oy_all, OP_all, Ty_all, TPY_all, TXY_all, powers = self._run_in_matrices
        P_steady, sigma = self.predicted_covariance, self._sigma
        information, output_gain = self._switch_bound
        p = self.projection.shape[0]
        x, P = self._p, self._P
        k = start
        with _BLAS.limit(**_ONE_BLAS_THREAD):
            while k < stop:
                excess = P - P_steady  # δ of this sample's prediction
                # Switched here, the steady filter would differ from the exact one by at most
                # this (relative RMS of each output, ``_build_switch_bound``): stop when it is
                # below the tolerance.
                if np.trace(excess @ information @ excess) * output_gain.max() <= (
                    _RUN_IN_DEVIATION**2
                ):
                    break
                r = min(L, stop - k)
                Oy, OP = Oy_all[:r], OP_all[: r * p]
                delta = P - sigma
                DO = delta @ Oy.T  # (n, r)
                factor = np.linalg.cholesky(Oy @ DO + Ty_all[:r, :r])
                E = powers[r]
                # One triangular solve for the samples and the two cross-covariances.
                solved = linalg.solve_triangular(
                    factor,
                    np.hstack(
                        [
                            (y[k : k + r] - Oy @ x)[:, None],
                            (OP @ DO + TPY_all[: r * p, :r]).T,  # Cov(𝒫 s_i, y)ᵀ
                            (E @ DO + TXY_all[:, L - r :]).T,  # Cov(s_next, y)ᵀ
                        ]
                    ),
                    lower=True,
                    check_finite=False,
                )
                eps = solved[:, 0]
                innovations[k : k + r] = np.diag(factor) * eps
                normalised[k : k + r] = eps
                gain = solved[:, 1 : 1 + r * p].T.reshape(r, p, r)
                gain *= self._run_in_mask[:r, None, :r]  # sample i uses ε_j, j ≤ i
                spin[k : k + r] = (OP @ x).reshape(r, p) + gain @ eps
                state_gain = solved[:, 1 + r * p :].T
                x = E @ x + state_gain @ eps
                P = E @ delta @ E.T + sigma - state_gain @ state_gain.T
                P = 0.5 * (P + P.T)
                k += r
        self._p, self._P = x, P
        if k < stop:  # converged: the steady sections take over from the prediction of sample k
            self._z = self._to_modes @ x.astype(complex)
        return k

    def _build_run_in_matrices(self) -> tuple[np.ndarray, ...]:
        """Return the chunk matrices of the exact run-in (``_run_in``), for chunks of L samples:
        O (rows HΦⁱ), the projection's 𝒫Φⁱ, the samples' stationary autocovariance T,
        Cov(𝒫 s_i, y_j), Cov(s_L, y_j) = Φ^{L−1−j}g (the next chunk's first state against each
        sample) and Φ^r for r = 0 … L."""
        L, Phi, H, sigma, P = self._run_in_length, self._Phi, self._C, self._sigma, self.projection
        n, p = Phi.shape[0], P.shape[0]
        powers = np.empty((L + 1, n, n))
        powers[0] = np.eye(n)
        for r in range(1, L + 1):
            powers[r] = Phi @ powers[r - 1]
        Oy = H @ powers[:L]  # (L, n)
        OP = (P @ powers[:L]).reshape(L * p, n)  # row (i, k): 𝒫_k Φⁱ
        g = Phi @ sigma @ H + self._c  # Cov(s_{i+1}, y_i)
        after = powers[:L] @ g  # (L, n): Cov(s_{j+1+m}, y_j) = Φᵐ g
        before = (H @ powers[:L] @ sigma).T  # (n, L): Cov(s_i, y_{i+m}) = Σ Φᵐᵀ Hᵀ
        lag = np.arange(L)[:, None] - np.arange(L)[None, :]  # i − j
        autocovariance = np.concatenate([[float(H @ sigma @ H) + self._R], (after @ H)[: L - 1]])
        Ty = autocovariance[np.abs(lag)]
        # Cov(𝒫 s_i, y_j): Φ^{i−j−1}g for i > j, Σ Φ^{j−i}ᵀ Hᵀ for i ≤ j.
        TPY = np.where(
            (lag > 0)[:, None, :],
            (after @ P.T)[np.clip(lag - 1, 0, None)].transpose(0, 2, 1),
            (P @ before).T[np.clip(-lag, 0, None)].transpose(0, 2, 1),
        ).reshape(L * p, L)
        TXY = after[::-1].T.copy()  # column j: Φ^{L−1−j} g
        self._run_in_mask = np.tril(np.ones((L, L)))
        return Oy, OP, Ty, TPY, TXY, powers

    def _build_switch_bound(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (M, g²/v) of the bound on switching from the exact to the steady filter.

        Switched at a sample whose prediction covariance exceeds the steady one by δ ≥ 0, the
        steady filter's prediction differs from the exact one by d_m, m samples later, with
        Cov(d_m) = Fᵐ[δ − δ(1 + M_m δ)⁻¹]Fᵐᵀ ≤ Fᵐ δ M δ Fᵐᵀ (F = Φ − K_pH, M_m the information
        about the prediction error that m steady innovations carry, below its limit
        M = Σ_j Fʲᵀ Hᵀ H Fʲ / S). For an output h (the filtered spin rows 𝒫(1 − K_fH), the
        prediction H), |h Fᵐ| ≤ g = Σ_i |(hU)_i| |U⁻¹_i| in the eigenbasis F = U diag(μ) U⁻¹,
        so its RMS difference is at most g √tr(δMδ); relative to the output's steady RMS √v:
        tr(δMδ) g²/v. M in the eigenbasis: [h_i h_l / (1 − μ_i μ_l)]/S with h = Uᵀ Hᵀ.
        """
        Phi, H = self._Phi, self._C
        mu, U = np.linalg.eig(Phi - np.outer(self._predictor_gain, H))
        U_inv = np.linalg.inv(U)
        h = U.T @ H
        G = np.outer(h, h) / (1.0 - np.outer(mu, mu)) / self.innovation_variance
        information = (U_inv.T @ G @ U_inv).real
        information = 0.5 * (information + information.T)
        g = np.abs(self._outputs @ U) @ np.linalg.norm(U_inv, axis=1)
        estimate = self.projection @ (self._sigma - self.filtered_covariance) @ self.projection.T
        variance = np.concatenate([np.diag(estimate), [self.innovation_variance]])
        return information, g**2 / variance

    def _build_chunk_matrices(self, F: np.ndarray, K: np.ndarray) -> None:
        """Precompute the steady filter over chunks of L samples as three matrix products.

        With p the prediction before a chunk and y_j its samples, the prediction of the
        chunk's sample i is Fⁱ p + Σ_{j<i} F^{i−1−j} K y_j, and its outputs h p_i + d y_i (the
        spin rows and the prediction H). The outputs of all L samples are therefore Y T + ζ O,
        where Y holds the chunks' samples as rows, T the lower-triangular Toeplitz blocks
        (d on the diagonal, h F^{i−1−j} K below it) and O the free responses of the modes
        (ζ = the modes' real and imaginary parts, z_s → λ_sⁱ z_s); the modes after the chunk are
        λ^L z + Y B. Only the recursion of the modes from chunk to chunk is sequential: one
        scalar recursion per mode over N/L chunk values (``lfilter``). The products are dense
        BLAS (about 4L + 5n multiply-adds per sample), where the per-sample mode recursions with
        their output sums cost one lfilter call per mode over every sample and a complex product
        (2.4 MS/s for the 42-dimensional transit model, BENCHMARKS.md).
        """
        L, H = self._chunk_length, self._outputs
        q = H.shape[0]
        impulse = np.empty((L, q))  # d, then h F^{m−1} K, m = 1 … L−1
        impulse[0] = self._direct
        column = K.copy()
        for m in range(1, L):
            impulse[m] = H @ column
            column = F @ column
        T = np.zeros((L, L, q))  # [j, i, output]
        for j in range(L):
            T[j, j:] = impulse[: L - j]
        self._chunk_toeplitz = T.reshape(L, L * q)
        lam = self._lambda
        complex_modes = ~self._real
        powers = lam[None, :] ** np.arange(L)[:, None]  # λⁱ, (L, modes)
        free = self._mode_outputs[None, :, :] * powers[:, None, :]  # (L, q, modes)
        # ζ = (Re z of every mode, Im z of the complex ones): Re(a z) = Re a Re z − Im a Im z.
        self._chunk_free = np.ascontiguousarray(
            np.concatenate([free.real, -free.imag[:, :, complex_modes]], axis=2)
            .reshape(L * q, -1)
            .T
        )
        drive = self._mode_gain[None, :] * lam[None, :] ** np.arange(L - 1, -1, -1)[:, None]
        self._chunk_drive = np.ascontiguousarray(
            np.concatenate([drive.real, drive.imag[:, complex_modes]], axis=1)
        )  # (L, n): row j adds g λ^{L−1−j} y_j to the modes
        self._chunk_powers = lam[None, :] ** np.arange(L + 1)[:, None]  # λ^r, r = 0 … L
        self._chunk_matrix = np.vstack([self._chunk_toeplitz, self._chunk_free])
        # Column of each mode's imaginary part in ζ (−1: a real mode has none); Re z_s is column s.
        self._imag_column = np.full(lam.size, -1)
        self._imag_column[complex_modes] = lam.size + np.arange(np.count_nonzero(complex_modes))

    def _zeta(self, z: np.ndarray) -> np.ndarray:
        """Return the real coordinates (Re z, Im z of the complex modes) of the modes' state."""
        return np.concatenate([z.real, z.imag[..., ~self._real]], axis=-1)

    def _modes_of(self, zeta: np.ndarray) -> np.ndarray:
        """Return the complex modes from their real coordinates (inverse of ``_zeta``)."""
        m = self._lambda.size
        z = zeta[..., :m].astype(complex)
        z[..., ~self._real] += 1j * zeta[..., m:]
        return z

    def _steady(
        self,
        y: np.ndarray,
        start: int,
        stop: int,
        spin: np.ndarray,
        innovations: np.ndarray,
        normalised: np.ndarray,
    ) -> None:
        """Filter y[start:stop] with the steady filter in chunks of L samples, carrying its
        modes (``_build_chunk_matrices``)."""
        assert self._z is not None
        L, p = self._chunk_length, self.projection.shape[0]
        q = p + 1
        root_S = math.sqrt(self.innovation_variance)
        for a in range(start, stop, _STEADY_CHUNK):
            b = min(stop, a + _STEADY_CHUNK)
            segment = y[a:b]
            full, rest = divmod(b - a, L)
            out = np.empty((b - a, q))
            with _BLAS.limit(**_ONE_BLAS_THREAD):
                if full:
                    # X = [Y | ζ before each chunk], then one product X [T; O] in place.
                    X = np.empty((full, L + self._chunk_free.shape[0]))
                    Y = X[:, :L]
                    Y[:] = segment[: full * L].reshape(full, L)
                    drive = Y @ self._chunk_drive  # (full, n): the modes' increments, as ζ
                    mu = self._chunk_powers[L]
                    for s, im in enumerate(self._imag_column):  # mode s: ζ column s (and im)
                        if im < 0:  # a real mode, in real arithmetic
                            m, u, z0 = mu[s].real, drive[:, s], self._z[s].real
                        else:
                            m, u, z0 = mu[s], drive[:, s] + 1j * drive[:, im], self._z[s]
                        after = signal.lfilter([1.0], [1.0, -m], u, zi=[m * z0])[0]
                        X[0, L + s], X[1:, L + s] = z0.real, after[:-1].real
                        if im >= 0:
                            X[0, L + im], X[1:, L + im] = z0.imag, after[:-1].imag
                        self._z[s] = after[-1]
                    np.matmul(X, self._chunk_matrix, out=out[: full * L].reshape(full, L * q))
                if rest:
                    tail = segment[full * L :]
                    columns = q * rest
                    out[full * L :] = (
                        tail @ self._chunk_toeplitz[:rest, :columns]
                        + self._zeta(self._z) @ self._chunk_free[:, :columns]
                    ).reshape(rest, q)
                    self._z = self._chunk_powers[rest] * self._z + self._modes_of(
                        tail @ self._chunk_drive[L - rest :]
                    )
            spin[a:b] = out[:, :p]
            e = innovations[a:b]
            np.subtract(segment, out[:, p], out=e)
            np.divide(e, root_S, out=normalised[a:b])
            if self._unsettled:  # after a quick hand-over: not yet the steady filter's law
                left_out = min(self._unsettled, b - a)
                normalised[a : a + left_out] = np.nan
                self._unsettled -= left_out

    # --- the running whiteness test -------------------------------------------------------------
    def _accumulate(self, u: np.ndarray) -> None:
        """Add the sums of u², u and the lag products of a contiguous stretch to the window."""
        u = u[np.isfinite(u)]
        if u.size == 0:
            return
        L = self.whiteness_lags
        joined = np.concatenate([self._carry, u])
        m = self._carry.size
        sums = np.empty(L + 3)
        sums[0], sums[1], sums[2] = u.size, float(u @ u), float(u.sum())
        for lag in range(1, L + 1):
            # products u_k u_{k−lag} with k in the new stretch
            lo = max(m, lag)  # a stretch shorter than the lag (none before it) has none
            sums[2 + lag] = (
                float(joined[lo:] @ joined[lo - lag : joined.size - lag])
                if lo < joined.size
                else 0.0
            )
        self._window.append(sums)
        self._carry = joined[-L:].copy()

    def whiteness(self) -> Whiteness | None:
        """Return the whiteness test over the window of recent stretches (None if too short)."""
        if not self._window:
            return None
        total = np.sum(self._window, axis=0)
        n, square, mean = int(total[0]), total[1], total[2] / total[0]
        L = self.whiteness_lags
        if n <= 10 * L:
            return None
        # Autocorrelations about the mean (the products were taken about zero).
        c0 = square / n - mean * mean
        rho = (total[3:] / n - mean * mean) / c0
        q = n * (n + 2) * float(np.sum(rho**2 / (n - np.arange(1, L + 1))))
        return Whiteness(
            normalised_variance=square / n,
            variance_uncertainty=math.sqrt(2.0 / n),
            ljung_box=q,
            lags=L,
            p_value=float(stats.chi2.sf(q, L)),
            samples=n,
        )
