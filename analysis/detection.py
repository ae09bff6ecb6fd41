"""The detection chain: the balanced detector's bandwidth and the digitiser's decimation.

The PDB450A's RF output follows the difference photocurrent through one pole at the bandwidth of
its gain setting (Thorlabs, PDB450A specifications, "Balanced Amplified Photodetectors" page:
switchable DC – 150, 45, 4 MHz, 300, 100 kHz at 10³ … 10⁷ V/A). The Red Pitaya samples it at
125 MS/s and keeps one output sample per D: with averaging on (`ACQ:AVG ON`, which its
`acq_SetDefault` selects) each output sample is the mean of the D samples since the last one; with
it off it is the last sample alone, so everything above f_s/2 aliases into the band.

Both are linear, so the recorded angle stays a linear Gaussian process, and its exact discrete
form is derived here once for the simulator and for the fit's expected Welch spectrum:
- the atoms (the block model, `SpinModel.block_model`) and the pole, v̇ = ω_c (Cx − v), form one
  continuous stationary state s = (x, v); averaging takes y_k = (1/T)∫ v dt over the output
  interval T. Its exact discrete form s_{k+1} = Φ s_k + w_k, y_k = H s_k + u_k with correlated
  (w_k, u_k) follows from Φ, ∫e^{Aτ} and ∫(T − τ)e^{Aτ} (one matrix exponential) and the
  stationary covariance. The boxcar is taken as the integral over T instead of the mean of D
  samples 8 ns apart: the atoms change by λδ ≲ 10⁻² in 8 ns, an error of ≲ 10⁻⁵.
- the white noise (shot and detector) through the pole is an Ornstein–Uhlenbeck process of rate
  ω_c; its D-sample means are computed exactly as sums (the pole can be faster than 8 ns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hotspin.analysis.checks import ParameterError, check_positive, check_range
from hotspin.analysis.spin_model import PROBE_AXIS, SpinModel
from scipy import linalg

# PDB450A −3 dB bandwidth of the RF output at each transimpedance gain (V/A → Hz).
PDB450A_BANDWIDTH_Hz: dict[float, float] = {
    1e3: 150e6,
    1e4: 45e6,
    1e5: 4e6,
    1e6: 300e3,
    1e7: 100e3,
}
RED_PITAYA_ADC_RATE_Hz = 125e6
# Beyond this condition number of Φ's eigenvectors the lagged covariances are built by doubling.
_MAX_EIGENVECTOR_CONDITION = 1e8


def pdb450a_bandwidth_Hz(gain_V_per_A: float) -> float:
    """Return the PDB450A's RF bandwidth at a gain setting; other gains are refused by name."""
    for gain, bandwidth in PDB450A_BANDWIDTH_Hz.items():
        if math.isclose(gain_V_per_A, gain, rel_tol=1e-6):
            return bandwidth
    raise ParameterError(
        f"gain_diff_V_per_A = {gain_V_per_A:g} is not a PDB450A setting: one of "
        f"{', '.join(f'{g:g}' for g in PDB450A_BANDWIDTH_Hz)} V/A"
    )


@dataclass(frozen=True)
class DetectionChain:
    """Detector pole and digitiser decimation between the photocurrents and the samples."""

    bandwidth_Hz: float  # the detector's −3 dB frequency (one pole)
    decimation: int  # ADC samples per output sample
    decimation_averaging: bool = True  # Red Pitaya ACQ:AVG: boxcar (True) or plain decimation
    adc_rate_Hz: float = RED_PITAYA_ADC_RATE_Hz

    def __post_init__(self) -> None:
        check_positive("bandwidth_Hz", self.bandwidth_Hz, "Hz")
        check_range("decimation", self.decimation, 1, 1 << 17, "samples")
        if int(self.decimation) != self.decimation:
            raise ParameterError(f"decimation = {self.decimation} must be a whole number")
        object.__setattr__(self, "decimation", int(self.decimation))
        check_positive("adc_rate_Hz", self.adc_rate_Hz, "Hz")

    @classmethod
    def pdb450a(
        cls, gain_V_per_A: float, decimation: int, decimation_averaging: bool = True
    ) -> DetectionChain:
        """Return the chain of a PDB450A at ``gain_V_per_A`` into a Red Pitaya."""
        return cls(pdb450a_bandwidth_Hz(gain_V_per_A), decimation, decimation_averaging)

    @property
    def sample_rate_Hz(self) -> float:
        """Return the output sample rate f_s = f_ADC/D."""
        return self.adc_rate_Hz / self.decimation

    @property
    def pole_rate(self) -> float:
        """Return ω_c = 2π × bandwidth in s⁻¹."""
        return 2 * math.pi * self.bandwidth_Hz


@dataclass(frozen=True)
class DiscreteOutput:
    """s_{k+1} = Φ s_k + w_k, y_k = scale·(H s_k + u_k), (w_k, u_k) ~ N(0, noise); s ~ N(0, P).

    The state is kept in units where every entry is of order one (``scale`` carries the unit).
    """

    transition: np.ndarray  # Φ
    output: np.ndarray  # H
    noise: np.ndarray  # joint covariance of (w_k, u_k), the last row/column u_k's
    stationary: np.ndarray  # P, the stationary covariance of s at the sample instants
    scale: float = 1.0  # y in its unit per unit of H s + u
    #: Sizes of Φ's diagonal blocks, in order, when it is block diagonal (one per transit mode
    #: behind the chain); empty: one block.
    blocks: tuple[int, ...] = ()
    #: (μ, V, V⁻¹) of each block of Φ where its builder has them; empty: found when needed.
    block_modes: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] = ()

    def _modes(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Return Φ's eigenvalues μ_j and the weights (HV)_j (V⁻¹g)_j, block by block (seven
        7 × 7 eigenproblems cost a third of one 49 × 49); None near an exceptional point."""
        n = self.transition.shape[0]
        eigenvalues, weights, start = [], [], 0
        for i, size in enumerate(self.blocks or (n,)):
            b = slice(start, start + size)
            if self.block_modes:
                mu, V, V_inverse = self.block_modes[i]
                to_modes = V_inverse @ g[b]
            else:
                mu, V = np.linalg.eig(self.transition[b, b])
                if np.linalg.cond(V) >= _MAX_EIGENVECTOR_CONDITION:
                    return None
                to_modes = np.linalg.solve(V, g[b])
            eigenvalues.append(mu)
            weights.append((self.output[b] @ V) * to_modes)
            start += size
        return np.concatenate(eigenvalues), np.concatenate(weights)

    def autocovariance(self, lags: int) -> np.ndarray:
        """Return R(k) = Cov(y_{j+k}, y_j) for k = 0 … lags−1."""
        n = self.transition.shape[0]
        H, P, Phi = self.output, self.stationary, self.transition
        first = float(H @ P @ H + self.noise[n, n])
        g = Phi @ P @ H + self.noise[:n, n]  # Cov(s_{j+1}, y_j)
        modes = self._modes(g)
        if modes is not None:
            # R(k) = Σ_j (HV)_j (V⁻¹g)_j μ_jᵏ⁻¹.
            eigenvalues, weights = modes
            # μᵏ = μ^{Bm} μʳ for k = Bm + r: two short cumulative products instead of lags powers.
            block = 128
            small = np.cumprod(np.hstack([np.ones((eigenvalues.size, 1)),
                                          np.repeat(eigenvalues[:, None], block - 1, axis=1)]),
                               axis=1)  # fmt: skip
            big = np.cumprod(
                np.hstack(
                    [
                        np.ones((eigenvalues.size, 1)),
                        np.repeat((eigenvalues**block)[:, None], -(-lags // block) - 1, axis=1),
                    ]
                ),
                axis=1,
            )
            # One small product (blocks × modes by modes × block): twelve times faster than the
            # three-operand einsum, which loops in C without BLAS. Its callers are the spectrum
            # fits, which run on one BLAS thread (OpenBLAS's threads stall small products on a
            # busy machine).
            lagged = ((weights[:, None] * big).T @ small).real.ravel()[: lags - 1]
        else:
            # Near an exceptional point: columns Φᵏ g by doubling (exact without an eigenbasis).
            columns = g[:, None]
            step = Phi
            while columns.shape[1] < lags - 1:
                columns = np.hstack([columns, step @ columns])
                step = step @ step
            lagged = H @ columns[:, : lags - 1]
        return self.scale**2 * np.concatenate([[first], lagged])


def detected_atoms(
    model: SpinModel,
    coupling_upper: float,
    coupling_lower: float,
    chain: DetectionChain,
    axis: np.ndarray = PROBE_AXIS,
) -> DiscreteOutput:
    """Return the exact discrete output model of the atomic angle behind the detection chain.

    In units of √N for the spins and of the angle's standard deviation σ_θ for v and y. The
    transit modes are independent and the chain is linear, so each mode gets its own pole state
    (v = Σ_m v_m) and the 7-dimensional systems are solved side by side (stacked, instead of
    one of 7M × 7M): the state is (x₁, v₁, x₂, v₂, …), y = Σ_m y_m.
    """
    A_m, S_m, c = model.mode_blocks(coupling_upper, coupling_lower, axis)
    atoms = model.atom_number
    sigma = math.sqrt(float(np.sum(c @ S_m @ c)))
    M = len(A_m)
    C_m = np.tile(c * (math.sqrt(atoms) / sigma), (M, 1))
    Phi_m, H_m, noise_m, P_m, modal = _detected_modes(A_m, S_m / atoms, C_m, chain)
    # Assembled in place: scipy's block_diag, three times per call, cost a fifth of a fit.
    size = 7 * M
    Phi, P, noise = np.zeros((size, size)), np.zeros((size, size)), np.zeros((size + 1, size + 1))
    for m in range(M):
        b = slice(7 * m, 7 * m + 7)
        Phi[b, b], P[b, b] = Phi_m[m], P_m[m]
        noise[b, b] = noise_m[m, :7, :7]
    noise[:size, size] = noise[size, :size] = noise_m[:, :7, 7].ravel()
    noise[size, size] = float(noise_m[:, 7, 7].sum())
    return DiscreteOutput(Phi, H_m.ravel(), noise, P, sigma, blocks=(7,) * M, block_modes=modal)


def _detected_modes(
    A: np.ndarray, S: np.ndarray, C: np.ndarray, chain: DetectionChain
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Return (Φ, H, joint noise of (w, u), P) of each transit mode with its pole state, stacked
    (A, S: M × 6 × 6, C: M × 6, unit spins), and each Φ's (μ, V, V⁻¹) (empty if one has none).

    Stacked, the M small problems cost one set of numpy calls: one by one, their Python
    overhead was most of a fit's model evaluation.
    """
    M, n = C.shape
    w = chain.pole_rate
    As = pole_drifts(A, C, chain)
    Ps = np.zeros((M, n + 1, n + 1))
    Ps[:, :n, :n] = S
    # Cov(x, v) and Var v from the stationary Lyapunov equation A_s P + P A_sᵀ + Q_s = 0: its
    # (x, v) block reads (w − A) P_xv = w S Cᵀ, its (v, v) entry Var v = C P_xv.
    xv = np.linalg.solve(w * np.eye(n) - A, w * (S @ C[:, :, None]))[:, :, 0]
    Ps[:, :n, n] = Ps[:, n, :n] = xv
    Ps[:, n, n] = np.sum(C * xv, axis=1)
    T = 1.0 / chain.sample_rate_Hz
    Phi, J1, J2, modal = _mode_exponentials(As, T)
    PhiT = np.swapaxes(Phi, 1, 2)
    W = Ps - Phi @ Ps @ PhiT
    noise = np.zeros((M, n + 2, n + 2))
    noise[:, : n + 1, : n + 1] = 0.5 * (W + np.swapaxes(W, 1, 2))
    if not chain.decimation_averaging:
        H = np.zeros((M, n + 1))
        H[:, n] = 1.0  # the detector's output v
        return Phi, H, noise, Ps, modal
    # y_k = (1/T)∫ v dt over the interval: H = h J₁/T; Var y = (2/T²) h J₂ P hᵀ (stationary);
    # Cov(s_{k+1}, y_k) = J₁ P hᵀ/T. The noise parts are what H s_k does not explain (h picks v).
    H = J1[:, n, :] / T
    PH = (Ps @ H[:, :, None])[:, :, 0]
    noise[:, n + 1, n + 1] = 2.0 / T**2 * np.sum(J2[:, n, :] * Ps[:, :, n], axis=1) - np.sum(
        H * PH, axis=1
    )
    cross = (J1 @ Ps[:, :, n : n + 1])[:, :, 0] / T - (Phi @ PH[:, :, None])[:, :, 0]
    noise[:, : n + 1, n + 1] = noise[:, n + 1, : n + 1] = cross
    return Phi, H, noise, Ps, modal


def pole_drifts(A: np.ndarray, C: np.ndarray, chain: DetectionChain) -> np.ndarray:
    """Return each transit mode's drift with the detector's pole behind it, stacked: the state
    s = (x, v) with dv/dt = ω_c (C x − v), the pole following the atomic angle (A: M × n × n,
    C: M × n)."""
    M, n = C.shape
    w = chain.pole_rate
    As = np.zeros((M, n + 1, n + 1))
    As[:, :n, :n] = A
    As[:, n, :n] = w * C
    As[:, n, n] = -w
    return As


# Condition number of a mode's eigenvectors up to which its exponentials are formed in the
# eigenbasis (their error is about ε times it); beyond it, from one matrix exponential.
_MAX_MODAL_CONDITION = 1e4


def _mode_exponentials(A: np.ndarray, T: float) -> tuple:
    """Return (e^{AT}, ∫₀ᵀ e^{Aτ} dτ, ∫₀ᵀ (T − τ) e^{Aτ} dτ) of each matrix of the stack A, and
    the (μ, V, V⁻¹) of every e^{AT} (empty if one is ill-conditioned).

    In the eigenbasis A = V Λ V⁻¹ the three are V diag(f(λ)) V⁻¹ with f = e^{λT}, T φ₁(λT),
    T² φ₂(λT), φ₁(z) = (e^z − 1)/z and φ₂(z) = (e^z − 1 − z)/z² (their Taylor series near
    z = 0): stacked 7 × 7 eigenproblems instead of a 21 × 21 exponential each, and the modes
    the autocovariance needs come with them. A matrix whose eigenvectors are ill-conditioned
    (near an exceptional point) gets Van Loan's exponential instead; the two agree to 1e-12
    elsewhere (tests/test_detection.py).
    """
    eigenvalues, V = np.linalg.eig(A)
    V_inverse = np.linalg.inv(V)
    # The 1-norm condition number of each V (no singular values: this runs in every fit step).
    condition = np.abs(V).sum(axis=1).max(axis=1) * np.abs(V_inverse).sum(axis=1).max(axis=1)
    z = eigenvalues * T
    mu = np.exp(z)
    small = np.abs(z) < 1e-2  # there the series to z⁴, accurate to 1e-13
    safe = np.where(small, 1.0, z)
    phi1 = np.where(small, 1 + z / 2 + z**2 / 6 + z**3 / 24 + z**4 / 120, np.expm1(safe) / safe)
    phi2 = np.where(
        small, 0.5 + z / 6 + z**2 / 24 + z**3 / 120 + z**4 / 720, (phi1 - 1) / safe
    )  # (e^z − 1 − z)/z²

    def through(f: np.ndarray) -> np.ndarray:
        return ((V * f[:, None, :]) @ V_inverse).real

    Phi, J1, J2 = through(mu), through(T * phi1), through(T * T * phi2)
    ill = np.flatnonzero(condition > _MAX_MODAL_CONDITION)
    for m in ill:
        Phi[m], J1[m], J2[m] = _integrated_exponentials(A[m], T)
    modal = () if ill.size else tuple(zip(mu, V, V_inverse, strict=True))
    return Phi, J1, J2, modal


def _integrated_exponentials(A: np.ndarray, T: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (e^{AT}, ∫₀ᵀ e^{Aτ} dτ, ∫₀ᵀ (T − τ) e^{Aτ} dτ) from one matrix exponential.

    exp([[A, 1, 0], [0, 0, 1], [0, 0, 0]] T) holds them in its first block row (Van Loan 1978);
    unlike the e^{−AT} of Van Loan's covariance formula it never overflows for a stiff A.
    """
    n = A.shape[0]
    M = np.zeros((3 * n, 3 * n))
    M[:n, :n] = A
    M[:n, n : 2 * n] = np.eye(n)
    M[n : 2 * n, 2 * n :] = np.eye(n)
    E = linalg.expm(M * T)
    return E[:n, :n], E[:n, n : 2 * n], E[:n, 2 * n :]


def detected_white_noise(chain: DetectionChain) -> DiscreteOutput:
    """Return the exact discrete output model of a one-sided white PSD of 1 behind the chain.

    Through the pole it is an OU process of rate ω_c and variance ω_c/4; sampled at the ADC rate
    it is AR(1) with a = e^{−ω_c δ}. Without averaging y_k is every D-th sample; with it, the mean
    of D samples: y_k = (S₀ u_{kD} + Σ_j b_j e_j)/D, b_j = (1 − a^{D−j})/(1 − a).
    """
    a = math.exp(-chain.pole_rate / chain.adc_rate_Hz)
    variance = chain.pole_rate / 4.0
    D = chain.decimation
    kick = variance * (1 - a * a)  # Var e_j
    carry = a**D
    if not chain.decimation_averaging:
        noise = np.array([[variance * (1 - carry**2), 0.0], [0.0, 0.0]])
        return DiscreteOutput(np.array([[carry]]), np.array([1.0]), noise, np.array([[variance]]))
    j = np.arange(1, D)
    b = -np.expm1((D - j) * math.log(a)) / (1 - a) if a < 1 else (D - j).astype(float)
    head = -math.expm1(D * math.log(a)) / (1 - a) if a < 1 else float(D)  # S₀ = Σ_{i<D} aⁱ
    noise = np.array(
        [
            [variance * (1 - carry**2), kick * float(b @ a ** (D - j)) / D],
            [kick * float(b @ a ** (D - j)) / D, kick * float(b @ b) / D**2],
        ]
    )
    return DiscreteOutput(np.array([[carry]]), np.array([head / D]), noise, np.array([[variance]]))
