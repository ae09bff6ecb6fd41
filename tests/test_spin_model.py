"""The two-manifold model against every limit of docs/physics.md §3, from the analytic model."""

import math

import numpy as np
import pytest
from hotspin.analysis import constants as k
from hotspin.analysis.spin_model import M_SE, SpinModel
from scipy import integrate

PER_NT_HZ = 1e-9 / (2 * math.pi)  # rad s⁻¹ T⁻¹ → Hz/nT
SERF_HZ_PER_NT = (5 * k.GAMMA_UPPER_rad_per_sT + k.GAMMA_LOWER_rad_per_sT) / 6 * PER_NT_HZ


def model(field_nT, r_se, r_sd=0.0, r_d=1e-3, n=1.0):
    return SpinModel(
        field_T=np.array(field_nT) * 1e-9,
        spin_exchange_rate=r_se,
        spin_destruction_rate=r_sd,
        diffusion_rate=r_d,
        atom_number=n,
    )


def test_spin_exchange_conserves_total_spin_and_spares_spin_temperature_mode():
    np.testing.assert_allclose(np.ones(2) @ M_SE, 0.0, atol=1e-15)
    np.testing.assert_allclose(M_SE @ np.array([5.0, 1.0]), 0.0, atol=1e-15)


def test_thermal_covariance_is_stationary_with_positive_noise():
    m = model([300.0, -200.0, 100.0], r_se=3e4, r_sd=50.0, r_d=5.0, n=1e12)
    A, S, Q = m.drift_matrix(), m.stationary_covariance(), m.noise_covariance()
    np.testing.assert_allclose(np.diag(S)[:3], 1.25e12)
    np.testing.assert_allclose(np.diag(S)[3:], 0.25e12)
    np.testing.assert_allclose(A @ S + S @ A.T + Q, 0.0, atol=1e-9 * np.abs(Q).max())
    assert np.linalg.eigvalsh(Q).min() > -1e-9 * np.abs(Q).max()


def test_drift_matrix_blocks_reproduce_the_full_spectrum():
    m = model([300.0, -200.0, 100.0], r_se=3e4, r_sd=50.0, r_d=5.0)
    full = np.sort_complex(np.linalg.eigvals(m.drift_matrix()))
    blocks = np.sort_complex(np.concatenate([np.linalg.eigvals(X) for _, X in m.blocks()]))
    np.testing.assert_allclose(full, blocks, rtol=1e-10, atol=1e-6)


def test_slow_exchange_two_lines_with_their_own_larmor_frequencies_and_widths():
    B, r_se = 2000.0, 100.0
    m = model([B, 0.0, 0.0], r_se=r_se)
    modes = [mo for mo in m.eigenmodes(1.0, 1.0) if mo.frequency_Hz > 0]
    upper = min(modes, key=lambda mo: abs(mo.frequency_Hz - 6.996 * B))
    lower = min(modes, key=lambda mo: abs(mo.frequency_Hz - 7.024 * B))
    assert upper.frequency_Hz == pytest.approx(6.996 * B, abs=0.001 * B)
    assert lower.frequency_Hz == pytest.approx(7.024 * B, abs=0.001 * B)
    # F = 2 transverse decay R_SE/8, F = 1 decay 5R_SE/8 (the diffusion rate 1e-3 s⁻¹ on top).
    assert upper.decay_rate == pytest.approx(r_se / 8, rel=1e-3)
    assert lower.decay_rate == pytest.approx(5 * r_se / 8, rel=1e-3)


def test_serf_single_line_frequency_and_decay():
    B, r_se, r_sd, r_d = 20.0, 1e6, 200.0, 3.0
    m = model([B, 0.0, 0.0], r_se=r_se, r_sd=r_sd, r_d=r_d)
    modes = m.eigenmodes(1.0, 1.0)
    narrow = modes[0]
    omega_serf = 2 * math.pi * SERF_HZ_PER_NT * B
    # 4.659 Hz/nT, told apart from the textbook 4.671 Hz/nT (0.26 % higher).
    assert narrow.frequency_Hz == pytest.approx(SERF_HZ_PER_NT * B, rel=5e-4)
    expected = r_sd / 6 + 5 / 3 * omega_serf**2 / r_se + r_d
    assert narrow.decay_rate == pytest.approx(expected, rel=2e-3)
    # The rest of the noise is one broad component decaying at ≈ 0.75 R_SE.
    broad = [mo for mo in modes[1:] if mo.fraction > 0.01]
    assert len(broad) == 1
    assert broad[0].decay_rate == pytest.approx(0.75 * r_se, rel=0.01)


def test_serf_quadratic_broadening_grows_with_field_squared():
    r_se, r_sd = 1e6, 60.0
    widths = []
    for B in (10.0, 20.0, 40.0):
        widths.append(model([B, 0.0, 0.0], r_se=r_se, r_sd=r_sd, r_d=0.0).eigenmodes(1, 1)[0])
    excess = [w.decay_rate - r_sd / 6 for w in widths]
    assert excess[1] / excess[0] == pytest.approx(4.0, rel=1e-3)
    assert excess[2] / excess[1] == pytest.approx(4.0, rel=1e-3)


def test_serf_narrow_line_carries_four_ninths_of_the_electron_spin_noise():
    m = model([5.0, 0.0, 0.0], r_se=1e7, r_sd=10.0, r_d=0.0)
    narrow = m.eigenmodes(0.25, 0.25)[0]
    assert narrow.fraction == pytest.approx(4 / 9, rel=1e-3)


def test_mode_variances_add_up_to_the_observable_variance():
    m = model([300.0, -200.0, 100.0], r_se=3e4, r_sd=50.0, r_d=5.0, n=7.0)
    total = sum(mo.variance for mo in m.eigenmodes(0.3, 0.2))
    assert total == pytest.approx(m.variance(0.3, 0.2), rel=1e-9)
    assert m.variance(0.3, 0.2) == pytest.approx(7.0 * (1.25 * 0.09 + 0.25 * 0.04))


@pytest.mark.parametrize(
    ("field_nT", "r_se"),
    [([2000.0, 0, 0], 100.0), ([500.0, 0, 0], 2e4), ([100.0, 0, 0], 1e6), ([60, 80, 100], 3e4)],
)
def test_psd_area_equals_the_variance(field_nT, r_se):
    m = model(field_nT, r_se=r_se, r_sd=20.0, r_d=2.0, n=3.0)
    # Integrate in log f from well below every width to far above every rate.
    log_f = np.linspace(-3, math.log10(1e3 * r_se), 400_001)
    f = 10**log_f
    area = integrate.trapezoid(m.psd(f, 1.0, 1.0) * f * math.log(10), log_f)
    assert area == pytest.approx(m.variance(1.0, 1.0), rel=2e-3)


def test_psd_matches_direct_resolvent_of_the_full_drift_matrix():
    m = model([60.0, 80.0, 100.0], r_se=3e4, r_sd=50.0, r_d=5.0, n=2.0)
    C = m.observation_vector(0.3, 0.2)
    A, S = m.drift_matrix(), m.stationary_covariance()
    f = np.array([1.0, 300.0, 512.0, 1e4])
    direct = [
        4 * np.real(C @ np.linalg.solve(2j * math.pi * fi * np.eye(6) - A, S @ C)) for fi in f
    ]
    np.testing.assert_allclose(m.psd(f, 0.3, 0.2), direct, rtol=1e-10)


def test_sampled_psd_tends_to_continuous_psd_well_below_nyquist():
    m = model([100.0, 0, 0], r_se=1e4, r_sd=20.0, r_d=2.0)
    f = np.array([10.0, 466.0, 1000.0])
    sampled = m.sampled_psd(f, 1e8, 1.0, 1.0)
    np.testing.assert_allclose(sampled, m.psd(f, 1.0, 1.0), rtol=1e-4)


def test_field_along_probe_hides_the_precessing_components():
    along = model([0.0, 0.0, 300.0], r_se=3e4, r_sd=50.0)
    modes = along.eigenmodes(1.0, 1.0)
    assert all(mo.frequency_Hz == 0.0 for mo in modes)


def test_model_rejects_bad_input_with_named_parameter():
    with pytest.raises(ValueError, match="field_T"):
        model([float("nan"), 0, 0], r_se=1.0, r_sd=1.0)
    with pytest.raises(ValueError, match="spin_exchange_rate"):
        model([0, 0, 0], r_se=-1.0, r_sd=1.0)
    with pytest.raises(ValueError, match="relaxation"):
        model([0, 0, 0], r_se=1.0, r_sd=0.0, r_d=0.0)
