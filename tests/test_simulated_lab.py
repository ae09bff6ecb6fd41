"""The simulated world: oven, laser, coils, polarimeter and clock (docs/physics.md §4, §5)."""

import math

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.constants import ELEMENTARY_CHARGE_e
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.polarimeter_optics import imbalance_rad


@pytest.fixture
def lab():
    lab = SimulatedLab(LabConfig(seed=7), SimClock(manual=True))
    lab.laser.emission_enabled = True
    return lab


def heat_to(lab, power_W, duration_s):
    lab.heater_control = lambda t, T, dt: power_W
    lab.clock.advance(duration_s)
    return lab.cell_temperature_K


def test_oven_relaxes_exponentially_with_its_time_constant(lab):
    oven = lab.config.oven
    power = 10.0
    T = heat_to(lab, power, oven.time_constant_s)
    steady = oven.ambient_K + power * oven.thermal_resistance_K_per_W
    expected = steady + (oven.ambient_K - steady) * math.exp(-1.0)
    assert T == pytest.approx(expected, rel=1e-9)


def test_heater_control_is_called_every_tenth_of_a_second(lab):
    calls = []
    lab.heater_control = lambda t, T, dt: calls.append((t, dt)) or 0.0
    lab.clock.advance(2.0)
    lab.update()
    assert len(calls) == 20
    assert all(dt == pytest.approx(0.1) for _, dt in calls)


def test_clock_scaled_runs_faster_than_wall_time():
    wall, waits = [100.0], []

    def wait(seconds):
        waits.append(seconds)
        wall[0] += seconds

    clock = SimClock(speed=1000.0, start_s=2.0, wall=lambda: wall[0], wait=wait)
    wall[0] += 0.25
    assert clock.now() == pytest.approx(2.0 + 250.0)
    clock.sleep(5.0)  # 5 simulated seconds: 5 ms of wall time
    assert waits == [pytest.approx(0.005)]
    assert clock.now() == pytest.approx(257.0)
    clock.speed = 10.0  # no jump in simulated time, then 10 × the wall
    wall[0] += 1.0
    assert clock.now() == pytest.approx(267.0)
    with pytest.raises(RuntimeError, match="manual"):
        clock.advance(1.0)


def test_laser_power_and_interlock(lab):
    c = lab.config.laser
    lab.laser.current_A = 0.100
    expected = c.slope_efficiency_W_per_A * (0.100 - c.threshold_current_A) * c.delivery_efficiency
    assert lab.laser.power_at_cell_W == pytest.approx(expected)
    lab.laser.interlock_closed = False
    assert lab.laser.power_at_cell_W == 0.0
    lab.laser.interlock_closed = True
    lab.laser.current_A = 0.5 * c.threshold_current_A
    assert lab.laser.power_at_cell_W == 0.0


def test_laser_tunes_linearly_inside_the_mode_hop_free_window_and_hops_outside(lab):
    c = lab.config.laser
    base = lab.laser.detuning_Hz
    lab.laser.piezo_V = 100.0  # 25 GHz: the feed-forward keeps the laser on its mode
    assert lab.laser.detuning_Hz - base == pytest.approx(100.0 * c.cavity_piezo_tuning_Hz_per_V)
    assert lab.laser.mode_index == 0
    lab.laser.piezo_V = 0.0
    # The diode modes move 0.05 GHz/mA faster than the cavity: ±50 mA fill the ±2.5 GHz window.
    lab.laser.current_A = c.nominal_current_A + 0.045
    assert lab.laser.mode_index == 0
    lab.laser.current_A = c.nominal_current_A - 0.055
    assert lab.laser.mode_index != 0
    jump = lab.laser.detuning_Hz - base + 0.055 * c.cavity_current_tuning_Hz_per_A
    assert abs(jump) == pytest.approx(abs(lab.laser.mode_index) * c.free_spectral_range_Hz)


def test_coils_add_to_the_residual_field(lab):
    lab.coils.currents_A[:] = [1e-3, -2e-3, 0.5e-3]
    expected = np.array(lab.config.coils.residual_field_T) + lab.config.coils.matrix @ [
        1e-3,
        -2e-3,
        0.5e-3,
    ]
    np.testing.assert_allclose(lab.coils.field_T(), expected)


def test_record_gives_sum_voltage_and_imbalance_from_the_optics(lab):
    heat_to(lab, 15.0, 3000.0)
    pol = lab.config.polarimeter
    lab.hwp_angle_deg = pol.hwp_zero_deg + 0.2  # 0.8° of rotation offset
    truth = lab.truth()
    record = lab.record(20_000, 1e6)
    current = pol.responsivity_A_per_W * truth.detected_power_W
    assert record.v_sum.mean() == pytest.approx(pol.gain_sum_V_per_A * current, rel=1e-3)
    offset = imbalance_rad(lab.hwp_angle_deg, pol.hwp_zero_deg)
    assert record.v_diff.mean() == pytest.approx(
        pol.gain_diff_V_per_A * current * math.sin(offset), rel=0.02
    )


def test_balanced_difference_noise_is_atoms_plus_shot_noise(lab):
    heat_to(lab, 15.0, 3000.0)
    pol = lab.config.polarimeter
    lab.hwp_angle_deg = pol.hwp_zero_deg
    truth = lab.truth()
    fs = 2e6
    records = [lab.record(1 << 16, fs) for _ in range(8)]
    v_diff = np.concatenate([r.v_diff for r in records])
    atoms = np.concatenate([r.atomic_angle_rad for r in records])
    current = pol.responsivity_A_per_W * truth.detected_power_W
    slope = 2 * pol.gain_diff_V_per_A * current  # V per rad at balance
    light = pol.gain_diff_V_per_A**2 * (
        2 * ELEMENTARY_CHARGE_e * current + (pol.responsivity_A_per_W * pol.nep_W_per_rtHz) ** 2
    )
    residual = v_diff - slope * atoms
    assert residual.var() == pytest.approx(light * fs / 2, rel=0.02)
    assert atoms.var() == pytest.approx(truth.angle_variance_rad2(), rel=0.3)


def test_no_light_no_signal_only_detector_noise(lab):
    lab.laser.emission_enabled = False
    record = lab.record(10_000, 1e6)
    pol = lab.config.polarimeter
    sigma = pol.gain_sum_V_per_A * pol.responsivity_A_per_W * pol.nep_W_per_rtHz * math.sqrt(5e5)
    assert abs(record.v_sum.mean()) < 5 * sigma / 100
    assert record.v_sum.std() == pytest.approx(sigma, rel=0.05)


def test_records_follow_the_clock_and_never_rewind(lab):
    first = lab.record(1000, 1e6)
    assert first.start_s == 0.0
    second = lab.record(1000, 1e6, start_s=0.0)
    assert second.start_s == pytest.approx(1000 / 1e6)
    lab.clock.advance(5.0)
    third = lab.record(1000, 1e6)
    assert third.start_s == pytest.approx(5.0)


def test_lab_config_from_mapping_names_unknown_settings():
    config = LabConfig.from_mapping({"oven": {"ambient_K": 300.0}, "seed": 3})
    assert config.oven.ambient_K == 300.0 and config.seed == 3
    with pytest.raises(ParameterError, match=r"lab\.oven\.ambiant_K"):
        LabConfig.from_mapping({"oven": {"ambiant_K": 300.0}})
    with pytest.raises(ParameterError, match="beam_area_m2"):
        LabConfig.from_mapping({"beam_area_m2": -1.0})
