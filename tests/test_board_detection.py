"""The simulated Red Pitaya records through the detection chain: PDB450A pole and ACQ:AVG.

A deep-memory stream at decimation 1024 (122 kS/s), with the board's averaging on (its
default) and off, is turned into the angle and its Welch spectrum compared with the exact
expectation that `analysis.fits` uses for ``detection=DetectionChain.pdb450a(gain, 1024,
averaging)`` (`detected_atoms`, `detected_white_noise`, `welch_expectation`), plus the ADC's
rounding. Without averaging the detector's 4 MHz of white noise aliases into the band (a floor
≈ 100 × higher); with it the boxcar takes ≈ 10 % off the atoms near 50 kHz: the ideal
expectation (instantaneous samples, white floor) is shown to miss each.
"""

import numpy as np
import pytest
from helpers.streams import gap_free_angle
from hotspin.analysis.detection import DetectionChain, detected_atoms, detected_white_noise
from hotspin.analysis.spectra import welch_expectation
from hotspin.instruments.redpitaya import RedPitaya
from hotspin.simulators.cell_oven import OvenConfig
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.redpitaya import SimulatedRedPitaya
from scipy import signal as dsp

DECIMATION = 1024
SEGMENT = 1 << 12


def streamed_spectrum(averaging, seed):
    """Return (frequency, Welch PSD of θ, expected with the chain, ideal expected, segments)."""
    config = LabConfig(seed=seed, oven=OvenConfig(heat_capacity_J_per_K=1e9))  # holds 450 K
    lab = SimulatedLab(config, SimClock(manual=True))
    lab.oven.temperature_K = 450.0
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = config.polarimeter.hwp_zero_deg  # balanced
    board = SimulatedRedPitaya(lab)
    pitaya = RedPitaya(InProcessAdapter(board), sleep=lab.clock.sleep, now=lab.clock.now)
    pitaya.write(f"ACQ:AVG {'ON' if averaging else 'OFF'}")
    assert pitaya.ask("ACQ:AVG?").strip() == ("ON" if averaging else "OFF")
    detector = config.polarimeter
    streamed = gap_free_angle(pitaya, DECIMATION, 1 << 19, detector)
    volts, theta, fs = streamed.volts, streamed.theta_rad, streamed.sample_rate_Hz
    window = dsp.get_window("hann", SEGMENT)
    frequency, psd = dsp.welch(theta, fs, window=window)
    truth = lab.truth()
    chain = DetectionChain.pdb450a(detector.gain_diff_V_per_A, DECIMATION, averaging)
    assert fs == pytest.approx(chain.sample_rate_Hz)
    c_a, c_b = truth.coupling_upper_rad, truth.coupling_lower_rad
    # Rounding to codes: white, q²/12 per sample, q/(2 V_sum) · G_s/G_d in angle.
    step_rad = (
        streamed.volts_per_code[0]
        * detector.gain_sum_V_per_A
        / detector.gain_diff_V_per_A
        / (2 * volts[1].mean())
    )
    R = detected_atoms(truth.model, c_a, c_b, chain).autocovariance(SEGMENT)
    R += truth.white_noise_psd_rad2_per_Hz * detected_white_noise(chain).autocovariance(SEGMENT)
    R[0] += step_rad**2 / 12
    expected = welch_expectation(R, window, fs)
    ideal = (
        truth.model.sampled_psd(frequency, fs, c_a, c_b)
        + truth.white_noise_psd_rad2_per_Hz
        + step_rad**2 / 6 / fs
    )
    return frequency, psd, expected, ideal, theta.size // (SEGMENT // 2) - 1


@pytest.mark.parametrize("averaging", [True, False])
def test_stream_has_the_detected_welch_spectrum(averaging):
    frequency, psd, expected, ideal, segments = streamed_spectrum(averaging, seed=11)
    # Each bin's Welch estimate has a relative error ≈ 1/√(segments/1.9) (Hann, 50 % overlap);
    # a band of B bins averages that down by √B (neighbours are correlated: count half).
    for low, high in ((500.0, 5e3), (5e3, 2e4), (2e4, 5.5e4)):
        band = (frequency > low) & (frequency < high)
        error = 1.0 / np.sqrt(segments / 1.9 * band.sum() / 2)
        ratio = np.mean(psd[band] / expected[band])
        assert ratio == pytest.approx(1.0, abs=5 * error), (low, high, ratio, error)
    if averaging:  # the boxcar takes a visible part of the atoms off at high frequency
        band = (frequency > 2e4) & (frequency < 5.5e4)
        assert np.mean(psd[band] / ideal[band]) < 0.97
    else:  # the detector's band aliases into the samples
        assert np.mean(psd / ideal) > 10.0
