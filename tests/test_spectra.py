"""Calibration and the streaming Welch PSD: welch's numbers, Parseval, statistics, bad input."""

import math

import numpy as np
import pytest
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import angle_autocovariance
from hotspin.analysis.spectra import (
    Spectrum,
    StreamingPSD,
    angle_from_difference_and_sum,
    angle_scale_from_gain,
    welch_expectation,
    welch_statistics,
)
from hotspin.simulators.polarimeter_optics import BalancedPolarimeter, PolarimeterConfig
from hotspin.simulators.spin_noise import FastAngleNoise
from scipy import signal

FS = 50e3
DERIVED = derive(ApparatusParameters(temperature_K=410.0, field_T=(1e-6, 0.0, 0.0)))


def angle_record(n: int, seed: int, sample_rate_Hz: float = FS) -> np.ndarray:
    """Return a seeded record of the observed angle (atoms + light noise) in rad."""
    d = DERIVED
    generator = FastAngleNoise.from_derived(d, sample_rate_Hz, seed=seed)
    return generator.block(n)


def add_in_random_blocks(psd: StreamingPSD, x: np.ndarray, seed: int) -> None:
    """Feed ``x`` in blocks of random lengths, from 1 sample to several segments."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < x.size:
        size = int(rng.integers(1, 3 * psd.segment_length))
        psd.add(x[start : start + size])
        start += size


@pytest.mark.parametrize(
    ("segment", "overlap", "window"),
    [
        (1024, 0.5, "hann"),
        (1000, 0.3, "hamming"),
        (256, 0.75, ("kaiser", 8.0)),
        (512, 0.0, "boxcar"),
    ],
)
def test_streaming_blocks_of_any_length_equal_scipy_welch(segment, overlap, window):
    x = angle_record(200_003, seed=1).astype(np.float32)
    psd = StreamingPSD(segment, FS, window=window, overlap=overlap)
    add_in_random_blocks(psd, x, seed=2)
    hop = segment - round(overlap * segment)
    used = (psd.segments - 1) * hop + segment
    _, reference = signal.welch(
        x[:used].astype(np.float64), FS, window=window, nperseg=segment, noverlap=segment - hop
    )
    # The DC bin after mean removal is rounding noise in both.
    np.testing.assert_allclose(psd.mean(), reference, rtol=1e-6, atol=1e-12 * reference.max())
    assert psd.samples == x.size


def test_raw_int16_counts_are_scaled_per_segment_like_welch_on_volts():
    volts_per_count = 2.0 / 2**15  # a ±1 V digitiser range
    x = angle_record(100_000, seed=3)
    counts = np.round(x / x.std() * 3000).astype(np.int16)
    psd = StreamingPSD(2048, FS, scale=volts_per_count)
    add_in_random_blocks(psd, counts, seed=4)
    used = (psd.segments - 1) * 1024 + 2048
    _, reference = signal.welch(counts[:used] * volts_per_count, FS, nperseg=2048)
    np.testing.assert_allclose(psd.mean(), reference, rtol=1e-6)
    assert psd.clipped_samples == 0


def test_parseval_the_psd_integrates_to_the_variance():
    x = angle_record(400_000, seed=5)
    psd = StreamingPSD(4096, FS, window="boxcar", overlap=0.0, remove_mean=False)
    psd.add(x)
    spectrum = psd.spectrum()
    used = x[: psd.segments * 4096]
    assert spectrum.variance_rad2() == pytest.approx(float(np.mean(used**2)), rel=1e-10)
    # With a taper, Parseval holds in expectation: the exact mean integrates to R(0).
    R = angle_autocovariance(
        DERIVED.model, DERIVED.coupling_upper_rad, DERIVED.coupling_lower_rad, 4096, FS
    )
    expected = welch_expectation(R, signal.get_window("hann", 4096), FS)
    assert np.sum(expected) * FS / 4096 == pytest.approx(R[0], rel=1e-12)


def test_exact_expectation_equals_the_double_sum_over_the_window():
    L = 64
    R = angle_autocovariance(
        DERIVED.model, DERIVED.coupling_upper_rad, DERIVED.coupling_lower_rad, L, FS
    )
    w = signal.get_window("hann", L)
    n = np.arange(L)
    toeplitz = R[np.abs(n[:, None] - n[None, :])]
    dft = np.exp(-2j * math.pi * np.outer(np.arange(L // 2 + 1), n) / L) * w
    power = np.einsum("kn,nm,km->k", dft, toeplitz, dft.conj()).real
    direct = 2 * power / (FS * (w @ w))
    direct[[0, -1]] /= 2
    np.testing.assert_allclose(welch_expectation(R, w, FS), direct, rtol=1e-12)


def test_averaged_record_agrees_with_the_exact_expectation_within_its_standard_errors():
    psd = StreamingPSD(512, FS)
    psd.add(angle_record(1_000_000, seed=6))
    spectrum = psd.spectrum()
    R = angle_autocovariance(
        DERIVED.model, DERIVED.coupling_upper_rad, DERIVED.coupling_lower_rad, 512, FS
    )
    expected = spectrum.expectation(
        R + DERIVED.white_noise_psd_rad2_per_Hz * FS / 2 * (np.arange(512) == 0)
    )
    pulls = ((spectrum.psd - expected) / spectrum.standard_error)[2:-1]
    assert abs(pulls.mean()) < 4 / math.sqrt(pulls.size / 3)  # neighbours are correlated
    assert pulls.std() == pytest.approx(1.0, abs=0.1)


def test_effective_averages_and_bin_correlation_describe_white_noise_scatter():
    rng = np.random.default_rng(7)
    psd = StreamingPSD(4096, 1.0)
    psd.add(rng.standard_normal(4_000_000))
    spectrum = psd.spectrum()
    relative = spectrum.psd[2:-2] / 2.0 - 1.0  # white, unit variance: PSD 2 per unit rate
    assert relative.var() == pytest.approx(1 / spectrum.effective_averages, rel=0.05)
    neighbour = np.corrcoef(relative[:-1], relative[1:])[0, 1]
    assert neighbour == pytest.approx(spectrum.bin_correlation[1], abs=0.06)
    # The per-bin standard errors carry the overlap correction, so they agree with 1/√K_eff.
    assert np.mean(spectrum.standard_error[2:-2] / spectrum.psd[2:-2]) == pytest.approx(
        1 / math.sqrt(spectrum.effective_averages), rel=0.03
    )


def test_welch_statistics_of_hann_with_half_overlap():
    w = signal.get_window("hann", 1024)
    K = 10_000
    c0, correlation, _ = welch_statistics(w, 512, K)
    # Overlapping halves: Σ_{n<L/2} sin²cos² / Σ sin⁴ = 1/6 (Harris 1978), squared, each side.
    assert c0 == pytest.approx(1 + 2 * (1 / 6) ** 2 * (1 - 1 / K), rel=1e-9)
    # Neighbouring bins: the DFT of w² one bin off is −2/3 of its sum within a segment, and
    # 4/(9π) of it between overlapping halves: C(1) = (2/3)² + 2 (4/(9π))².
    assert correlation[0] == 1.0
    assert correlation[1] == pytest.approx((4 / 9 + 2 * (4 / (9 * math.pi)) ** 2) / c0, rel=1e-3)


def test_reset_starts_a_new_average():
    x = angle_record(50_000, seed=8)
    psd = StreamingPSD(1024, FS)
    psd.add(x[:30_000])
    psd.reset()
    psd.add(x[30_000:])
    fresh = StreamingPSD(1024, FS)
    fresh.add(x[30_000:])
    np.testing.assert_array_equal(psd.mean(), fresh.mean())
    assert psd.samples == 20_000


def test_bad_blocks_are_refused_and_leave_the_average_untouched():
    psd = StreamingPSD(256, FS)
    x = angle_record(10_000, seed=9)
    psd.add(x)
    before = psd.mean().copy()
    for bad in (np.array([0.0, np.nan, 1.0]), np.array([np.inf] * 300), np.array([-np.inf])):
        with pytest.raises(ValueError, match="NaN or infinite"):
            psd.add(bad)
    with pytest.raises(ValueError, match="empty"):
        psd.add(np.array([]))
    with pytest.raises(ValueError, match="one-dimensional"):
        psd.add(np.zeros((2, 300)))
    with pytest.raises(ValueError, match="real floats"):
        psd.add(np.zeros(300, dtype=complex))
    np.testing.assert_array_equal(psd.mean(), before)
    assert psd.samples == x.size


def test_no_segment_yet_is_an_error_not_a_number():
    psd = StreamingPSD(1024, FS)
    psd.add(np.zeros(100))
    with pytest.raises(ValueError, match="no complete segment"):
        psd.mean()


def test_clipped_samples_are_counted():
    x = angle_record(20_000, seed=10)
    counts = np.clip(np.round(x / x.std() * 20000), -32768, 32767).astype(np.int16)
    rails = int(np.count_nonzero((counts == -32768) | (counts == 32767)))
    assert rails > 0
    psd = StreamingPSD(1024, FS)
    psd.add(counts)
    assert psd.spectrum().clipped_samples == rails
    volts = StreamingPSD(1024, FS, clip_limits=(-0.5, 0.5))
    volts.add(np.clip(x / x.std() * 0.2, -0.5, 0.5))
    assert volts.clipped_samples == int(np.count_nonzero(np.abs(x / x.std() * 0.2) >= 0.5))


def test_spectrum_refuses_inconsistent_input():
    f = np.linspace(0, 100, 11)
    with pytest.raises(ValueError, match="lengths must match"):
        Spectrum(f, np.ones(10))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Spectrum(f, np.where(f > 50, np.nan, 1.0))
    with pytest.raises(ValueError, match="empty"):
        Spectrum(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="standard_error"):
        Spectrum(f, np.ones(11), standard_error=np.ones(3))
    with pytest.raises(ValueError, match="rfft bins"):
        Spectrum(f, np.ones(11), sample_rate_Hz=200.0, window=np.ones(16))


def test_angle_from_difference_and_sum_recovers_the_rotation():
    theta = angle_record(50_000, seed=11)
    config = PolarimeterConfig()
    detector = BalancedPolarimeter(config)
    power = DERIVED.detected_power_W
    v_diff = detector.difference_voltage_at_balance(theta, power)
    v_sum = detector.sum_voltage(theta.size, power, FS, np.random.default_rng(12))
    angle = angle_from_difference_and_sum(
        v_diff, v_sum, config.gain_diff_V_per_A, config.gain_sum_V_per_A
    )
    # float32 voltages and the sum channel's own shot noise: ≲ 1e-4 relative.
    np.testing.assert_allclose(angle, theta, rtol=0, atol=2e-4 * np.abs(theta).max())
    scale = angle_scale_from_gain(
        config.gain_diff_V_per_A, config.responsivity_A_per_W, DERIVED.detected_power_W
    )
    np.testing.assert_allclose(v_diff * scale, theta, rtol=0, atol=1e-4 * np.abs(theta).max())


def test_calibration_refuses_mismatched_or_unusable_traces():
    with pytest.raises(ValueError, match="lengths must match"):
        angle_from_difference_and_sum(np.zeros(10), np.ones(9), 1e5, 1e3)
    with pytest.raises(ValueError, match="empty"):
        angle_from_difference_and_sum(np.zeros(0), np.ones(0), 1e5, 1e3)
    with pytest.raises(ValueError, match="NaN"):
        angle_from_difference_and_sum(np.array([0.0, np.nan]), np.ones(2), 1e5, 1e3)
    with pytest.raises(ValueError, match="no light"):
        angle_from_difference_and_sum(np.zeros(2), np.array([1.0, 0.0]), 1e5, 1e3)
    with pytest.raises(ValueError, match="gain_diff_V_per_A"):
        angle_scale_from_gain(-1.0, 0.5, 1e-3)


def test_end_record_keeps_segments_inside_each_record():
    rng = np.random.default_rng(3)
    first, second = rng.standard_normal(3000), rng.standard_normal(2500)
    joined = StreamingPSD(1024, 1e3, overlap=0.5)
    joined.add(first)
    joined.add(second)
    separate = StreamingPSD(1024, 1e3, overlap=0.5)
    separate.add(first)
    separate.end_record()
    separate.add(second)
    # 3000 and 2500 samples hold 4 and 3 half-overlapping segments of 1024; joined, 5500 hold 9.
    assert separate.segments == 4 + 3
    assert joined.segments == 9
    expected = (4 * _welch_mean(first) + 3 * _welch_mean(second)) / 7
    np.testing.assert_allclose(separate.mean(), expected, rtol=1e-9)


def _welch_mean(x):
    return signal.welch(x, 1e3, nperseg=1024, noverlap=512)[1]
