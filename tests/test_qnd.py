"""QND readout (PHYSICS.md §6): Riccati covariance, Kalman filter, innovations, witness."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hotspin.analysis.detection import DetectionChain
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import ProbeGeometry, fit_spin_noise, initial_values
from hotspin.analysis.qnd import (
    THERMAL_BOUND,
    ContinuousReadout,
    KalmanFilter,
    entanglement_lifetime,
    entanglement_witness,
    innovations_check,
    prediction_check,
    squeezing_parameter,
    total_spin_variance,
)
from hotspin.analysis.spectra import StreamingPSD
from hotspin.simulators.spin_noise import DetectedAngleNoise, ExactSpinNoise, FastAngleNoise

DIAGONAL = tuple(200e-9 / math.sqrt(3) * np.ones(3))  # |B| = 200 nT along [1,1,1]
# The entanglement configuration: SERF at 450 K, field along [1,1,1] so the probe sees all
# three components of F, 2 mW at 60 GHz (measurement rate above the spin-exchange-limited decay).
ENTANGLING = ApparatusParameters(
    temperature_K=450.0,
    field_T=DIAGONAL,
    probe_power_W=2e-3,
    probe_detuning_Hz=60e9,
    beam_transit=False,  # the witness's mathematics on the wall mode; transit: test_kong.py
)
# Shot noise dominates: a weak probe (or a field across the probe, which hides F along B).
WEAK_PROBE = ENTANGLING.with_changes(probe_power_W=0.05e-3)
FIELD_ACROSS = ENTANGLING.with_changes(field_T=(200e-9, 0.0, 0.0))


def readout(apparatus: ApparatusParameters) -> ContinuousReadout:
    return ContinuousReadout.from_apparatus(derive(apparatus))


def test_conditional_covariance_solves_the_riccati_equation_with_half_the_one_sided_psd():
    r = readout(ENTANGLING)
    A, Q, _, C = r.unit_matrices()
    S = r.unit_conditional_covariance()
    intensity = r.white_noise_psd / 2.0  # one-sided S_θ ↔ two-sided intensity S_θ/2
    residual = A @ S + S @ A.T + Q - np.outer(S @ C, C @ S) / intensity
    assert np.abs(residual).max() < 1e-11 * np.abs(A @ S).max()
    assert np.all(np.linalg.eigvalsh(S) > 0)
    # Conditioning only removes variance: Σ − Σ_c is positive semi-definite.
    _, _, sigma, _ = r.unit_matrices()
    assert np.linalg.eigvalsh(sigma - S).min() > -1e-12


def test_discrete_kalman_covariance_converges_to_the_continuous_riccati_solution():
    r = readout(ENTANGLING)
    continuous = r.conditional_covariance()
    errors = []
    for rate in (1e5, 1e6, 1e7):
        filtered = KalmanFilter(r, rate).filtered_covariance
        errors.append(np.abs(filtered - continuous).max() / np.abs(continuous).max())
    assert errors[2] < 2e-3
    # First order in 1/f_s: each decade of sample rate gains a decade of accuracy.
    assert errors[0] / errors[1] == pytest.approx(10, rel=0.2)
    assert errors[1] / errors[2] == pytest.approx(10, rel=0.2)


def test_filter_estimation_errors_have_the_predicted_covariance_and_white_innovations():
    d = derive(ENTANGLING)
    r = ContinuousReadout.from_apparatus(d)
    rate = 500e3
    kalman = KalmanFilter(r, rate)
    spins = ExactSpinNoise.from_derived(d, rate, seed=1)
    block = spins.block(300_000)
    record = block.atomic_angle_rad + block.white_noise_rad
    output = kalman.run(record)
    settled = slice(kalman.settle_samples, None)
    errors = (block.state - output.estimates)[settled]
    empirical = np.cov(errors.T)
    predicted = kalman.filtered_covariance
    assert total_spin_variance(empirical) == pytest.approx(total_spin_variance(predicted), rel=0.05)
    np.testing.assert_allclose(np.diag(empirical), np.diag(predicted), rtol=0.1)
    check = innovations_check(
        output.innovations, output.innovation_variance, skip=kalman.settle_samples
    )
    assert check.consistent
    assert check.normalised_variance == pytest.approx(1.0, abs=4 * math.sqrt(2 / check.samples))
    # A wrong model (twice the readout noise, or another field) fails the same checks.
    wrong_noise = ContinuousReadout(
        d.model, d.coupling_upper_rad, d.coupling_lower_rad, 2 * d.white_noise_psd_rad2_per_Hz
    )
    wrong_field = readout(ENTANGLING.with_changes(field_T=tuple(1.5 * np.array(DIAGONAL))))
    for model in (wrong_noise, wrong_field):
        filtered = KalmanFilter(model, rate).run(record)
        assert not innovations_check(
            filtered.innovations, filtered.innovation_variance, skip=kalman.settle_samples
        ).consistent


def test_witness_below_one_only_when_the_measurement_outruns_the_shot_noise():
    assert squeezing_parameter(readout(ENTANGLING)) < 0.7
    assert squeezing_parameter(readout(WEAK_PROBE)) > 1.5
    assert squeezing_parameter(readout(FIELD_ACROSS)) > 1.0
    # Without light at all the conditional state is the thermal one: 3·(5/4 + 1/4)/b.
    thermal = readout(ENTANGLING.with_changes(probe_power_W=1e-12))
    assert squeezing_parameter(thermal) == pytest.approx(4.5 / THERMAL_BOUND, rel=1e-3)


def fitted(apparatus: ApparatusParameters, seed: int):
    d = derive(apparatus)
    rate = 100e3
    generator = FastAngleNoise.from_derived(d, rate, seed=seed)
    psd = StreamingPSD(2048, rate)
    psd.add(generator.block(round(2 * rate)))
    return fit_spin_noise(psd.spectrum(), ProbeGeometry.from_apparatus(d), initial_values(d))


def test_witness_from_a_fitted_spectrum_carries_propagated_uncertainties():
    truth = squeezing_parameter(readout(ENTANGLING))
    result = entanglement_witness(fitted(ENTANGLING, seed=2))
    xi2 = result.squeezing_parameter
    assert 0 < xi2.uncertainty < 0.1
    assert abs(xi2.value - truth) < 3 * xi2.uncertainty
    assert result.entangled
    n = derive(ENTANGLING).atom_number
    assert (
        abs(result.entangled_atoms.value - (1 - truth) * n) < 3 * result.entangled_atoms.uncertainty
    )
    assert "atoms entangled" in result.summary()
    # The lifetime after the readout stops, and the same numbers without the population
    # assumption (b = 1 instead of 13/8: ξ² is 13/8 times larger, the lifetime shorter).
    tau = result.lifetime
    assert 0 < tau.uncertainty < 0.2 * tau.value
    assert abs(tau.value - entanglement_lifetime(readout(ENTANGLING))) < 3 * tau.uncertainty
    free = result.population_free.squeezing_parameter
    assert free.value == pytest.approx(xi2.value * THERMAL_BOUND, rel=1e-9)
    assert free.uncertainty == pytest.approx(xi2.uncertainty * THERMAL_BOUND, rel=1e-6)
    assert result.population_systematic == pytest.approx(free.value - xi2.value)
    assert result.population_free.lifetime.value < tau.value
    assert "b = 1.625 per atom" in result.summary() and "b = 1 (no population" in result.summary()


def test_no_entanglement_is_claimed_when_shot_noise_dominates():
    result = entanglement_witness(fitted(FIELD_ACROSS, seed=3))
    assert result.squeezing_parameter.value >= 1.0
    assert not result.entangled
    assert "no entanglement claimed" in result.summary()


def test_bad_records_are_refused():
    kalman = KalmanFilter(readout(ENTANGLING), 100e3)
    with pytest.raises(ValueError, match="NaN"):
        kalman.run(np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="non-empty"):
        kalman.run(np.array([]))
    with pytest.raises(ValueError, match="need more than"):
        innovations_check(np.zeros(100), 1.0)
    with pytest.raises(ValueError, match="white_noise_psd"):
        ContinuousReadout(derive(ENTANGLING).model, 1e-13, 1e-13, math.inf)


def test_witness_and_lifetime_uncertainties_are_right_over_seeds():
    # Pulls of ξ², N_ent and τ_ent from fitted spectra against the model's own values: the
    # uncertainties propagated from the fit describe the scatter (|mean| < 0.3, width 0.7–1.3).
    truth = readout(ENTANGLING)
    xi2, tau = squeezing_parameter(truth), entanglement_lifetime(truth)
    atoms = truth.model.atom_number
    pulls = []
    for seed in range(100, 160):
        w = entanglement_witness(fitted(ENTANGLING, seed))
        pulls.append(
            [
                (w.squeezing_parameter.value - xi2) / w.squeezing_parameter.uncertainty,
                (w.entangled_atoms.value - (1 - xi2) * atoms) / w.entangled_atoms.uncertainty,
                (w.lifetime.value - tau) / w.lifetime.uncertainty,
            ]
        )
    pulls = np.array(pulls)
    assert np.all(np.abs(pulls.mean(axis=0)) < 0.3), pulls.mean(axis=0)
    assert np.all((0.7 < pulls.std(axis=0, ddof=1)) & (pulls.std(axis=0, ddof=1) < 1.3))


def test_settling_is_where_the_start_up_excess_falls_below_its_tolerance():
    # With the transit modes: the slowest mode (tiny weight) would claim ~60 000 samples.
    from hotspin.analysis.qnd import _SETTLED_AMPLITUDE, KalmanFilter, spin_projection

    r = readout(ENTANGLING.with_changes(beam_transit=True, field_T=tuple(DIAGONAL)))
    rate = 125e6 / 1024
    kalman = KalmanFilter(r, rate)
    sampled = r.sampled(rate)
    Phi, H, R = sampled.transition, sampled.output, sampled.measurement_variance
    n = Phi.shape[0]
    Kp, Kf = kalman._predictor_gain, kalman._filter_gain
    P_plus = kalman.filtered_covariance / r.model.atom_number
    proj = spin_projection(n)
    steady_spin = np.trace(proj @ P_plus @ proj.T)
    # The steady-gain filter started from the prior mean: its prediction error covariance by
    # brute-force recursion, E₀ = Σ, E_{k+1} = F E_k Fᵀ + Cov(w_k − K_p u_k), F = Φ − K_p H.
    F = Phi - np.outer(Kp, H)
    G = np.hstack([np.eye(n), -Kp[:, None]])
    noise = np.block([[sampled.process_noise, sampled.cross[:, None]],
                      [sampled.cross[None, :], np.array([[R]])]])  # fmt: skip
    drive = G @ noise @ G.T
    J = np.eye(n) - np.outer(Kf, H)
    E = sampled.stationary.copy()
    excess = []
    for _ in range(kalman.settle_samples + 1):
        innovations = (H @ E @ H + R) / kalman.innovation_variance - 1.0
        filtered = J @ E @ J.T + R * np.outer(Kf, Kf)
        excess.append(max(innovations, np.trace(proj @ filtered @ proj.T) / steady_spin - 1.0))
        E = F @ E @ F.T + drive
    k = kalman.settle_samples
    assert 100 < k < 20_000
    assert excess[k] <= _SETTLED_AMPLITUDE**2 < excess[k - 1]


# --- the detection chain in the sampled filter and the witness ----------------------------------
def test_the_filter_behind_the_chain_has_white_innovations_where_the_ideal_one_fails():
    # 450 K, 200 nT along [1,1,1], PDB450A at 10⁵ V/A into the board at decimation 1024 with its
    # boxcar: half the broad spin-exchange component's variance is averaged away.
    chain = DetectionChain.pdb450a(1e5, 1024, True)
    derived = derive(ENTANGLING)
    behind = replace(ContinuousReadout.from_apparatus(derived), detection=chain)
    record = DetectedAngleNoise.from_derived(derived, chain, seed=17).block(400_000)
    rate = chain.sample_rate_Hz
    kalman = KalmanFilter(behind, rate)
    output = kalman.run(record)
    check = innovations_check(output.innovations, kalman.innovation_variance,
                              skip=kalman.settle_samples)  # fmt: skip
    assert abs(check.normalised_variance - 1.0) < 3.0 * math.sqrt(2.0 / check.samples)
    assert check.autocorrelation_p_value > 0.01
    for m in (1, 30, 300):
        errors, predicted = kalman.prediction_errors(record, output, m)
        assert abs(prediction_check([errors], predicted, m / rate).pull) < 4.0, m
    # The same record through the filter of instantaneous samples: innovations 6 % too small.
    ideal = KalmanFilter(replace(behind, detection=None), rate)
    wrong = innovations_check(ideal.run(record).innovations, ideal.innovation_variance,
                              skip=ideal.settle_samples)  # fmt: skip
    assert wrong.normalised_variance < 0.96
    with pytest.raises(ValueError, match="sample_rate_Hz = 488281 is not the detection chain's"):
        KalmanFilter(behind, 125e6 / 256)


@pytest.mark.parametrize("decimation", [64, 1024, 4096])
def test_averaged_samples_hold_what_the_continuous_record_holds(decimation):
    r = readout(ENTANGLING)
    behind = replace(r, detection=DetectionChain.pdb450a(1e5, decimation, True))
    # Conditioned at the end of the light the last sample averaged: the boxcar keeps the
    # integral of the record over each interval, so little of what the continuous record says
    # about the spin is lost (0.24 % of ξ² at 30 kS/s), and never more than it says.
    xi2, continuous = squeezing_parameter(behind), squeezing_parameter(r)
    assert continuous <= xi2 < continuous * 1.005
    # The filtered state at the start of a sample's interval has seen one interval of future
    # light: it is the smaller one, by more at the longer interval.
    kalman = KalmanFilter(behind, behind.detection.sample_rate_Hz)
    assert total_spin_variance(kalman.filtered_covariance) <= total_spin_variance(
        kalman.predicted_covariance
    )


def test_plain_decimation_folds_the_detector_bandwidth_into_the_witness():
    # ACQ:AVG OFF: every D-th sample of the pole-limited white noise, uncorrelated from sample to
    # sample (e^{−ω_c T} = e^{−400}), each of the OU variance S ω_c/4. Independently: the ideal
    # readout whose white floor gives its samples that variance, S′ = S ω_c/(2 f_s).
    chain = DetectionChain.pdb450a(1e5, 64, False)
    r = readout(ENTANGLING)
    folded = replace(
        r, white_noise_psd=r.white_noise_psd * chain.pole_rate / (2 * chain.sample_rate_Hz)
    )
    behind = replace(r, detection=chain)
    assert squeezing_parameter(behind) == pytest.approx(squeezing_parameter(folded), rel=0.01)
    assert squeezing_parameter(behind) > squeezing_parameter(r) + 0.3
