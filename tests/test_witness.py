"""The separable bound of the ⁸⁷Rb witness, the lifetime after the readout and the generic
Riccati solver (docs/physics.md §6), checked against independent computations: explicit spin
matrices of the 8-state ground manifold, the Lyapunov ODE integrated numerically, a Kalman
filter run on a seeded simulated record, and a block model of spatial modes built here."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.qnd import (
    POPULATION_FREE_BOUND,
    THERMAL_BOUND,
    ContinuousReadout,
    KalmanFilter,
    entanglement_lifetime,
    entanglement_lifetime_of,
    prediction_check,
    riccati_residual,
    separable_bound,
    single_atom_bound,
    solve_conditional_covariance,
    spin_projection,
    squeezing_parameter,
    total_spin_variance,
)
from hotspin.simulators.spin_noise import ExactSpinNoise
from scipy import integrate, linalg

# Kong et al.'s configuration in the two-manifold model: SERF at 450 K, B ∥ [1,1,1].
ENTANGLING = ApparatusParameters(
    temperature_K=450.0,
    field_T=tuple(200e-9 / math.sqrt(3) * np.ones(3)),
    probe_power_W=2e-3,
    probe_detuning_Hz=60e9,
    beam_transit=False,  # the witness's mathematics on the wall mode; transit: test_kong.py
)


# --- explicit single-atom operators of the ground manifold (F = 2 block, then F = 1) -------------
def spin_matrices(f: int) -> list[np.ndarray]:
    """Return (f_x, f_y, f_z) of spin f in the |f, m⟩ basis, m = f … −f (textbook ladder)."""
    m = np.arange(f, -f - 1, -1, dtype=float)
    raising = np.diag(np.sqrt(f * (f + 1) - m[1:] * (m[1:] + 1)), 1)
    lowering = raising.T
    return [(raising + lowering) / 2, (raising - lowering) / 2j, np.diag(m).astype(complex)]


def ground_manifold_operators() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Return f⁽ᵃ⁾ₖ and f⁽ᵇ⁾ₖ as 8×8 block-diagonal operators and the projector on F = 2."""
    a, b = spin_matrices(2), spin_matrices(1)
    zero5, zero3 = np.zeros((5, 5)), np.zeros((3, 3))
    upper = [linalg.block_diag(x, zero3) for x in a]
    lower = [linalg.block_diag(zero5, x) for x in b]
    return upper, lower, linalg.block_diag(np.eye(5), zero3)


UPPER, LOWER, PROJECTOR_UPPER = ground_manifold_operators()
OPERATORS = UPPER + LOWER  # the single-atom x = (f⁽ᵃ⁾, f⁽ᵇ⁾)


def single_atom_covariance(rho: np.ndarray) -> np.ndarray:
    """Return the symmetrised 6×6 covariance of (f⁽ᵃ⁾, f⁽ᵇ⁾) in the state ρ."""
    means = np.array([np.trace(rho @ X).real for X in OPERATORS])
    second = np.array(
        [[0.5 * np.trace(rho @ (X @ Y + Y @ X)).real for Y in OPERATORS] for X in OPERATORS]
    )
    return second - np.outer(means, means)


def total_variance(rho: np.ndarray) -> float:
    """Return Σₖ Var(fₖ) of f = f⁽ᵃ⁾ + f⁽ᵇ⁾, from the operators directly."""
    total = 0.0
    for fa, fb in zip(UPPER, LOWER, strict=True):
        f = fa + fb
        total += (np.trace(rho @ f @ f) - np.trace(rho @ f) ** 2).real
    return float(total)


def random_state(rng: np.random.Generator, rank: int) -> np.ndarray:
    """Return a random density matrix of the 8 ground states with the given rank."""
    g = rng.standard_normal((8, rank)) + 1j * rng.standard_normal((8, rank))
    rho = g @ g.conj().T
    return rho / np.trace(rho).real


def coherent_state(f: int, direction: np.ndarray) -> np.ndarray:
    """Return |f, m = f⟩ along ``direction`` in the 8-state manifold, as a density matrix."""
    operators = UPPER if f == 2 else LOWER
    along = sum(n * X for n, X in zip(direction, operators, strict=True))
    values, vectors = np.linalg.eigh(along)
    top = vectors[:, np.argmax(values)]
    return np.outer(top, top.conj())


# --- the bound ----------------------------------------------------------------------------------
def test_single_atom_bound_holds_for_random_states_and_is_reached():
    rng = np.random.default_rng(12)
    margins = []
    for trial in range(3000):
        rho = random_state(rng, rank=1 + trial % 4)
        p = float(np.trace(rho @ PROJECTOR_UPPER).real)
        margins.append(total_variance(rho) - single_atom_bound(p))
    assert min(margins) > -1e-12
    # Tight: √p |2,2⟩ + √(1−p) |1,1⟩ (both stretched along z) has exactly 1 + 2p − p².
    for p in (0.0, 0.3, 5 / 8, 1.0):
        psi = np.zeros(8, dtype=complex)
        psi[0], psi[5] = math.sqrt(p), math.sqrt(1 - p)
        assert total_variance(np.outer(psi, psi.conj())) == pytest.approx(
            single_atom_bound(p), abs=1e-12
        )


def test_separable_bound_is_the_chord_not_the_single_atom_value():
    assert THERMAL_BOUND == 13 / 8
    assert POPULATION_FREE_BOUND == 1.0
    assert separable_bound(1.0) == 2.0
    assert single_atom_bound(5 / 8) == pytest.approx(1.859375)
    for p in np.linspace(0.01, 0.99, 9):  # below the concave single-atom curve between 0 and 1
        assert separable_bound(p) < single_atom_bound(p)


def test_separable_counterexample_with_thermal_marginals_is_not_called_entangled():
    # 5/8 of the atoms wholly in F = 2, 3/8 wholly in F = 1, each in a spin-coherent state along
    # its own random direction: a product state, so the collective covariance is the sum of the
    # atoms' own; its populations are the thermal ones.
    rng = np.random.default_rng(3)
    atoms = 800
    covariance = np.zeros((6, 6))
    populations = []
    for i in range(atoms):
        f = 2 if i < atoms * 5 // 8 else 1
        direction = rng.standard_normal(3)
        rho = coherent_state(f, direction / np.linalg.norm(direction))
        populations.append(np.trace(rho @ PROJECTOR_UPPER).real)
        covariance += single_atom_covariance(rho)
    assert np.mean(populations) == pytest.approx(5 / 8)
    variance = total_spin_variance(covariance)
    assert variance == pytest.approx(13 / 8 * atoms, rel=1e-12)
    assert variance / (atoms * THERMAL_BOUND) >= 1.0 - 1e-12  # not entangled under b = 13/8
    assert variance / (atoms * POPULATION_FREE_BOUND) > 1.0
    # The single-atom value b₁(5/8) would have called this separable state entangled.
    assert variance / (atoms * single_atom_bound(5 / 8)) == pytest.approx(0.874, abs=1e-3)
    # Mixed separable atoms (random states, thermal populations on average) are above it too.
    mixed = sum(single_atom_covariance(random_state(rng, 3)) for _ in range(200))
    assert total_spin_variance(mixed) > 200 * POPULATION_FREE_BOUND


def test_thermal_state_gives_xi2_of_4_5_over_1_625():
    # Every ground state equally populated: the per-atom covariance of the model's Σ.
    thermal = single_atom_covariance(np.eye(8) / 8)
    np.testing.assert_allclose(thermal, np.diag([1.25] * 3 + [0.25] * 3), atol=1e-15)
    assert total_spin_variance(thermal) / THERMAL_BOUND == 4.5 / 1.625
    readout = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    _, _, sigma, _ = readout.unit_matrices()
    assert total_spin_variance(sigma) / THERMAL_BOUND == pytest.approx(4.5 / 1.625, rel=1e-15)
    # Long after the readout stops the conditional state has relaxed to the thermal one.
    assert squeezing_parameter(readout, delay_s=1.0) == pytest.approx(4.5 / 1.625, rel=1e-9)


# --- the lifetime after the readout stops -------------------------------------------------------
def test_relaxation_after_the_readout_matches_the_integrated_lyapunov_equation():
    readout = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    A, Q, _, _ = readout.unit_matrices()
    start = readout.unit_conditional_covariance()
    P = np.hstack([np.eye(3), np.eye(3)])

    def lyapunov(_t: float, flat: np.ndarray) -> np.ndarray:  # dΣ/dt = AΣ + ΣAᵀ + Q
        S = flat.reshape(6, 6)
        return (A @ S + S @ A.T + Q).ravel()

    def reaches_bound(_t: float, flat: np.ndarray) -> float:
        S = flat.reshape(6, 6)
        return float(np.trace(P @ S @ P.T)) / THERMAL_BOUND - 1.0

    reaches_bound.terminal = True
    reaches_bound.direction = 1
    # LSODA handles the stiffness (R_SE ≫ the slow rates); tolerances far below the check's.
    taus = np.array([1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3])
    solution = integrate.solve_ivp(
        lyapunov, (0.0, 5e-3), start.ravel(), method="LSODA", t_eval=taus, rtol=1e-10,
        atol=1e-13, events=reaches_bound,
    )  # fmt: skip
    tau_ent = entanglement_lifetime(readout)
    assert solution.t_events[0][0] == pytest.approx(tau_ent, rel=1e-6)
    assert 0.2e-3 < tau_ent < 2e-3  # "the entanglement remains for about 1 millisecond"
    for tau, flat in zip(solution.t, solution.y.T, strict=True):
        expected = flat.reshape(6, 6)
        np.testing.assert_allclose(
            readout.unit_relaxed_covariance(tau), expected, atol=1e-7 * np.abs(expected).max()
        )
    # ξ²(τ) starts below 1 and is back above it after τ_ent.
    assert squeezing_parameter(readout) < 0.7
    assert squeezing_parameter(readout, delay_s=2 * tau_ent) > 1.0


def test_lifetime_is_zero_without_entanglement_and_shorter_under_the_population_free_bound():
    readout = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    assert entanglement_lifetime(readout, POPULATION_FREE_BOUND) < entanglement_lifetime(readout)
    weak = ContinuousReadout.from_apparatus(derive(ENTANGLING.with_changes(probe_power_W=5e-5)))
    assert squeezing_parameter(weak) > 1.0
    assert entanglement_lifetime(weak) == 0.0


def batch_standard_error(values: np.ndarray, batches: int = 30) -> float:
    """Return the standard error of the mean of correlated values from batch means."""
    means = [b.mean() for b in np.array_split(values, batches)]
    return float(np.std(means, ddof=1) / math.sqrt(batches))


def test_tau_ahead_prediction_errors_of_a_simulated_record_have_the_propagated_variance():
    derived = derive(ENTANGLING)
    readout = ContinuousReadout.from_apparatus(derived)
    rate = 100e3
    kalman = KalmanFilter(readout, rate)
    block = ExactSpinNoise.from_derived(derived, rate, seed=21).block(round(2.0 * rate))
    record = block.atomic_angle_rad + block.white_noise_rad
    output = kalman.run(record)
    tau_ent = entanglement_lifetime(readout)
    n = readout.model.atom_number
    start = output.settle_samples
    _, _, sigma, C = readout.unit_matrices()
    thermal_variance = float(C @ sigma @ C)  # of the atomic angle, rad²
    for multiple in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):  # a grid through τ_ent and beyond it
        m = round(multiple * tau_ent * rate)
        # On the measured angle: y_{k+m} − C Φᵐ x⁺_k has variance C Σ_pred(τ) Cᵀ + R_d.
        errors, predicted = kalman.prediction_errors(record, output, m)
        check = prediction_check([errors], predicted, m / rate)
        assert abs(check.pull) < 4.0, (multiple, check)  # 4 standard errors (batch means)
        # A forecast that ignores what the record told (the thermal variance) is rejected.
        naive = prediction_check([errors], thermal_variance + kalman.measurement_variance, m / rate)
        if multiple <= 1.0:
            assert naive.pull < -10.0
        # On the true spin (the simulator's state): the conditional ξ² τ after the readout.
        forecast = kalman.forecast(output, m)  # of the whole state; F = P x is the witness's
        spin = (
            block.state[start + m :] @ spin_projection(6).T
            - forecast @ spin_projection(forecast.shape[1]).T
        )
        squares = np.sum(spin**2, axis=1) / (n * THERMAL_BOUND)
        expected = total_spin_variance(kalman.prediction_covariance(m)) / (n * THERMAL_BOUND)
        assert abs(squares.mean() - expected) < 4.0 * batch_standard_error(squares)
    # The discrete prediction approaches the continuous relaxation as the sample rate rises.
    fine = KalmanFilter(readout, 1e7)
    m = round(tau_ent * 1e7)
    xi2 = total_spin_variance(fine.prediction_covariance(m)) / (n * THERMAL_BOUND)
    assert xi2 == pytest.approx(squeezing_parameter(readout, delay_s=m / 1e7), rel=3e-3)


# --- the generic Riccati solver on a block model of spatial modes ------------------------------
def diffusion_block_model(readout: ContinuousReadout, modes: int, diffusion_time_s: float):
    """Return (A, Q, C, Σ) of M spatial modes: mode m decays s_m/τ_D faster and carries the
    weight w_m of the Gauss–Laguerre rule for 1/(1 + τ/τ_D) = ∫₀^∞ e^{−s} e^{−sτ/τ_D} ds."""
    A6, _, sigma6, C6 = readout.unit_matrices()
    nodes, weights = np.polynomial.laguerre.laggauss(modes)
    A = linalg.block_diag(*[A6 - s / diffusion_time_s * np.eye(6) for s in nodes])
    sigma = linalg.block_diag(*[w * sigma6 for w in weights])
    return A, -(A @ sigma + sigma @ A.T), np.tile(C6, modes), sigma


# τ_D = w²/4D: 2.5 ms for a 1.4 mm beam in 100 Torr N₂ (no entanglement left), 25 ms for 4.4 mm.
@pytest.mark.parametrize("tau_d", [2.5e-3, 25e-3])
def test_riccati_of_block_models_is_solved_and_the_witness_converges_in_the_modes(tau_d):
    readout = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    xi2, lifetimes = {}, {}
    for modes in (1, 2, 3, 4, 6, 8, 12, 16):
        A, Q, C, sigma = diffusion_block_model(readout, modes, tau_d)
        conditional = solve_conditional_covariance(A, Q, C, readout.intensity, sigma)
        assert riccati_residual(A, Q, C, readout.intensity, conditional) < 1e-12
        assert np.linalg.eigvalsh(sigma - conditional).min() > -1e-12  # conditioning only helps
        assert total_spin_variance(sigma) / THERMAL_BOUND == pytest.approx(4.5 / 1.625)
        xi2[modes] = total_spin_variance(conditional) / THERMAL_BOUND
        lifetimes[modes] = entanglement_lifetime_of(A, sigma, conditional, THERMAL_BOUND)
    errors = [abs(xi2[m] - xi2[16]) for m in (1, 2, 4, 8)]
    assert errors == sorted(errors, reverse=True)  # converging in M
    assert errors[-1] < 1e-3 * xi2[16]
    assert (lifetimes[16] > 0) == (tau_d > 10e-3)
    assert abs(lifetimes[8] - lifetimes[16]) <= 1e-2 * lifetimes[16]
    # Diffusion adds decay the measurement must outrun: ξ² is above the one-mode model's.
    assert xi2[16] > squeezing_parameter(readout)


def test_block_model_without_diffusion_is_the_single_mode_model():
    readout = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    A, Q, C, sigma = diffusion_block_model(readout, 4, diffusion_time_s=1e9)
    conditional = solve_conditional_covariance(A, Q, C, readout.intensity, sigma)
    assert total_spin_variance(conditional) / THERMAL_BOUND == pytest.approx(
        squeezing_parameter(readout), rel=1e-6
    )


def test_riccati_solver_refuses_what_has_no_stationary_solution():
    readout = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    A, Q, sigma, C = readout.unit_matrices()
    with pytest.raises(ValueError, match="does not decay"):
        solve_conditional_covariance(-A, Q, C, readout.intensity, sigma)
    with pytest.raises(ValueError, match="positive definite"):
        solve_conditional_covariance(A, Q, C, 0.0, sigma)
    with pytest.raises(ValueError, match="dimension"):
        solve_conditional_covariance(A, Q, C[:5], readout.intensity, sigma)
    with pytest.raises(ValueError, match="stack of 6-dimensional"):
        spin_projection(8)


@dataclass(frozen=True)
class BlockSpinModel:
    """The interface ContinuousReadout uses of a spin model, for a block model of spatial modes."""

    drift: np.ndarray
    unit_stationary: np.ndarray
    unit_observation: np.ndarray
    atom_number: float

    def drift_matrix(self) -> np.ndarray:
        return self.drift

    def block_model(self, _upper: float, _lower: float, _axis: np.ndarray) -> tuple:
        A, S, n = self.drift, self.unit_stationary, self.atom_number
        C = self.unit_observation / math.sqrt(n)
        return A, -(A @ S + S @ A.T) * n, S * n, C


def test_kalman_filter_and_lifetime_of_a_block_model_approach_the_continuous_solution():
    single = ContinuousReadout.from_apparatus(derive(ENTANGLING))
    n = single.model.atom_number
    A, Q, C, sigma = diffusion_block_model(single, 8, 25e-3)
    readout = ContinuousReadout(BlockSpinModel(A, sigma, C, n), 1.0, 1.0, single.white_noise_psd)
    continuous = readout.conditional_covariance()
    assert np.allclose(
        continuous / n, solve_conditional_covariance(A, Q, C, readout.intensity, sigma)
    )
    errors = []
    for rate in (1e5, 1e6):
        kalman = KalmanFilter(readout, rate)
        Phi = linalg.expm(A / rate)
        P = kalman.predicted_covariance / n
        W = sigma - Phi @ sigma @ Phi.T
        gain = Phi @ P @ C / (C @ P @ C + kalman.measurement_variance)
        residual = Phi @ P @ Phi.T + W - P - np.outer(gain, C @ P @ Phi.T)  # the DARE
        assert np.abs(residual).max() < 1e-10 * np.abs(P).max()
        filtered = total_spin_variance(kalman.filtered_covariance)
        errors.append(
            abs(filtered - total_spin_variance(continuous)) / total_spin_variance(continuous)
        )
    assert errors[1] < errors[0] / 5 and errors[1] < 3e-3
    tau = entanglement_lifetime(readout)
    assert squeezing_parameter(readout, delay_s=tau) == pytest.approx(1.0, abs=1e-9)
