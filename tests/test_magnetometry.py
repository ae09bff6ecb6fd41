"""Derived quantities from fitted spectra of seeded simulated records: γ, q, R_SE, n, SNR, δB."""

import math

import numpy as np
import pytest
from hotspin.analysis import constants as k
from hotspin.analysis import vapour
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import Estimate, ProbeGeometry, fit_spin_noise, initial_values
from hotspin.analysis.magnetometry import (
    density_from_spin_exchange,
    density_from_temperature,
    field_resolution_fT_per_rtHz,
    larmor_calibration,
    magnetic_sensitivity_fT_per_rtHz,
    spin_exchange_from_broadening,
    spin_noise_to_shot_noise,
    tone_response,
    weighted_line,
)
from hotspin.analysis.spectra import StreamingPSD
from hotspin.simulators.spin_noise import FastAngleNoise

SERF = ApparatusParameters(
    temperature_K=450.0, field_T=(100e-9, 0, 0), probe_power_W=5e-3, probe_detuning_Hz=60e9
)
SLOW = ApparatusParameters(
    temperature_K=365.0, field_T=(10e-6, 0, 0), probe_power_W=10e-3, probe_detuning_Hz=60e9
)


def fitted(apparatus, sample_rate_Hz, segment, duration_s, seed):
    """Return the model fit of a seeded simulated record, and the apparatus's truth."""
    d = derive(apparatus)
    generator = FastAngleNoise.from_derived(d, sample_rate_Hz, seed=seed)
    psd = StreamingPSD(segment, sample_rate_Hz)
    psd.add(generator.block(round(duration_s * sample_rate_Hz)))
    fit = fit_spin_noise(psd.spectrum(), ProbeGeometry.from_apparatus(d), initial_values(d))
    assert fit.flags == ()
    return fit, d


def field_sweep(apparatus, fields_T, sample_rate_Hz, segment, duration_s):
    fits, truths = [], []
    for i, b in enumerate(fields_T):
        fit, d = fitted(
            apparatus.with_changes(field_T=(b, 0.0, 0.0)), sample_rate_Hz, segment, duration_s, i
        )
        fits.append(fit)
        truths.append(d)
    return fits, truths


def test_gyromagnetic_ratio_and_slowing_down_factor_in_serf_and_slow_exchange():
    fields = np.array([50e-9, 100e-9, 150e-9, 200e-9])
    fits, truths = field_sweep(SERF, fields, 100e3, 4096, 1.0)
    larmor = np.array([f.larmor_frequency_Hz.value for f in fits])
    sigma = np.array([f.larmor_frequency_Hz.uncertainty for f in fits])
    serf = larmor_calibration(fields, larmor, sigma)
    # Truth: the same regression on the exact narrow-mode frequencies.
    exact = [d.model.eigenmodes(d.coupling_upper_rad, d.coupling_lower_rad)[0] for d in truths]
    expected = weighted_line(fields, np.array([m.frequency_Hz for m in exact]), sigma)
    gamma = serf.gyromagnetic_ratio
    assert abs(gamma.value - 2 * math.pi * expected.slope.value) < 3 * gamma.uncertainty
    # 4.659 Hz/nT with the nuclear moment: q = 28.025/4.659 = 6.015, not the textbook 6.
    serf_gamma = (5 * k.GAMMA_UPPER_rad_per_sT + k.GAMMA_LOWER_rad_per_sT) / 6
    assert gamma.value == pytest.approx(serf_gamma, rel=0.01)
    assert serf.slowing_down_factor.value == pytest.approx(6.015, abs=0.06)
    assert serf.line.p_value > 1e-3
    slow_fields = np.array([5e-6, 7.5e-6, 10e-6])
    fits, truths = field_sweep(SLOW, slow_fields, 200e3, 4096, 2.0)
    sigma = np.array([f.larmor_frequency_Hz.uncertainty for f in fits])
    slow = larmor_calibration(
        slow_fields, np.array([f.larmor_frequency_Hz.value for f in fits]), sigma
    )
    exact = [d.model.eigenmodes(d.coupling_upper_rad, d.coupling_lower_rad)[0] for d in truths]
    expected = weighted_line(slow_fields, np.array([m.frequency_Hz for m in exact]), sigma)
    gamma = slow.gyromagnetic_ratio
    assert abs(gamma.value - 2 * math.pi * expected.slope.value) < 3 * gamma.uncertainty
    # The F = 2 line: 6.996 Hz/nT, q = g_J/g_F ≈ 4.006 (2I+1 = 4 without the nuclear moment).
    assert gamma.value == pytest.approx(k.GAMMA_UPPER_rad_per_sT, rel=1e-3)
    assert slow.slowing_down_factor.value == pytest.approx(k.G_J / k.G_F_UPPER, rel=1e-3)


def test_spin_exchange_rate_from_the_quadratic_broadening_of_the_serf_line():
    fields = np.array([100e-9, 200e-9, 300e-9, 400e-9])
    fits, truths = field_sweep(SERF, fields, 200e3, 4096, 2.0)
    result = spin_exchange_from_broadening(
        np.array([f.larmor_frequency_Hz.value for f in fits]),
        np.array([f.modes[0].decay_rate.value for f in fits]),
        np.array([f.modes[0].decay_rate.uncertainty for f in fits]),
    )
    d = truths[0]
    rate = result.spin_exchange_rate
    assert abs(rate.value - d.spin_exchange_rate) < 3 * rate.uncertainty
    assert rate.uncertainty < 0.2 * rate.value
    zero_field = d.spin_destruction_rate / 6 + d.diffusion_rate
    assert abs(result.zero_field_decay_rate.value - zero_field) < 3 * (
        result.zero_field_decay_rate.uncertainty
    )


def test_density_from_temperature_and_from_the_fitted_spin_exchange_rate():
    n = density_from_temperature(450.0, 0.5)
    assert n.value == pytest.approx(vapour.rb_number_density_m3(450.0))
    # d ln n/dT = ln(10)·4040/T² − 1/T on the liquid branch of the vapour-pressure curve.
    slope = math.log(10) * 4040 / 450.0**2 - 1 / 450.0
    assert n.uncertainty == pytest.approx(n.value * slope * 0.5, rel=1e-6)
    assert density_from_temperature(450.0).uncertainty == 0.0
    fit, d = fitted(SERF, 200e3, 4096, 2.0, seed=7)
    from_rate = density_from_spin_exchange(fit.parameters["spin_exchange_rate"], 450.0)
    assert abs(from_rate.value - d.number_density_m3) < 3 * from_rate.uncertainty


def test_spin_noise_to_shot_noise_ratio_of_a_fit():
    fit, d = fitted(SERF, 200e3, 4096, 2.0, seed=8)
    ratio = spin_noise_to_shot_noise(fit)
    line = np.array([fit.larmor_frequency_Hz.value])
    truth = d.atomic_psd(line)[0] / d.white_noise_psd_rad2_per_Hz
    assert abs(ratio.value - truth) < 3 * ratio.uncertainty
    # 5 mW at 60 GHz: spin noise far above shot noise (the transit through the beam lowers it).
    assert ratio.value > 50
    # The field resolution of spin-noise magnetometry from the same fit.
    resolution = field_resolution_fT_per_rtHz(fit, 2.0)
    assert resolution == pytest.approx(
        fit.parameters["field_T"].uncertainty * math.sqrt(2.0) * 1e15
    )


def test_sensitivity_from_the_noise_spectrum_and_a_measured_tone_response():
    d = derive(SERF)
    rate, n = 100e3, 200_000
    noise = FastAngleNoise.from_derived(d, rate, seed=9).block(n)
    response, field_amplitude, tone = 3.0e4, 1e-11, 12_345.0  # rad/T, T, Hz (on the floor)
    t = np.arange(n) / rate
    record = noise + response * field_amplitude * np.cos(2 * math.pi * tone * t + 0.7)
    floor = d.total_psd(np.array([tone]))[0]
    measured = tone_response(record, rate, tone, field_amplitude, floor)
    assert abs(measured.value - response) < 3 * measured.uncertainty
    assert measured.uncertainty < 0.1 * response
    sensitivity, sigma = magnetic_sensitivity_fT_per_rtHz(floor, measured)
    assert sensitivity == pytest.approx(math.sqrt(floor) / measured.value * 1e15)
    assert sigma == pytest.approx(sensitivity * measured.uncertainty / measured.value)


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="entries"):
        weighted_line(np.arange(3.0), np.arange(4.0), np.ones(3))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        weighted_line(np.arange(3.0), np.arange(3.0), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        weighted_line(np.array([0.0, np.nan]), np.arange(2.0), np.ones(2))
    with pytest.raises(ValueError, match="two distinct"):
        weighted_line(np.ones(3), np.arange(3.0), np.ones(3))
    with pytest.raises(ValueError, match="does not grow"):
        spin_exchange_from_broadening(np.array([100.0, 200.0]), np.array([50.0, 40.0]), np.ones(2))
    with pytest.raises(ValueError, match="tone_frequency_Hz"):
        tone_response(np.zeros(100), 1e3, 600.0, 1e-12, 1e-16)
    with pytest.raises(ValueError, match="response"):
        magnetic_sensitivity_fT_per_rtHz(1e-16, Estimate(0.0, 0.0))


def test_higher_order_terms_give_the_zero_field_limits_across_the_serf_window():
    """Exact narrow-mode frequencies and decay rates up to ω = 0.08 R_SE (the sweeps' SERF
    window): a straight line gives q and R_SE biased by the line's speed-up and the ω⁴
    broadening; with the B³ and ω⁴ terms they are the zero-field values of the model."""
    d = derive(SERF)
    r_se = d.spin_exchange_rate
    fields = np.linspace(50e-9, 0.08 * r_se / (2 * math.pi * 4.66e9), 6)

    def narrow_mode(field_T):
        m = derive(SERF.with_changes(field_T=(field_T, 0.0, 0.0))).model
        return m.eigenmodes(d.coupling_upper_rad, d.coupling_lower_rad)[0]

    modes = [narrow_mode(b) for b in fields]
    larmor = np.array([m.frequency_Hz for m in modes])
    decay = np.array([m.decay_rate for m in modes])
    sigma = np.full(fields.size, 1e-3)
    limit = narrow_mode(1e-9).frequency_Hz / 1e-9  # Hz/T at vanishing field
    q_limit = k.GAMMA_ELECTRON_rad_per_sT / (2 * math.pi * limit)
    straight = larmor_calibration(fields, larmor, sigma).slowing_down_factor.value
    cubic = larmor_calibration(fields, larmor, sigma, cubic=True).slowing_down_factor.value
    assert straight < 0.98 * q_limit and cubic == pytest.approx(q_limit, rel=1e-3)
    quadratic = spin_exchange_from_broadening(larmor, decay, sigma)
    quartic = spin_exchange_from_broadening(larmor, decay, sigma, quartic=True)
    gamma0 = d.spin_destruction_rate / 6 + d.diffusion_rate  # docs/physics.md §3, SERF decay
    assert quadratic.spin_exchange_rate.value > 1.05 * r_se
    assert quartic.spin_exchange_rate.value == pytest.approx(r_se, rel=0.01)
    assert quartic.zero_field_decay_rate.value == pytest.approx(gamma0, rel=0.02)
