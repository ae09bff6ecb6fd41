"""The lab's angle generator (`AngleNoise`) against the model's exact covariance, across hand-overs.

The reference is computed here independently of the generator: the block model (A, Σ, C) of
`SpinModel.block_model`, scipy's expm at each sample interval, and plain covariance propagation
of the 6M-dimensional state through the record, the change of model and the gap. An ensemble of
independent generators gives the empirical covariance of a window of samples around the event;
every entry must agree within 5 of its standard errors (√((C_ii C_jj + C_ij²)/n)).
"""

import math

import numpy as np
import pytest
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.simulators.spin_noise import _TABLE_SAMPLES, MODEL_TOLERANCE, AngleNoise
from scipy.linalg import expm
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small matrices on one BLAS thread (OpenBLAS's threads stall them on a busy machine)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# Hz: the one-step prediction error is then a small part of the angle's variance, so a hand-over
# that misplaces the state shows (a 20 kHz record is too unpredictable to tell).
RATE = 500e3
SLOW_RATE = 20e3  # Hz: for the long-lag checks, where the correlation time spans ~300 samples
BEFORE, AFTER = 25, 25  # samples of the window on each side of the event
REALISATIONS = 1000


def apparatus(field_nT=(500.0, 0.0, 0.0)):
    """Return (model, c_a, c_b) of the default apparatus at a field."""
    d = derive(ApparatusParameters(field_T=tuple(1e-9 * np.asarray(field_nT))))
    return d.model, d.coupling_upper_rad, d.coupling_lower_rad


def exact_covariance(segments, rate=RATE):
    """Return the covariance of θ over consecutive samples of ``segments``.

    segments: [(model, c_a, c_b, samples, gap_before_s)], the first in its stationary state.
    The state reaches a new segment's first sample instant under the previous model, then the
    gap passes under the new one (a model is in force from the sample after it is set).
    """
    states, maps, observations = [], [], []
    covariance, drift = None, None
    for model, c_a, c_b, samples, gap in segments:
        A, _, S, C = model.block_model(c_a, c_b)
        for k in range(samples):
            if covariance is None:
                covariance, step = S, np.eye(S.shape[0])
            else:
                step = expm(A * gap) @ expm(drift / rate) if k == 0 else expm(A / rate)
                # Φ P Φᵀ + Σ − Φ Σ Φᵀ: the same stationary Σ (the atom number is unchanged).
                covariance = step @ (covariance - S) @ step.T + S
            states.append(covariance)
            maps.append(step)
            observations.append(C)
            drift = A
    n = len(states)
    result = np.empty((n, n))
    for i in range(n):
        cross = states[i]  # Cov(x_j, x_i), j ≥ i
        for j in range(i, n):
            if j > i:
                cross = maps[j] @ cross
            result[i, j] = result[j, i] = observations[j] @ cross @ observations[i]
    return result


def ensemble(run, count=REALISATIONS):
    """Return the (count, window) samples of ``run(generator)`` over independent seeds."""
    return np.array([run(AngleNoise(np.random.default_rng(seed))) for seed in range(count)])


def assert_covariance(samples, expected):
    """The samples have the law N(0, expected): entry by entry, and as a whole.

    Entry by entry: the empirical covariance within 5 standard errors. As a whole: whitened by
    the expected covariance each realisation's |z|² is χ² with as many degrees of freedom as
    samples; their mean must be within 5 standard errors (√(2 d/n)) of d.
    """
    n, size = samples.shape
    empirical = samples.T @ samples / n  # zero mean by construction
    d = np.diag(expected)
    error = np.sqrt((np.outer(d, d) + expected**2) / n)
    z = np.abs(empirical - expected) / error
    assert z.max() < 5.0, f"covariance entry off by {z.max():.1f} standard errors"
    whitened = np.linalg.solve(np.linalg.cholesky(expected), samples.T)
    chi2 = float(np.mean(np.sum(whitened**2, axis=0)))
    pull = (chi2 - size) / math.sqrt(2.0 * size / n)
    assert abs(pull) < 5.0, f"mean χ² {chi2:.2f} for {size}: {pull:.1f} standard errors"


def test_model_change_through_the_exact_recursion():
    """A large change (field 500 nT along x → 300 nT along y) goes exact and joins without seam."""
    old, new = apparatus(), apparatus((0.0, 300.0, 0.0))
    lead = 2000  # samples before the window: the stationary start is already tested by it

    def run(generator):
        generator.set_model(*old, RATE)
        generator.block(lead)
        first = generator.block(BEFORE)
        generator.set_model(*new, RATE)
        assert not generator.fast  # the change is too large for a direct hand-over
        return np.concatenate([first, generator.block(AFTER)])

    expected = exact_covariance([(*old, BEFORE, 0.0), (*new, AFTER, 0.0)])
    assert_covariance(ensemble(run), expected)


def test_return_to_the_fast_form_without_seam():
    """The fast form takes over again once the predictor has settled: no seam at that point."""
    old, new = apparatus(), apparatus((0.0, 300.0, 0.0))
    probe = AngleNoise(np.random.default_rng(0))
    probe.set_model(*old, SLOW_RATE)
    probe.block(100)
    probe.set_model(*new, SLOW_RATE)
    steps = 0
    while not probe.fast:  # the excess decays the same way in every realisation
        probe.block(_TABLE_SAMPLES)
        steps += 1
        assert steps < 100, "the exact recursion never handed back"
    settle = steps * _TABLE_SAMPLES

    def run(generator):
        generator.set_model(*old, SLOW_RATE)
        generator.block(100)
        generator.set_model(*new, SLOW_RATE)
        generator.block(settle - BEFORE)
        first = generator.block(BEFORE)
        assert generator.fast
        return np.concatenate([first, generator.block(AFTER)])

    # Long after the change the new model is stationary: the window is its stationary law.
    expected = exact_covariance([(*new, BEFORE + AFTER, 0.0)], SLOW_RATE)
    assert_covariance(ensemble(run, REALISATIONS // 2), expected)  # each runs ~0.1 s exactly


def test_a_change_below_the_model_tolerance_keeps_the_model_and_a_gap_stays_fast():
    """A coil-noise-sized field change leaves the model in force; a gap hands over directly;
    both without seam. A change just above the tolerance puts the new model in force."""
    old = apparatus()
    nudged = apparatus((500.0 + 2e-4, -1e-4, 5e-5))  # 0.2 pT: 2 nA through 100 nT/mA
    gap = 3e-3

    def run(generator):
        generator.set_model(*old, RATE)
        generator.block(500)
        first = generator.block(BEFORE)
        in_force = generator._model
        generator.set_model(*nudged, RATE)
        assert generator.fast and generator._model is in_force
        middle = generator.block(AFTER)
        generator.advance(gap)
        assert generator.fast
        return np.concatenate([first, middle, generator.block(AFTER)])

    expected = exact_covariance([(*old, BEFORE, 0.0), (*old, AFTER, 0.0), (*old, AFTER, gap)])
    assert_covariance(ensemble(run), expected)
    generator = AngleNoise(np.random.default_rng(1))
    generator.set_model(*old, RATE)
    in_force = generator._model
    step = 1.5 * MODEL_TOLERANCE * 500.0  # nT along the field
    generator.set_model(*apparatus((500.0 + step, 0.0, 0.0)), RATE)
    assert generator._model is not in_force


def test_a_wrong_hand_over_is_caught():
    """The check has power: carrying ŝ without its spread after a gap shows as a seam."""
    old = apparatus()

    def run(generator):
        generator.set_model(*old, RATE)
        generator.block(500)
        first = generator.block(BEFORE)
        Phi, _ = generator._model.stationary_transition(0.05)
        generator._estimate = Phi @ generator._estimate  # the mean alone, no added spread
        return np.concatenate([first, generator.block(AFTER)])

    expected = exact_covariance([(*old, BEFORE, 0.0), (*old, AFTER, 0.05)])
    with pytest.raises(AssertionError, match="standard errors"):
        assert_covariance(ensemble(run), expected)


def test_long_record_matches_the_model_autocovariance():
    """One long fast record: its autocovariance at lags 0 … 400 against C Φᵏ Σ Cᵀ."""
    model, c_a, c_b = apparatus()
    generator = AngleNoise(np.random.default_rng(5))
    generator.set_model(model, c_a, c_b, SLOW_RATE)
    n = 1 << 21
    theta = generator.block(n)
    spectrum = np.fft.rfft(theta, 2 * n)
    measured = np.fft.irfft(np.abs(spectrum) ** 2)[:401] / (n - np.arange(401))
    A, _, S, C = model.block_model(c_a, c_b)
    step = expm(A / SLOW_RATE)
    column, expected = S @ C, []
    for _ in range(401):
        expected.append(C @ column)
        column = step @ column
    expected = np.array(expected)
    # Standard error of an autocovariance estimate: √(Σ_τ R_τ² · 2 / n) (Bartlett), bounded.
    tail = np.concatenate([expected, [C @ np.linalg.matrix_power(step, k) @ S @ C for k in (800,)]])
    error = math.sqrt(2.0 * float(np.sum(tail**2)) * 3.0 / n)
    assert np.abs(measured - expected).max() < 5 * error
