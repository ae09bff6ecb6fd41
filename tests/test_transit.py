"""Diffusion through the probe beam: the transit modes, their simulation and their fit."""

import dataclasses
import math

import numpy as np
import pytest
from hotspin.analysis import vapour
from hotspin.analysis.experiment import ApparatusParameters, derive, transit_time_s
from hotspin.analysis.fits import (
    ProbeGeometry,
    angle_autocovariance,
    fit_spin_noise,
    initial_values,
)
from hotspin.analysis.spectra import StreamingPSD
from hotspin.analysis.spin_model import (
    TRANSIT_MIN_DECAY,
    TRANSIT_MODE_COUNT,
    TRANSIT_SPECTRUM_ACCURACY,
    SpinModel,
    transit_quadrature,
)
from hotspin.simulators.spin_noise import ExactSpinNoise, FastAngleNoise
from scipy import integrate, special

# Kong-type SERF with the beam: 1/e² radius 1.4 mm in 100 Torr N₂, τ_D ≈ 2.5 ms.
SERF_WIDE_BEAM = ApparatusParameters(
    temperature_K=450.0,
    field_T=(100e-9, 0.0, 0.0),
    probe_power_W=5e-3,
    probe_detuning_Hz=60e9,
    beam_waist_m=1.4e-3,
)


def test_gaussian_beam_overlap_decays_as_one_over_one_plus_tau_over_w2_over_4d():
    # Brute force: ∫∫ I(x) I(x′) G(x − x′, τ) dx dx′ / ∫ I² per transverse axis, I ∝ e^{−2x²/w²},
    # G the free-diffusion kernel of variance 2Dτ; two axes multiply.
    w, D = 1.4e-3, 2e-4
    tau_d = transit_time_s(w, D)
    assert tau_d == pytest.approx(w**2 / (4 * D))
    x = np.linspace(-5 * w, 5 * w, 801)
    intensity = np.exp(-2 * x**2 / w**2)
    norm = integrate.trapezoid(intensity**2, x)
    for tau in (0.1 * tau_d, tau_d, 7 * tau_d):
        variance = 2 * D * tau
        kernel = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * variance))
        kernel /= math.sqrt(2 * math.pi * variance)
        per_axis = integrate.trapezoid(intensity * integrate.trapezoid(kernel * intensity, x), x)
        assert (per_axis / norm) ** 2 == pytest.approx(1 / (1 + tau / tau_d), rel=1e-4)


def test_transit_modes_reproduce_one_over_one_plus_x_within_the_stated_accuracy():
    s, w = transit_quadrature()
    assert s.size == TRANSIT_MODE_COUNT
    assert w.sum() == pytest.approx(1.0, abs=1e-14)  # the variance is exact
    x = np.concatenate([[0.0], np.logspace(-3, 4, 2000)])
    approx = np.exp(-np.outer(x, s)) @ w
    exact = 1 / (1 + x)
    assert np.abs(approx - exact).max() < 0.005
    assert (np.abs(approx / exact - 1)[x <= 10]).max() < 0.007
    # The spectrum of a line with decay Γ (Γτ_D ≥ 0.01) at detuning Δ is τ_D Re L(p), p = (Γ −
    # iΔ)τ_D, with L(p) = ∫ e^{−px}/(1 + x) dx = e^p E₁(p): the sum's L within 1 % on the line
    # Re p = 0.01 (the worst case, by the maximum principle, for Re p ≥ 0.01).
    p = TRANSIT_MIN_DECAY + 1j * np.concatenate([[0.0], np.logspace(-4, 4, 1000)])
    closed = np.exp(p) * special.exp1(p)
    summed = (w / (p[:, None] + s)).sum(axis=1)
    assert np.abs(summed / closed - 1).max() < TRANSIT_SPECTRUM_ACCURACY
    # Plain Gauss–Laguerre with as many nodes is much worse there: why the sinc rule is used.
    nodes, weights = np.polynomial.laguerre.laggauss(TRANSIT_MODE_COUNT)
    laguerre = (weights / (p[:, None] + nodes)).sum(axis=1)
    assert np.abs(laguerre / closed - 1).max() > 10 * TRANSIT_SPECTRUM_ACCURACY
    # More modes (the same step, further into the tail) only improve it.
    errors = []
    for count in (TRANSIT_MODE_COUNT, TRANSIT_MODE_COUNT + 3):
        s_m, w_m = transit_quadrature(count)
        errors.append(np.abs((w_m / (p[:, None] + s_m)).sum(axis=1) / closed - 1).max())
    assert errors[1] < errors[0]


def test_block_model_is_stationary_and_its_spectrum_is_the_models():
    d = derive(SERF_WIDE_BEAM)
    m = d.model
    A, Q, S, C = m.block_model(d.coupling_upper_rad, d.coupling_lower_rad)
    assert A.shape == (6 * TRANSIT_MODE_COUNT,) * 2
    np.testing.assert_allclose(A @ S + S @ A.T + Q, 0, atol=1e-12 * np.abs(Q).max())
    assert np.linalg.eigvalsh(Q / np.abs(Q).max()).min() > -1e-12
    assert float(C @ S @ C) == pytest.approx(m.variance(d.coupling_upper_rad, d.coupling_lower_rad))
    f = np.array([0.0, 50.0, 466.0, 2000.0])
    direct = [
        4 * np.real(C @ np.linalg.solve(2j * np.pi * fk * np.eye(A.shape[0]) - A, S @ C))
        for fk in f
    ]
    np.testing.assert_allclose(
        m.psd(f, d.coupling_upper_rad, d.coupling_lower_rad), direct, rtol=1e-9
    )
    # The fit's autocovariance is the block model's C Φᵏ Σ Cᵀ.
    fs = 20e3
    R = angle_autocovariance(m, d.coupling_upper_rad, d.coupling_lower_rad, 40, fs)
    from scipy.linalg import expm

    step = expm(A / fs)
    reference = []
    power = S @ C
    for _ in range(40):
        reference.append(C @ power)
        power = step @ power
    np.testing.assert_allclose(R, reference, rtol=1e-9, atol=1e-12 * R[0])


def test_exact_simulator_has_the_transit_models_autocovariance():
    d = derive(SERF_WIDE_BEAM)
    fs = 20e3
    spins = ExactSpinNoise.from_derived(d, fs, seed=4)
    theta = np.concatenate([spins.block(100_000).atomic_angle_rad for _ in range(4)])
    lags = [0, 20, 60, 200]
    empirical = [np.mean(theta[: theta.size - k] * theta[k:]) for k in lags]
    R = angle_autocovariance(d.model, d.coupling_upper_rad, d.coupling_lower_rad, 201, fs)
    # Correlation time ~ 1/Γ ≈ 7 ms = 150 samples: 4e5 samples are ~2600 independent stretches.
    for k, value in zip(lags, empirical, strict=True):
        assert value == pytest.approx(R[k], abs=0.06 * R[0])
    # The modes carry their shares of the thermal state.
    _, weights = d.model.transit_modes()
    assert spins.mode_states.shape == (weights.size, 6)
    np.testing.assert_allclose(spins.state, spins.mode_states.sum(axis=0))


def test_transit_time_follows_the_buffer_gas_and_the_temperature():
    d = derive(SERF_WIDE_BEAM)
    D = vapour.diffusion_constant_m2_per_s(450.0, d.n2_density_m3)
    assert d.transit_time_s == pytest.approx((1.4e-3) ** 2 / (4 * D))
    assert d.transit_time_s == pytest.approx(2.46e-3, rel=0.02)  # the issue's ≈ 2.5 ms
    assert d.atom_number == pytest.approx(d.number_density_m3 * math.pi * 1.4e-3**2 * 0.03)
    held = derive(SERF_WIDE_BEAM.with_changes(beam_transit=False))
    assert held.transit_time_s == math.inf and held.model.transit_modes()[1].size == 1
    # Area and waist are one beam: giving both inconsistently is refused by name.
    with pytest.raises(ValueError, match=r"beam_area_m2 = .* beam_waist_m"):
        ApparatusParameters(beam_waist_m=1e-3, beam_area_m2=1e-6)
    assert SERF_WIDE_BEAM.with_changes(beam_area_m2=math.pi * 1e-6).beam_waist_m == pytest.approx(
        1e-3
    )


def _spectrum(d, seed, fs=20e3, segment=4096, duration_s=4.0):
    generator = FastAngleNoise.from_derived(d, fs, seed=seed)
    psd = StreamingPSD(segment, fs)
    psd.add(generator.block(round(duration_s * fs)))
    return psd.spectrum()


def test_without_transit_the_fit_overstates_spin_destruction_and_chi2_does_not_warn():
    d = derive(SERF_WIDE_BEAM)
    truth = initial_values(d)
    geometry = ProbeGeometry.from_apparatus(d)
    blind = dataclasses.replace(geometry, transit_time_s=math.inf)
    spectrum = _spectrum(d, seed=11)
    wrong = fit_spin_noise(spectrum, blind, truth)
    # The issue measured +510 % at these conditions; the model here gives about +400 %.
    assert wrong.value("spin_destruction_rate") / truth["spin_destruction_rate"] > 3.0
    assert abs(wrong.reduced_chi2 - 1) < 0.15
    right = fit_spin_noise(spectrum, geometry, truth)
    r_sd = right.parameters["spin_destruction_rate"]
    assert abs(r_sd.value - truth["spin_destruction_rate"]) < 3 * r_sd.uncertainty


def test_fit_with_free_transit_time_has_unit_pulls_over_thirty_seeds():
    d = derive(SERF_WIDE_BEAM)
    truth = initial_values(d) | {"transit_time_s": d.transit_time_s}
    geometry = ProbeGeometry.from_apparatus(d)
    table = []
    for seed in range(200, 230):
        # Sampled fast enough to see the broad spin-exchange component that fixes R_SE.
        spectrum = _spectrum(d, seed, fs=200e3, segment=16384, duration_s=2.0)
        fit = fit_spin_noise(spectrum, geometry, truth, free_transit=True)
        assert fit.flags == ()
        table.append([(fit.value(n) - truth[n]) / fit.parameters[n].uncertainty for n in fit.names])
    pulls = np.array(table)
    assert "transit_time_s" in fit.names
    # 30 seeds: the mean has σ ≈ 0.18, the width ≈ 0.13 (bounds at about 1.6 and 2.3 σ).
    means = dict(zip(fit.names, pulls.mean(axis=0), strict=True))
    assert all(abs(m) < 0.3 for m in means.values()), means
    assert np.all((pulls.std(axis=0, ddof=1) > 0.7) & (pulls.std(axis=0, ddof=1) < 1.3))


def test_models_without_transit_are_the_wall_model_itself():
    m = SpinModel(np.array([1e-7, 0, 0]), 3e4, 300.0, 6.0, 1e10)
    A, _, S, _ = m.block_model(1e-14, 1e-14)
    np.testing.assert_array_equal(A, m.drift_matrix())
    np.testing.assert_array_equal(S, m.stationary_covariance())
    with pytest.raises(ValueError, match="transit_time_s"):
        SpinModel(np.zeros(3), 1.0, 1.0, transit_time_s=-1.0)
