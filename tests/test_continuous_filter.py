"""The continuous Kalman filter of a sample stream (analysis/qnd.py): exact against the textbook
per-sample filter, across blocks, across gaps and missing samples, and its running whiteness."""

import math

import numpy as np
import pytest
from hotspin.analysis import qnd
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.qnd import (
    ContinuousKalmanFilter,
    ContinuousReadout,
    StateSpaceModel,
    innovations_check,
    squeezing_parameter,
)
from hotspin.simulators.spin_noise import ExactSpinNoise
from scipy import linalg

DIAGONAL = tuple(200e-9 / math.sqrt(3) * np.ones(3))
ENTANGLING = ApparatusParameters(
    temperature_K=450.0, field_T=DIAGONAL, probe_power_W=2e-3, probe_detuning_Hz=60e9
)
RATE = 500e3


def reference_filter(model: StateSpaceModel, rate: float, y: np.ndarray):
    """The textbook Kalman filter, one sample at a time, from the prior x = 0, P = Σ; a NaN
    sample is a time update without measurement. Returns (x⁺ per sample, innovations, P⁺)."""
    A, sigma, C = model.drift, model.stationary, model.observation
    Phi = linalg.expm(A / rate)
    W = sigma - Phi @ sigma @ Phi.T
    R = model.intensity * rate
    x, P = np.zeros(A.shape[0]), sigma.copy()
    states, innovations, covariances = [], [], []
    for sample in y:
        x, P = Phi @ x, Phi @ P @ Phi.T + W
        if np.isnan(sample):
            innovations.append(np.nan)
        else:
            S = C @ P @ C + R
            K = P @ C / S
            e = sample - C @ x
            x, P = x + K * e, P - np.outer(K, C @ P)
            innovations.append(e)
        states.append(x)
        covariances.append(P)
    return np.array(states), np.array(innovations), covariances


@pytest.fixture(scope="module")
def setup():
    d = derive(ENTANGLING)
    readout = ContinuousReadout.from_apparatus(d)
    spins = ExactSpinNoise.from_derived(d, RATE, seed=7)
    block = spins.block(60_000)  # the run-in from the prior takes ~45 000 samples
    record = (block.atomic_angle_rad + block.white_noise_rad) / 1.0
    return readout, record


def assert_matches_reference(out, reference_spin, innovations, gap, readout):
    """The filtered blocks' spin (ħ) and innovations equal the reference's (spin in units of
    √N, the gap's samples NaN there and absent from the blocks) to 1e-9 of their largest."""
    expected = np.delete(reference_spin, np.r_[gap], axis=0)
    expected *= math.sqrt(readout.model.atom_number)
    spin = np.concatenate([b.spin for b in out])
    assert np.abs(spin - expected).max() < 1e-9 * np.abs(expected).max()
    got = np.concatenate([b.innovations for b in out])
    want = np.delete(innovations, np.r_[gap])
    assert np.abs(got - want).max() < 1e-9 * np.abs(want).max()


def _split(record, sizes):
    out, start = [], 0
    for size in sizes:
        out.append((start, record[start : start + size]))
        start += size
    return out


@pytest.fixture(scope="module")
def reference(setup):
    """The per-sample reference filter over the whole seeded record (no gap)."""
    readout, record = setup
    model = ContinuousKalmanFilter.from_readout(readout, RATE).model
    return reference_filter(model, RATE, record)


def test_blocks_equal_the_per_sample_reference_filter(setup, reference):
    readout, record = setup
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE)
    blocks = list(kalman.run(_split(record, [1000, 7, 35_000, 14_000, 9_993])))
    states, innovations, _ = reference
    spin = np.concatenate([b.spin for b in blocks])
    expected = states @ kalman.projection.T * math.sqrt(readout.model.atom_number)
    scale = np.abs(expected).max()
    assert np.abs(spin - expected).max() < 1e-9 * scale
    got = np.concatenate([b.innovations for b in blocks])
    assert np.abs(got - innovations).max() < 1e-9 * np.abs(innovations).max()
    # The steady sections did the work after the run-in from the prior.
    run_in = sum(b.run_in_samples for b in blocks)
    assert 0 < run_in < record.size
    assert blocks[-1].run_in_samples == 0


def test_a_gap_between_blocks_equals_missing_samples_in_the_reference(setup):
    readout, record = setup
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE)
    gap = slice(15_000, 15_400)
    blocks = [(0, record[:15_000]), (15_400, record[15_400:])]  # samples 15 000–15 399 lost
    out = list(kalman.run(blocks))
    assert out[1].gaps == ((15_000, 400),)
    with_gap = record.copy()
    with_gap[gap] = np.nan
    states, innovations, covariances = reference_filter(kalman.model, RATE, with_gap)
    spin = np.concatenate([b.spin for b in out])
    expected = np.delete(states @ kalman.projection.T, np.r_[gap], axis=0)
    expected *= math.sqrt(readout.model.atom_number)
    assert np.abs(spin - expected).max() < 1e-9 * np.abs(expected).max()
    got = np.concatenate([b.innovations for b in out])
    assert np.abs(got - np.delete(innovations, np.r_[gap])).max() < 1e-9 * np.nanmax(
        np.abs(innovations)
    )
    # The gap is run in again with the time-varying gain, and ξ² rose in it: the reference's
    # covariance of the spin at the sample after the gap, given the samples before it, against
    # its steady value (one sample's prediction from the filtered covariance).
    assert out[1].run_in_samples > 0
    Phi = linalg.expm(kalman.model.drift / RATE)
    sigma = kalman.model.stationary
    W = sigma - Phi @ sigma @ Phi.T

    def ahead(covariance):
        return np.trace(kalman.projection @ (Phi @ covariance @ Phi.T + W) @ kalman.projection.T)

    rise = (ahead(covariances[gap.stop - 1]) - ahead(covariances[-1])) / kalman.bound_variance
    assert out[1].squeezing_parameter_peak - out[1].squeezing_parameter == pytest.approx(
        rise, rel=1e-6
    )


def test_a_gap_in_the_steady_state_is_run_in_exactly_and_within_the_estimate(setup):
    """A gap after the filter has reached its steady state: the samples after it are run in
    with the exact time-varying filter (chunked Gaussian conditioning) and equal the reference
    given the gap as missing samples; the run-in ends within the data-independent estimate
    and sooner than the run-in from the prior (a short gap loses little)."""
    readout, record = setup
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE)
    gap = slice(50_000, 50_200)
    out = list(kalman.run([(0, record[: gap.start]), (gap.stop, record[gap.stop :])]))
    assert out[0].run_in_samples < gap.start  # steady before the gap
    assert out[1].gaps == ((gap.start, gap.stop - gap.start),)
    with_gap = record.copy()
    with_gap[gap] = np.nan
    states, innovations, _ = reference_filter(kalman.model, RATE, with_gap)
    assert_matches_reference(out, states @ kalman.projection.T, innovations, gap, readout)
    assert 0 < out[1].run_in_samples < out[0].run_in_samples <= kalman.run_in_estimate


def test_the_hand_over_to_the_steady_filter_keeps_within_its_bound(setup, reference, monkeypatch):
    """With a loose hand-over tolerance (1e-6 of each output's RMS) the steady filter takes
    over early; its spin then differs from the exact reference, but by less than the bound."""
    readout, record = setup
    monkeypatch.setattr(qnd, "_RUN_IN_DEVIATION", 1e-6)
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE)
    out = kalman.filter_block(0, record)
    switch = out.run_in_samples
    assert 0 < switch < record.size
    states, _, _ = reference
    n = readout.model.atom_number
    deviation = (out.spin - states @ kalman.projection.T * math.sqrt(n))[switch:]
    estimate = kalman.projection @ (kalman.model.stationary - kalman.filtered_covariance)
    rms_scale = np.sqrt(np.diag(estimate @ kalman.projection.T) * n)  # of the spin estimate
    relative = np.sqrt(np.mean(deviation**2, axis=0)) / rms_scale
    assert np.all(relative < 1e-6)
    assert relative.max() > 1e-12  # the early hand-over is seen: the comparison can fail


def test_nan_samples_inside_a_block_are_missing_samples(setup):
    readout, record = setup
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE)
    y = record.copy()
    y[30_000:30_050] = np.nan
    out = kalman.filter_block(0, y)
    assert out.gaps == ((30_000, 50),)
    states, innovations, _ = reference_filter(kalman.model, RATE, y)
    expected = states @ kalman.projection.T * math.sqrt(readout.model.atom_number)
    assert np.abs(out.spin - expected).max() < 1e-9 * np.abs(expected).max()
    assert np.array_equal(np.isnan(out.innovations), np.isnan(innovations))


def test_steady_witness_and_running_whiteness_agree_with_the_record_analysis(setup):
    readout, record = setup
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE, whiteness_window=1000)
    out = list(kalman.run(_split(record, [10_000] * 6)))
    assert kalman.squeezing_parameter == pytest.approx(squeezing_parameter(readout), rel=1e-12)
    assert out[-1].squeezing_parameter == kalman.squeezing_parameter
    # The running test over all blocks is the whole-record test of qnd.innovations_check.
    u = np.concatenate([b.normalised_innovations for b in out])
    check = innovations_check(u, 1.0, lags=kalman.whiteness_lags)
    running = out[-1].whiteness
    assert running.samples == u.size
    assert running.normalised_variance == pytest.approx(check.normalised_variance, rel=1e-12)
    # The running sums take the mean out with the window's mean, the record test lag by lag:
    # they differ at O(lags/n).
    assert running.ljung_box == pytest.approx(check.ljung_box, rel=1e-3)
    assert running.p_value > 0.01  # the model is right: white innovations


def test_blocks_out_of_order_are_refused(setup):
    readout, record = setup
    kalman = ContinuousKalmanFilter.from_readout(readout, RATE)
    kalman.filter_block(0, record[:100])
    with pytest.raises(ValueError, match="first_index = 50"):
        kalman.filter_block(50, record[100:200])


def test_a_generic_two_dimensional_model():
    """Any linear Gaussian model: a damped oscillator (not a spin), observed in one quadrature."""
    gamma, omega = 2e3, 2 * math.pi * 5e3
    A = np.array([[-gamma, omega], [-omega, -gamma]])
    sigma = np.eye(2)
    Q = -(A @ sigma + sigma @ A.T)
    model = StateSpaceModel(A, Q, np.array([1.0, 0.0]), 1e-6, sigma)
    rate = 200e3
    rng = np.random.default_rng(3)
    y = rng.standard_normal(6000) * 0.3
    kalman = ContinuousKalmanFilter(model, rate)
    out = list(kalman.run(_split(y, [2500, 3500])))
    states, _, _ = reference_filter(model, rate, y)
    spin = np.concatenate([b.spin for b in out])
    assert np.abs(spin - states).max() < 1e-9 * np.abs(states).max()
    assert math.isnan(out[-1].squeezing_parameter)  # no witness without a bound


def test_a_model_whose_covariance_is_not_stationary_is_refused():
    A = -np.eye(2)
    with pytest.raises(ValueError, match="stationary"):
        StateSpaceModel(A, np.eye(2), np.array([1.0, 0.0]), 1.0, 3 * np.eye(2))


def test_a_block_model_of_two_copies_of_the_spin_model(setup):
    """A 6·M-dimensional block model (the spin model's modes twice, the copy decaying three
    times faster and seen half as strongly): the filter runs it as it runs one."""
    readout, record = setup
    A1, _, sigma1, C1 = readout.unit_matrices()
    A = linalg.block_diag(A1, 3.0 * A1)
    sigma = linalg.block_diag(sigma1, 0.5 * sigma1)
    Q = -(A @ sigma + sigma @ A.T)
    C = np.concatenate([C1, 0.5 * C1])
    model = StateSpaceModel(A, 0.5 * (Q + Q.T), C, readout.intensity, sigma)
    kalman = ContinuousKalmanFilter(model, RATE)
    assert kalman.projection.shape == (3, 2 * A1.shape[0])
    y = record[:20_000]
    out = list(kalman.run(_split(y, [5000, 15_000])))
    states, _, _ = reference_filter(model, RATE, y)
    expected = states @ kalman.projection.T
    spin = np.concatenate([b.spin for b in out])
    assert np.abs(spin - expected).max() < 1e-9 * np.abs(expected).max()


def reference_filter_with_cross_term(sampled, y: np.ndarray):
    """The textbook filter of s_{k+1} = Φs_k + w_k, y_k = Hs_k + u_k with Cov(w_k, u_k) = c,
    one sample at a time from the prior, a NaN sample a time update. Returns (ŝ_{k|k}, e_k)."""
    Phi, H, W = sampled.transition, sampled.output, sampled.process_noise
    c, R = sampled.cross, sampled.measurement_variance
    p, P = np.zeros(Phi.shape[0]), sampled.stationary.copy()  # ŝ_{k|k−1} and its covariance
    states, innovations = [], []
    for sample in y:
        if np.isnan(sample):
            states.append(p)
            innovations.append(np.nan)
            p, P = Phi @ p, Phi @ P @ Phi.T + W
            continue
        S = H @ P @ H + R
        e = sample - H @ p
        states.append(p + P @ H / S * e)
        innovations.append(e)
        gain = (Phi @ P @ H + c) / S
        p, P = Phi @ p + gain * e, Phi @ P @ Phi.T + W - S * np.outer(gain, gain)
    return np.array(states), np.array(innovations)


def test_behind_the_detection_chain_the_stream_filters_witness_is_the_readouts():
    from dataclasses import replace

    from hotspin.analysis.detection import DetectionChain
    from hotspin.analysis.qnd import entanglement_lifetime

    chain = DetectionChain.pdb450a(1e5, 64, False)  # plain decimation: ξ² far above the ideal
    readout = replace(ContinuousReadout.from_apparatus(derive(ENTANGLING)), detection=chain)
    kalman = ContinuousKalmanFilter.from_readout(readout, chain.sample_rate_Hz)
    assert kalman.squeezing_parameter == pytest.approx(squeezing_parameter(readout), rel=1e-12)
    assert kalman.entanglement_lifetime_s == entanglement_lifetime(readout)
    ideal = replace(readout, detection=None)
    assert kalman.squeezing_parameter > squeezing_parameter(ideal) + 0.3


def test_behind_the_detection_chain_the_stream_filter_is_the_textbook_filter_with_cross_term():
    # The board's boxcar correlates each sample's noise with the next state's: the stream filter
    # carries the sample noise in its state (`SampledReadout.decorrelated`) and equals, across
    # blocks and a gap, the per-sample filter that has the cross term; its innovations are white
    # with the predicted variance on a record simulated behind the same chain.
    from dataclasses import replace

    from hotspin.analysis.detection import DetectionChain
    from hotspin.simulators.spin_noise import DetectedAngleNoise

    chain = DetectionChain.pdb450a(1e5, 1024, True)
    derived = derive(ENTANGLING)
    readout = replace(ContinuousReadout.from_apparatus(derived), detection=chain)
    rate = chain.sample_rate_Hz
    record = DetectedAngleNoise.from_derived(derived, chain, seed=3).block(60_000)
    kalman = ContinuousKalmanFilter.from_readout(readout, rate)
    gap = slice(20_000, 20_300)
    out = list(
        kalman.run([(0, record[:7]), (7, record[7 : gap.start]), (gap.stop, record[gap.stop :])])
    )
    assert out[2].gaps == ((gap.start, gap.stop - gap.start),)
    with_gap = record.copy()
    with_gap[gap] = np.nan
    sampled = readout.sampled(rate)
    states, innovations = reference_filter_with_cross_term(sampled, with_gap)
    spins = np.zeros((3, states.shape[1]))
    spins[:, sampled.atoms] = qnd.spin_projection(sampled.atoms.size)
    assert_matches_reference(out, states @ spins.T, innovations, gap, readout)
    settled = np.concatenate([b.normalised_innovations for b in out])[kalman.run_in_estimate :]
    check = innovations_check(settled, 1.0)
    assert abs(check.normalised_variance - 1.0) < 3.0 * math.sqrt(2.0 / check.samples)
    assert check.autocorrelation_p_value > 0.01
    # The witness is the readout's behind the chain.
    assert kalman.squeezing_parameter == pytest.approx(squeezing_parameter(readout), rel=1e-12)


def test_a_live_filter_starts_steady_and_leaves_the_transients_out():
    # A live view's filter (exact_run_in=False): the steady filter at once, from the prior and
    # after a gap from the propagated state (no run-in: its CPU), its normalised innovations
    # left out of the whiteness test while the start-up error decays.
    d = derive(ENTANGLING)
    readout = ContinuousReadout.from_apparatus(d)
    block = ExactSpinNoise.from_derived(d, RATE, seed=11).block(160_000)
    record = block.atomic_angle_rad + block.white_noise_rad
    gap = slice(60_000, 60_200)
    blocks = [(0, record[: gap.start]), (gap.stop, record[gap.stop :])]
    exact = list(ContinuousKalmanFilter.from_readout(readout, RATE).run(blocks))
    live = ContinuousKalmanFilter.from_readout(readout, RATE, exact_run_in=False)
    quick = list(live.run(blocks))
    assert exact[0].run_in_samples > 0 and exact[1].run_in_samples > 0
    assert quick[0].run_in_samples == quick[1].run_in_samples == 0
    settle = live.settle_samples
    assert 0 < settle < record.size - gap.stop
    for fast, right in zip(quick, exact, strict=True):
        u = fast.normalised_innovations
        assert np.all(np.isnan(u[:settle])) and np.all(np.isfinite(u[settle:]))
        # Its spin joins the exact filter's as the start-up error decays (to 1e-3 of it).
        difference = np.abs(fast.spin - right.spin).max(axis=1)
        assert difference[0] > 1e-6 * np.abs(right.spin).max()  # the comparison can fail
        assert difference[settle:].max() < 1e-3 * difference[:100].max()
    assert quick[1].whiteness is not None and quick[1].whiteness.p_value > 0.01
