"""Constants, vapour and optics against the numbers and formulas of docs/physics.md §1, §2, §4."""

import math

import numpy as np
import pytest
from hotspin.analysis import constants as k
from hotspin.analysis import optics, vapour
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.spin_model import (
    quadratic_zeeman_peak_change,
    quadratic_zeeman_spread_rad_per_s,
)
from scipy import integrate


def test_lande_factors_and_larmor_coefficients_match_physics_table():
    assert k.G_F_UPPER == pytest.approx(0.499836, abs=2e-6)
    assert k.G_F_LOWER == pytest.approx(-0.501827, abs=2e-6)
    per_nT = 1e-9 / (2 * math.pi)
    assert k.GAMMA_UPPER_rad_per_sT * per_nT == pytest.approx(6.996, abs=1e-3)
    assert k.GAMMA_LOWER_rad_per_sT * per_nT == pytest.approx(-7.024, abs=1e-3)
    assert k.GAMMA_ELECTRON_rad_per_sT * per_nT == pytest.approx(28.025, abs=1e-3)


def test_serf_gyromagnetic_ratio_includes_nuclear_moment():
    serf = (5 * k.GAMMA_UPPER_rad_per_sT + k.GAMMA_LOWER_rad_per_sT) / 6
    assert serf * 1e-9 / (2 * math.pi) == pytest.approx(4.659, abs=1e-3)
    # The textbook γ_e/q with q = 6 leaves out the nuclear moment and gives 4.671 Hz/nT.
    assert k.GAMMA_ELECTRON_rad_per_sT / 6 * 1e-9 / (2 * math.pi) == pytest.approx(4.671, abs=1e-3)


def test_density_and_spin_exchange_rate_at_450K():
    assert vapour.rb_number_density_m3(450.0) * 1e-6 == pytest.approx(3.5e14, rel=0.02)
    assert vapour.spin_exchange_rate(450.0) == pytest.approx(3.1e5, rel=0.02)


def test_vapour_pressure_uses_solid_and_liquid_branches():
    solid = 10 ** (2.881 + 4.857 - 4215 / 300.0) * k.TORR_Pa
    liquid = 10 ** (2.881 + 4.312 - 4040 / 400.0) * k.TORR_Pa
    assert vapour.rb_vapour_pressure_Pa(300.0) == pytest.approx(solid, rel=1e-12)
    assert vapour.rb_vapour_pressure_Pa(400.0) == pytest.approx(liquid, rel=1e-12)


def test_relative_speed_uses_reduced_mass():
    T = 450.0
    mu = k.RB87_MASS_kg / 2
    expected = math.sqrt(8 * k.BOLTZMANN_k * T / (math.pi * mu))
    assert vapour.mean_relative_speed_m_per_s(T, k.RB87_MASS_kg, k.RB87_MASS_kg) == pytest.approx(
        expected
    )


def test_spin_destruction_sums_rb_and_n2_collisions():
    T, n2 = 450.0, 3e24
    n = vapour.rb_number_density_m3(T)
    v_rb = vapour.mean_relative_speed_m_per_s(T, k.RB87_MASS_kg, k.RB87_MASS_kg)
    v_n2 = vapour.mean_relative_speed_m_per_s(T, k.RB87_MASS_kg, k.N2_MASS_kg)
    expected = n * 1.6e-21 * v_rb + n2 * 1e-26 * v_n2
    assert vapour.spin_destruction_rate(T, n2) == pytest.approx(expected)


def test_diffusion_constant_and_lowest_mode_rate():
    assert vapour.diffusion_constant_m2_per_s(273.15, k.AMAGAT_m3) == pytest.approx(0.19e-4)
    # Half the density doubles D; D ∝ (T/T₀)^{3/2} at fixed pressure = √(T/T₀) at fixed density.
    assert vapour.diffusion_constant_m2_per_s(273.15 * 4, k.AMAGAT_m3 / 2) == pytest.approx(
        0.19e-4 * 2 * 2
    )
    D = vapour.diffusion_constant_m2_per_s(450.0, 3e24)
    rate = vapour.diffusion_rate(450.0, 3e24, (0.01, 0.02, 0.03))
    assert rate == pytest.approx(D * math.pi**2 * (1e4 + 2.5e3 + 1e4 / 9))


def test_n2_broadening_is_18_3_MHz_per_Torr_at_394K_and_20_GHz_per_amagat():
    one_torr_at_394 = k.TORR_Pa / (k.BOLTZMANN_k * 394.0)
    assert vapour.n2_broadening_fwhm_Hz(394.0, 100 * one_torr_at_394) == pytest.approx(1.83e9)
    per_amagat = vapour.n2_broadening_fwhm_Hz(394.0, k.AMAGAT_m3)
    assert per_amagat == pytest.approx(20e9, rel=0.01)


def test_cross_section_integrates_to_pi_re_c_f():
    # One hyperfine line of D1 at a time: ∫σ dν = π r_e c f · population.
    fwhm = 1e9
    edge = 1e3 * fwhm
    integral, _ = integrate.quad(
        lambda d: optics.lorentzian_per_Hz(d, fwhm), -edge, edge, points=[0.0], limit=200
    )
    assert integral == pytest.approx(2 / math.pi * math.atan(2 * edge / fwhm), rel=1e-8)
    sigma_far = optics.absorption_cross_section_m2(200e9, 1e9)
    fwhm_d1 = k.D1_NATURAL_FWHM_Hz + 1e9
    expected_d1 = (
        math.pi
        * k.CLASSICAL_ELECTRON_RADIUS_m
        * k.SPEED_OF_LIGHT_c
        * k.D1_OSCILLATOR_STRENGTH
        * (
            5 / 8 * optics.lorentzian_per_Hz(200e9, fwhm_d1)
            + 3 / 8 * optics.lorentzian_per_Hz(200e9 - k.HYPERFINE_SPLITTING_Hz, fwhm_d1)
        )
    )
    # The D2 line, 7 THz away, adds well under a percent here.
    assert sigma_far == pytest.approx(expected_d1, rel=0.01)
    assert sigma_far > expected_d1


def test_faraday_couplings_far_detuned_see_the_electron_spin():
    area = 1e-5
    c_a, c_b = optics.faraday_couplings_rad(300e9, 2e9, area)
    # Far from both hyperfine lines θ ∝ (F_a − F_b)/4: c_a ≈ c_b ≈ r_e c f/(4A Δ).
    approx = k.CLASSICAL_ELECTRON_RADIUS_m * k.SPEED_OF_LIGHT_c * 0.342 / (4 * area * 300e9)
    assert c_a == pytest.approx(approx, rel=0.03)
    assert c_b == pytest.approx(c_a, rel=0.03)
    # The rotation changes sign across the line.
    c_a_red, _ = optics.faraday_couplings_rad(-300e9, 2e9, area)
    assert c_a_red < 0 < c_a


def test_d2_coupling_has_opposite_sign_and_half_weight():
    area = 1e-5
    offset = k.D2_FREQUENCY_Hz - k.D1_FREQUENCY_Hz
    # Probe 300 GHz from the D2 line: the D2 term dominates with −½ f_D2 D(Δ).
    c_a, _ = optics.faraday_couplings_rad(offset + 300e9, 2e9, area)
    expected = (
        k.CLASSICAL_ELECTRON_RADIUS_m
        * k.SPEED_OF_LIGHT_c
        / (4 * area)
        * (-0.5 * k.D2_OSCILLATOR_STRENGTH / 300e9)
    )
    assert c_a == pytest.approx(expected, rel=0.03)


def test_shot_noise_is_one_over_twice_the_detected_photon_flux():
    power, responsivity = 1e-3, 0.5
    flux = responsivity * power / k.ELEMENTARY_CHARGE_e
    assert optics.shot_noise_psd_rad2_per_Hz(power, responsivity) == pytest.approx(1 / (2 * flux))


def test_derived_apparatus_is_consistent():
    d = derive(ApparatusParameters(temperature_K=450.0))
    p = d.parameters
    assert d.atom_number == pytest.approx(
        d.number_density_m3 * p.beam_area_m2 * p.cell_dimensions_m[2]
    )
    assert d.cell_transmission == pytest.approx(
        math.exp(-d.number_density_m3 * d.cross_section_m2 * p.cell_dimensions_m[2])
    )
    assert d.detected_power_W == pytest.approx(
        p.probe_power_W * d.cell_transmission * p.optics_transmission
    )
    assert d.model.spin_destruction_rate == pytest.approx(
        d.collisional_spin_destruction_rate + d.probe_pumping_rate
    )
    assert set(d.truth_attributes()) >= {
        "spin_exchange_rate_per_s",
        "atom_number",
        "field_nT",
        "coupling_upper_rad",
        "shot_noise_psd_rad2_per_Hz",
    }


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"temperature_K": -5.0}, "temperature_K"),
        ({"temperature_K": float("nan")}, "temperature_K"),
        ({"field_T": (float("inf"), 0.0, 0.0)}, "field_T"),
        ({"probe_power_W": -1e-3}, "probe_power_W"),
        ({"beam_area_m2": 0.0}, "beam_area_m2"),
    ],
)
def test_bad_apparatus_parameters_are_named_with_their_range(changes, name):
    with pytest.raises(ParameterError, match=name) as info:
        ApparatusParameters(**changes)
    assert "range" in str(info.value) or "finite" in str(info.value)


def test_quadratic_zeeman_spread_is_the_breit_rabi_second_order_shift():
    # Exact Breit–Rabi energies of F = 2, m (upper branch), their m ↔ m−1 line frequencies, minus
    # the linear part, against the rms spread the model uses.
    b = 50e-6
    mu = k.BOHR_MAGNETON_OVER_h_Hz_per_T
    x = (k.G_J - k.G_I) * mu * b / k.HYPERFINE_SPLITTING_Hz

    def energy_Hz(m):
        return k.G_I * mu * m * b + 0.5 * k.HYPERFINE_SPLITTING_Hz * math.sqrt(1 + m * x + x * x)

    lines = np.array([energy_Hz(m) - energy_Hz(m - 1) for m in (2, 1, 0, -1)])
    weights = np.array([4, 6, 6, 4]) / 20  # |⟨m|F₊|m−1⟩|²
    centred = lines - weights @ lines
    rms_Hz = math.sqrt(weights @ centred**2)
    assert 2 * math.pi * rms_Hz == pytest.approx(quadratic_zeeman_spread_rad_per_s(b), rel=1e-3)


@pytest.mark.parametrize(
    ("temperature_K", "field_T", "limit_T"),
    [(380.0, 100e-6, 3.34e-5), (350.0, 50e-6, 1.45e-5)],
)
def test_fields_where_the_quadratic_zeeman_effect_matters_are_refused_naming_the_limit(
    temperature_K, field_T, limit_T
):
    # The issue measured +19 % and +40 % PSD errors at these two points.
    with pytest.raises(ParameterError, match=r"field_T = .*\[0, (\S+)\] T") as refused:
        derive(ApparatusParameters(temperature_K=temperature_K, field_T=(field_T, 0, 0)))
    assert "quadratic Zeeman" in str(refused.value) and "> 1 %" in str(refused.value)
    stated = float(str(refused.value).split("[0, ")[1].split("]")[0])
    assert stated == pytest.approx(limit_T, rel=0.02)
    # Just inside the stated limit the model is accepted, and the peak change is below 1 %.
    d = derive(ApparatusParameters(temperature_K=temperature_K, field_T=(0.97 * stated, 0, 0)))
    ratio = d.model.quadratic_zeeman_ratio(d.coupling_upper_rad, d.coupling_lower_rad)
    assert quadratic_zeeman_peak_change(ratio) < 0.01
