"""Writing a run's calibration into the station file: the value set, everything else kept."""

import textwrap
import tomllib

import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.station_config import set_station_value, station_file_text

from hotspin.cli import main

FILE = textwrap.dedent(
    """\
    # my lab
    [station]
    simulated = true

    [coils]   # the shield's coils
    coil_matrix_T_per_A = [[1.0e-4, 0.0, 0.0],
                           [0.0, 1.0e-4, 0.0],
                           [0.0, 0.0, 1.0e-4]]
    zero_field_currents_A = [0.0,
                             0.0, 0.0]   # to be measured
    max_current_A = 0.05

    [polarimeter]
    detector = "PDB450A"
    """
)


def test_a_multiline_value_is_replaced_and_the_rest_kept():
    text = set_station_value(FILE, "coils", "zero_field_currents_A", [1e-5, -2e-5, 3e-6], "run 7")
    assert "zero_field_currents_A = [1e-05, -2e-05, 3e-06]  # run 7\nmax_current_A = 0.05" in text
    assert text.replace("zero_field_currents_A = [1e-05, -2e-05, 3e-06]  # run 7\n", "") == (
        FILE.replace("zero_field_currents_A = [0.0,\n", "").replace(
            "                         0.0, 0.0]   # to be measured\n", ""
        )
    )
    assert tomllib.loads(text)["coils"]["coil_matrix_T_per_A"][2] == [0.0, 0.0, 1e-4]


def test_a_missing_key_or_table_is_added():
    text = set_station_value(FILE, "polarimeter", "plate_zero_deg", 12.3)
    assert tomllib.loads(text)["polarimeter"] == {"plate_zero_deg": 12.3, "detector": "PDB450A"}
    text = set_station_value("[station]\nsimulated = true", "polarimeter", "plate_zero_deg", 1)
    assert tomllib.loads(text)["polarimeter"]["plate_zero_deg"] == 1.0


def test_a_value_the_station_refuses_is_not_written():
    with pytest.raises(ParameterError, match="plate_zero_deg"):
        set_station_value(FILE, "polarimeter", "plate_zero_deg", 1000.0)


def test_balance_saves_the_plate_angle_into_the_station_file(tmp_path, capsys):
    station = tmp_path / "lab.toml"
    station.write_text(station_file_text(None))
    before = tomllib.loads(station.read_text())
    out = tmp_path / "balance.h5"
    args = ["run", "balance", "--station", str(station), "--out", str(out), "--save-calibration",
            "--set", "fine_points=3", "--set", "samples=1024"]  # fmt: skip
    assert main(args) == 0
    after = tomllib.loads(station.read_text())
    # The simulated plate balances at hwp_zero_deg (12.3°, which the station did not know).
    assert after["polarimeter"].pop("plate_zero_deg") == pytest.approx(12.3, abs=0.01)
    assert before["polarimeter"].pop("plate_zero_deg") == 10.0
    assert after == before
    assert f"plate_zero_deg = 12.3  # from balance {out}" in station.read_text()
    assert "station file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "balance", "--save-calibration"], "needs --station FILE"),
        (["run", "warmup", "--save-calibration"], "warmup calibrates nothing"),
    ],
)
def test_save_calibration_is_refused_where_it_means_nothing(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err
