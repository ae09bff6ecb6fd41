"""The station: file parsing, the simulated lab behind the real drivers, interlocks, snapshot."""

import math
import re
import textwrap

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.station import Station, WallClock, lab_config_for
from hotspin.instruments.station_config import StationConfig


@pytest.fixture(params=["inprocess", "tcp"])
def station(request):
    station = Station.from_file(None, request.param)
    station.configure()
    yield station
    station.close()


def write_station(tmp_path, text):
    path = tmp_path / "station.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_embedded_and_example_station_files_load():
    simulated = StationConfig.load()
    assert simulated.simulated and simulated.simulation.transport == "inprocess"
    real = StationConfig.load(
        __import__("pathlib").Path(__file__).parents[1]
        / "instruments/stations/real-lab.example.toml"
    )
    assert not real.simulated
    assert real.coils.resources[0].endswith("::1394::SOCKET")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[heater]\nmax_temperature_K = 900\n", "heater.max_temperature_K = 900"),
        ("[heater]\nmax_temprature_K = 450\n", "unknown setting(s) station file.heater.max_temp"),
        ("[coils]\nmax_current_A = 0.5\n", "coils.max_current_A = 0.5 is outside the allowed"),
        ("[laser]\nsafe_state = 'explode'\n", "laser.safe_state = 'explode' is not one of"),
        ("[cell]\nbeam_area_m2 = -1\n", "cell.beam_area_m2 = -1"),
        ("[digitiser]\ndecimation = 3\n", "digitiser.decimation = 3 is not one of [1, 2, 4"),
        ("[simulation]\ntransport = 'carrier pigeon'\n", "simulation.transport"),
        ("[heater\n", "is not valid TOML"),
    ],
)  # fmt: skip
def test_malformed_station_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ParameterError, match="station file") as error:
        StationConfig.load(write_station(tmp_path, text))
    assert message in str(error.value)


def test_a_real_stations_clock_runs_at_the_served_labs_speed():
    # A station of real instruments reaching a lab served at 50 × counts the lab's seconds:
    # 50 of them per wall-clock second, and a wait of 5 s of them is 0.1 s of wall.
    wall, waits = [100.0], []
    clock = WallClock(50.0, wall=lambda: wall[0], wait=waits.append)
    wall[0] += 2.0
    assert clock.now() == pytest.approx(100.0)
    clock.sleep(5.0)
    assert waits == [pytest.approx(0.1)]
    assert not clock.manual
    assert WallClock().speed == 1.0  # hardware: real seconds


def test_missing_station_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParameterError, match="cannot read station file"):
        StationConfig.load(tmp_path / "nowhere.toml")


def test_station_calibrations_are_the_simulated_worlds_truth():
    config = StationConfig.load()
    lab = lab_config_for(config)
    assert lab.coils.coil_matrix_T_per_A == config.coils.coil_matrix_T_per_A
    assert lab.polarimeter.gain_diff_V_per_A == config.polarimeter.gain_diff_V_per_A
    assert lab.laser.detuning_at_nominal_Hz == config.laser.reference_detuning_Hz
    assert lab.polarimeter.hwp_zero_deg == 12.3  # from [simulation.lab], unknown to the station


def test_snapshot_holds_every_role_and_the_truth(station):
    snap = station.snapshot()
    assert set(snap) >= {"station", "cell", "heater", "laser", "polarimeter", "coils"}
    assert snap["heater"]["idn"].startswith("LSCI,MODEL336")
    assert snap["heater"]["temperature_limit_K"] == 470.0  # TLIMIT programmed from the station
    assert snap["laser"]["max_current_A"] == 0.150
    assert snap["polarimeter"]["digitiser"]["decimation"] == 64
    assert set(snap["coils"]["sources"]) == {"x", "y", "z"}
    assert all(s["source_enabled"] for s in snap["coils"]["sources"].values())
    assert snap["simulation_truth"]["temperature_K"] == pytest.approx(
        snap["heater"]["temperature_K"], abs=0.5
    )


def test_polarimeter_reads_the_atoms_rotation_angle(station):
    station.laser.emission_enabled = True
    station.polarimeter.plate_angle_deg = 12.3  # the simulated lab's balance angle
    record = station.polarimeter.acquire()
    assert record.v_diff.shape == record.v_sum.shape == (16384,)
    assert record.sample_rate_Hz == pytest.approx(125e6 / 64)
    truth = station.lab.truth()
    assert station.polarimeter.detected_power_W(record) == pytest.approx(
        truth.detected_power_W, rel=0.01
    )
    theta = station.polarimeter.rotation_angle_rad(record)
    # Room temperature: almost no atoms, so θ is the light's shot noise (quantised by 14 bits).
    fs = record.sample_rate_Hz
    assert theta.std() == pytest.approx(
        math.sqrt(truth.white_noise_psd_rad2_per_Hz * fs / 2), rel=0.1
    )


def test_the_plate_balances_and_unbalances_the_polarimeter(station):
    station.laser.emission_enabled = True
    station.polarimeter.plate_angle_deg = 12.3 + 0.1
    record = station.polarimeter.acquire(4096)
    assert not record.clipped
    assert station.polarimeter.imbalance(record) == pytest.approx(
        math.sin(4 * math.radians(0.1)), rel=0.01
    )
    # Half a degree more unbalances it beyond the digitiser's ±1 V: the record says so.
    station.polarimeter.plate_angle_deg = 12.3 + 0.5
    assert station.polarimeter.acquire(4096).clipped


def test_coil_field_follows_the_coil_matrix(station):
    station.coils.set_field([100e-9, -50e-9, 20e-9])
    # The currents go over the wire with 6 significant digits: a few 0.1 pT.
    np.testing.assert_allclose(station.coils.field_T, [100e-9, -50e-9, 20e-9], atol=1e-12)
    lab_field = station.lab.coils.field_T() - np.array(station.lab.config.coils.residual_field_T)
    np.testing.assert_allclose(lab_field, [100e-9, -50e-9, 20e-9], atol=1e-12)


def test_interlocks_refuse_before_anything_is_sent(station):
    lab = station.lab
    with pytest.raises(InterlockError, match=r"setpoint_K = 480 .*heater.max_temperature_K"):
        station.heater.setpoint_K = 480.0
    assert station.heater.setpoint_K != 480.0
    with pytest.raises(InterlockError, match=r"x current = 0.06 A .*coils.max_current_A"):
        station.coils.set_currents([0.06, 0.0, 0.0])
    assert np.all(lab.coils.currents_A == 0.0)
    with pytest.raises(InterlockError, match=r"field_T = \[0.001, 0, 0\] T needs x current"):
        station.coils.set_field([1e-3, 0.0, 0.0])  # 10 A through the coils
    with pytest.raises(InterlockError, match=r"current_A = 0.2 .*laser.max_current_A"):
        station.laser.current_A = 0.2
    assert lab.laser.current_A == pytest.approx(0.120)


def test_coils_ramp_no_faster_than_the_station_allows():
    station = Station.from_file(None, "inprocess")
    station.configure()
    seen = []
    sim = station.simulated_instruments["coil_x"]
    original = sim.handle

    def spy(command):
        reply = original(command)
        seen.append((station.clock.now(), float(station.lab.coils.currents_A[0])))
        return reply

    sim.handle = spy
    station.coils.set_currents([0.01, 0.0, 0.0])
    station.close()
    times, currents = np.array(seen).T
    steps = np.diff(currents)
    rate = station.config.coils.max_ramp_rate_A_per_s
    assert currents[-1] == pytest.approx(0.01)
    assert np.max(np.abs(steps)) <= rate * 0.05 + 1e-12  # one ramp step
    elapsed = times[-1] - times[0]
    assert elapsed >= 0.01 / rate * 0.9


def test_safe_state_ramps_coils_to_zero_and_follows_the_station(station, tmp_path):
    station.coils.set_currents([0.005, -0.003, 0.002])
    station.heater.heater_range = "high"
    assert station.safe_state() == []
    assert np.all(station.lab.coils.currents_A == 0.0)
    snap = station.coils.snapshot()
    assert not any(s["source_enabled"] for s in snap["sources"].values())
    assert station.heater.heater_range == "high"  # safe_state = "hold"


def test_heater_safe_state_off_switches_the_heater_off(tmp_path):
    path = write_station(
        tmp_path,
        """
        [station]
        simulated = true
        [heater]
        safe_state = "off"
        """,
    )
    with Station.from_file(path) as station:
        station.configure()
        station.heater.heater_range = "high"
        station.safe_state()
        assert station.heater.heater_range == "off"


def test_apparatus_for_the_analysis_comes_from_the_station(station):
    apparatus = station.apparatus()
    assert apparatus.probe_detuning_Hz == pytest.approx(60e9)
    assert apparatus.beam_area_m2 == station.config.cell.beam_area_m2
    assert apparatus.temperature_K == pytest.approx(station.heater.temperature_K, abs=0.01)


def real_station_mapping():
    """A real station naming every role's resource (nothing listens there; nothing connects)."""
    r = "TCPIP::192.0.2.1::{}::SOCKET"
    return {
        "station": {"simulated": False},
        "heater": {"resource": r.format(7777)},
        "laser": {"resource": r.format(1998)},
        "polarimeter": {"mount_resource": r.format(10001)},
        "digitiser": {"resource": r.format(5000)},
        "coils": {"resources": [r.format(1394), r.format(1395), r.format(1396)]},
    }


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ("heater", None, "needs its [heater] table, with resource; it is missing"),
        ("coils", None, "needs its [coils] table, with resources; it is missing"),
        ("polarimeter", "mount_resource", "needs polarimeter.mount_resource; it is missing"),
    ],
)
def test_a_real_station_must_name_every_role_and_its_resource(table, key, message):
    assert not StationConfig.from_mapping(real_station_mapping()).simulated
    mapping = real_station_mapping()
    if key is None:
        del mapping[table]
    else:
        del mapping[table][key]
    with pytest.raises(ParameterError, match=re.escape(message)):
        StationConfig.from_mapping(mapping)
    # A simulated station may leave every role to its defaults.
    del mapping["station"]
    assert StationConfig.from_mapping(mapping).simulated
