"""Spin-noise model fit and single-Lorentzian fit on seeded records (docs/physics.md §3)."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import (
    Estimate,
    ProbeGeometry,
    exp2x2,
    fit_lorentzian,
    fit_spin_noise,
    initial_values,
)
from hotspin.analysis.spectra import Spectrum, StreamingPSD
from hotspin.simulators.spin_noise import FastAngleNoise

# (apparatus, sample rate, segment length, record length): one per regime, chosen so that every
# fitted parameter is determined to ≲ 15 % by a short record.
SLOW = (
    ApparatusParameters(
        temperature_K=365.0, field_T=(10e-6, 0, 0), probe_power_W=10e-3, probe_detuning_Hz=60e9
    ),
    200e3,
    4096,
    5.0,
)  # R_SE/ω ≈ 0.006: two lines, F=2 at 6.996 Hz/nT and F=1 at 7.024 Hz/nT
CROSSOVER = (
    ApparatusParameters(
        temperature_K=410.0, field_T=(1e-6, 0, 0), probe_power_W=10e-3, probe_detuning_Hz=30e9
    ),
    50e3,
    512,
    2.0,
)  # R_SE/ω ≈ 1
SERF = (
    ApparatusParameters(
        temperature_K=450.0, field_T=(100e-9, 0, 0), probe_power_W=5e-3, probe_detuning_Hz=60e9
    ),
    200e3,
    4096,
    2.0,
)  # R_SE/ω ≈ 100
FITTED = (
    "field_T",
    "spin_exchange_rate",
    "spin_destruction_rate",
    "atom_number",
    "white_noise_psd",
)


def record_spectrum(apparatus, sample_rate_Hz, segment, duration_s, seed):
    """Return the Welch spectrum of a seeded simulated record, and the apparatus's truth."""
    d = derive(apparatus)
    generator = FastAngleNoise.from_derived(d, sample_rate_Hz, seed=seed)
    psd = StreamingPSD(segment, sample_rate_Hz)
    psd.add(generator.block(round(duration_s * sample_rate_Hz)))
    return psd.spectrum(), d


def pulls(fit, truth):
    return {n: (fit.parameters[n].value - truth[n]) / fit.parameters[n].uncertainty for n in FITTED}


@pytest.mark.parametrize("regime", [SLOW, CROSSOVER, SERF], ids=["slow", "crossover", "serf"])
def test_fit_recovers_the_parameters_within_its_uncertainties(regime):
    spectrum, d = record_spectrum(*regime, seed=1)
    truth = initial_values(d)
    # Start 20 % off everywhere (the field puts the line tens of linewidths away).
    fit = fit_spin_noise(
        spectrum, ProbeGeometry.from_apparatus(d), {n: 1.2 * v for n, v in truth.items()}
    )
    assert fit.flags == ()
    for name, pull in pulls(fit, truth).items():
        assert abs(pull) < 3, f"{name}: {fit.parameters[name]} vs truth {truth[name]:.6g}"
        if regime == SLOW and name in ("spin_exchange_rate", "spin_destruction_rate"):
            # Transit through the beam (τ_D ≈ 1 ms) broadens both lines as much as the rates.
            continue
        assert fit.parameters[name].uncertainty < 0.35 * fit.parameters[name].value
    assert fit.p_value > 1e-3
    assert fit.predicted.shape == fit.frequency_Hz.shape
    # The Larmor line is the model's narrowest precessing mode, with propagated uncertainties.
    mode = next(m for m in d.model.eigenmodes(d.coupling_upper_rad, d.coupling_lower_rad))
    assert abs(fit.larmor_frequency_Hz.value - mode.frequency_Hz) < 3 * (
        fit.larmor_frequency_Hz.uncertainty
    )
    assert abs(fit.linewidth_hwhm_Hz.value - mode.hwhm_Hz) < 3 * fit.linewidth_hwhm_Hz.uncertainty


@pytest.mark.parametrize("regime", [CROSSOVER, SERF], ids=["crossover", "serf"])
def test_pulls_over_fifty_seeds_have_unit_width_and_no_bias(regime):
    seeds = 50
    table = {n: [] for n in FITTED}
    p_values = []
    for seed in range(100, 100 + seeds):
        spectrum, d = record_spectrum(*regime, seed=seed)
        truth = initial_values(d)
        fit = fit_spin_noise(spectrum, ProbeGeometry.from_apparatus(d), truth)
        for name, pull in pulls(fit, truth).items():
            table[name].append(pull)
        p_values.append(fit.p_value)
    for name, values in table.items():
        values = np.array(values)
        # Sample mean ± 1/√50 = 0.14, sample width ± 0.10: bounds at about three sigma.
        assert abs(values.mean()) < 0.45, name
        assert 0.7 < values.std(ddof=1) < 1.3, name
    # The goodness of fit is calibrated too: p-values spread evenly over [0, 1].
    assert 0.35 < np.mean(p_values) < 0.65


def test_in_serf_one_lorentzian_undercounts_the_atoms_and_the_model_does_not():
    # Far detuned (c_a ≈ c_b: θ ∝ electron spin) and sampled at 10 kHz, so the broad component
    # (≈ 0.75 R_SE ≈ 2π·37 kHz) is flat across the band and looks like extra shot noise.
    # The 4/9 is the wall mode's: atoms held in the beam (transit would reshape the line).
    apparatus = ApparatusParameters(
        temperature_K=450.0,
        field_T=(50e-9, 0, 0),
        probe_power_W=5e-3,
        probe_detuning_Hz=300e9,
        beam_transit=False,
    )
    spectrum, d = record_spectrum(apparatus, 10e3, 4096, 20.0, seed=2)
    geometry = ProbeGeometry.from_apparatus(d)
    narrow = d.model.eigenmodes(d.coupling_upper_rad, d.coupling_lower_rad)[0]
    assert narrow.fraction == pytest.approx(4 / 9, rel=0.03)  # docs/physics.md §3
    lorentzian = fit_lorentzian(spectrum, geometry)
    undercount = lorentzian.implied_atom_number.value / d.atom_number
    sigma = lorentzian.implied_atom_number.uncertainty / d.atom_number
    assert abs(undercount - narrow.fraction) < 3 * sigma
    # Its floor has swallowed the broad component: well above the true white noise.
    assert lorentzian.parameters["white_noise_psd"].value > 1.5 * d.white_noise_psd_rad2_per_Hz
    model = fit_spin_noise(spectrum, geometry, initial_values(d))
    n = model.parameters["atom_number"]
    assert abs(n.value - d.atom_number) < 3 * n.uncertainty
    assert n.uncertainty < 0.05 * d.atom_number


def test_flicker_term_of_a_record_without_one_is_consistent_with_zero():
    spectrum, d = record_spectrum(*CROSSOVER, seed=3)
    truth = initial_values(d)
    fit = fit_spin_noise(spectrum, ProbeGeometry.from_apparatus(d), truth, flicker=True)
    flicker = fit.parameters["flicker_coefficient"]
    assert flicker.unit == "rad^2"
    if any("bound" in flag for flag in fit.flags):  # at A = 0 the uncertainty is undefined
        # A/f at the lowest fitted bin is a negligible part of the floor there.
        lowest = spectrum.frequency_Hz[spectrum.mean_removed_bins]
        assert math.isnan(flicker.uncertainty)
        assert flicker.value / lowest < 1e-6 * d.white_noise_psd_rad2_per_Hz
    else:
        assert flicker.value < 3 * flicker.uncertainty
    assert abs(pulls(fit, truth)["atom_number"]) < 3


@pytest.mark.parametrize("sampled", [True, False])
def test_exact_spectrum_without_window_is_fitted_exactly(sampled):
    d = derive(CROSSOVER[0])
    fs = CROSSOVER[1]
    f = np.linspace(100.0, 20e3, 600)
    model = d.model
    atomic = (
        model.sampled_psd(f, fs, d.coupling_upper_rad, d.coupling_lower_rad)
        if sampled
        else model.psd(f, d.coupling_upper_rad, d.coupling_lower_rad)
    )
    spectrum = Spectrum(
        f, atomic + d.white_noise_psd_rad2_per_Hz, sample_rate_Hz=fs if sampled else None
    )
    truth = initial_values(d)
    fit = fit_spin_noise(
        spectrum, ProbeGeometry.from_apparatus(d), {n: 1.1 * v for n, v in truth.items()}
    )
    for name in FITTED:
        assert fit.parameters[name].value == pytest.approx(truth[name], rel=1e-6)
    # No standard errors and no averages: the scale comes from the residuals, no χ² test.
    assert any("no χ² test" in flag for flag in fit.flags)
    assert math.isnan(fit.p_value)


def test_clipped_record_is_flagged_in_the_result():
    spectrum, d = record_spectrum(*CROSSOVER, seed=4)
    clipped = replace(spectrum, clipped_samples=17)
    fit = fit_spin_noise(clipped, ProbeGeometry.from_apparatus(d), initial_values(d))
    assert any("clipped: 17 of" in flag for flag in fit.flags)
    lorentzian = fit_lorentzian(clipped, ProbeGeometry.from_apparatus(d))
    assert any("clipped" in flag for flag in lorentzian.flags)


def test_bad_fit_input_is_refused():
    spectrum, d = record_spectrum(*CROSSOVER, seed=5)
    geometry = ProbeGeometry.from_apparatus(d)
    start = initial_values(d)
    with pytest.raises(ValueError, match="bins in the fit range for 5 parameters"):
        fit_spin_noise(spectrum, geometry, start, fmin_Hz=1000.0, fmax_Hz=1300.0)
    with pytest.raises(ValueError, match="no bins"):
        fit_spin_noise(spectrum, geometry, start, fmin_Hz=30e3)
    with pytest.raises(ParameterError, match="initial atom_number"):
        fit_spin_noise(spectrum, geometry, dict(start, atom_number=-1.0))
    with pytest.raises(ValueError, match="coupling_upper_rad"):
        ProbeGeometry(0.0, 1e-13, np.array([1.0, 0, 0]), 5.0)
    with pytest.raises(ValueError, match="field_direction"):
        ProbeGeometry(1e-13, 1e-13, np.zeros(3), 5.0)
    zero = replace(spectrum, psd=np.where(np.arange(spectrum.psd.size) == 100, 0.0, spectrum.psd))
    with pytest.raises(ValueError, match="zero power"):
        fit_spin_noise(zero, geometry, start)


def test_closed_form_exponential_matches_scipy_also_without_an_eigenbasis():
    from scipy.linalg import expm

    rng = np.random.default_rng(6)
    for scale in (1e-6, 0.3, 30.0):
        m = (rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2))) * scale
        np.testing.assert_allclose(exp2x2(m), expm(m), rtol=1e-12, atol=1e-14 * abs(expm(m)).max())
    defective = np.array([[-0.5, 1.0], [0.0, -0.5]], dtype=complex)
    np.testing.assert_allclose(exp2x2(defective), expm(defective), rtol=1e-14)


def test_estimate_prints_value_and_uncertainty_with_two_significant_digits():
    assert str(Estimate(6917.3, 23.4, "Hz")) == "6917 ± 23 Hz"
    assert str(Estimate(1.0037e-6, 3.24e-9, "T")) == "1.0037e-06 ± 3.2e-09 T"
    assert str(Estimate(0.612, 0.0344)) == "0.612 ± 0.034"
    assert "nan" in str(Estimate(1.0, math.nan))


def test_the_larmor_line_is_found_when_the_zero_frequency_line_is_higher():
    """Field at 45° to the probe: the spin component along B adds a line at zero frequency whose
    top can be the highest point of a short spectrum; the fit must still find the Larmor line."""
    apparatus = ApparatusParameters(
        temperature_K=450.0, field_T=(100e-9, 0, 100e-9), probe_power_W=1.3e-3,
        probe_detuning_Hz=60e9,
    )  # fmt: skip
    fs = 125e6 / 1024
    d = derive(apparatus)
    for seed in (60, 66, 82, 125, 148):  # seeds where starting at the highest point failed
        generator = FastAngleNoise.from_derived(d, fs, seed=seed)
        psd = StreamingPSD(8192, fs, window="hann", overlap=0.5)
        for _ in range(2):  # two digitiser buffers, as a field-zeroing scan point takes
            psd.add(generator.block(16384))
            psd.end_record()
        spectrum = psd.spectrum()
        smoothed = np.convolve(spectrum.psd[1:], np.ones(5) / 5, mode="same")
        assert spectrum.frequency_Hz[1:][np.argmax(smoothed)] < 100.0  # the low line is higher
        fit = fit_spin_noise(spectrum, ProbeGeometry.from_apparatus(d), initial_values(d))
        field = fit.parameters["field_T"]
        assert abs(field.value - math.hypot(100e-9, 100e-9)) < 4 * field.uncertainty, seed


def test_a_parameter_the_spectrum_cannot_determine_is_named_in_the_flags():
    """A short SERF spectrum at 500 nT: R_SD′ adds ~5 % to the linewidth and ends at its bound."""
    apparatus = ApparatusParameters(
        temperature_K=450.0, field_T=(500e-9, 0, 0), probe_power_W=1.3e-3, probe_detuning_Hz=60e9
    )
    d = derive(apparatus)
    fs = 125e6 / 64
    generator = FastAngleNoise.from_derived(d, fs, seed=0)
    psd = StreamingPSD(8192, fs, window="hann", overlap=0.5)
    for _ in range(4):
        psd.add(generator.block(16384))
        psd.end_record()
    fit = fit_spin_noise(psd.spectrum(), ProbeGeometry.from_apparatus(d), initial_values(d))
    assert fit.flags == (
        "not determined by this spectrum: spin_destruction_rate (at its lower bound); "
        "no uncertainty for it",
    )
    assert math.isnan(fit.parameters["spin_destruction_rate"].uncertainty)
    assert fit.parameters["field_T"].uncertainty > 0  # the others keep theirs
