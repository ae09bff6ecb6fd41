"""The cell geometry is declared once: the analysis, the simulated lab and the station share it."""

import dataclasses
import math
import textwrap

import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.experiment import (
    ApparatusParameters,
    CellGeometry,
    DEFAULT_BEAM_WAIST_m,
    derive,
)
from hotspin.instruments.station import Station, lab_config_for
from hotspin.instruments.station_config import CellConfig, StationConfig
from hotspin.simulators.lab import LabConfig

HOLDERS = (ApparatusParameters, LabConfig, CellConfig)
GEOMETRY = [f.name for f in dataclasses.fields(CellGeometry)]


def write_station(tmp_path, cell_table: str, lab_table: str = ""):
    """Write a simulated station file with the given [cell] (and [simulation.lab]) lines."""
    path = tmp_path / "station.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [station]
            simulated = true
            [simulation]
            seed = 3
            [simulation.lab]
            """
        )
        + textwrap.dedent(lab_table)
        + "[cell]\n"
        + textwrap.dedent(cell_table)
    )
    return path


@pytest.mark.parametrize("holder", HOLDERS, ids=lambda c: c.__name__)
def test_every_holder_takes_the_one_declaration_of_each_geometry_setting(holder):
    # The very Field objects (name, type, default) of CellGeometry: nothing is re-declared, so
    # changing a default in CellGeometry changes it for the analysis, the lab and the station.
    own = holder.__dataclass_fields__
    for name in GEOMETRY:
        assert own[name] is CellGeometry.__dataclass_fields__[name], name
    assert holder().geometry == CellGeometry()


def test_the_one_default_geometry_is_the_cell_of_the_embedded_station():
    geometry = CellGeometry()
    assert geometry.cell_dimensions_m == (0.03, 0.03, 0.03)
    assert geometry.beam_waist_m == DEFAULT_BEAM_WAIST_m
    assert geometry.beam_area_m2 == math.pi * DEFAULT_BEAM_WAIST_m**2
    # A station file without a [cell] table, the simulated lab it starts and its analysis.
    config = StationConfig.from_mapping({"station": {"simulated": True}})
    assert config.cell.geometry == lab_config_for(config).geometry == geometry
    assert StationConfig.load().cell.geometry == geometry  # the embedded file states them too


@pytest.mark.parametrize(
    "beam", ["beam_waist_m = 2.5e-3", f"beam_area_m2 = {math.pi * 2.5e-3**2!r}"]
)
def test_a_station_files_cell_reaches_the_simulated_lab_and_the_analysis_identically(
    tmp_path, beam
):
    path = write_station(
        tmp_path,
        f"""\
        cell_dimensions_m = [0.02, 0.025, 0.04]
        n2_fill_pressure_Torr = 250.0
        n2_fill_temperature_K = 300.0
        {beam}
        optics_transmission = 0.9
        """,
    )
    expected = CellGeometry(
        cell_dimensions_m=(0.02, 0.025, 0.04),
        n2_fill_pressure_Torr=250.0,
        n2_fill_temperature_K=300.0,
        beam_waist_m=2.5e-3,
    )
    with Station.from_file(path, manual_clock=True) as station:
        assert station.config.cell.geometry == expected
        assert station.lab.config.geometry == expected  # the simulated world's truth
        assert station.apparatus().geometry == expected  # what the analysis fits against
        assert station.lab.apparatus().geometry == expected
        analysed, truth = derive(station.apparatus()), station.lab.truth()
        # The same cell gives the same atom number n π w² L (at the same temperature).
        assert analysed.atom_number / analysed.number_density_m3 == pytest.approx(
            truth.atom_number / truth.number_density_m3, rel=1e-12
        )
        assert truth.atom_number / truth.number_density_m3 == pytest.approx(
            math.pi * 2.5e-3**2 * 0.04, rel=1e-9
        )
        snapshot_cell = station.snapshot()["cell"]
    assert snapshot_cell["beam_waist_m"] == pytest.approx(2.5e-3, rel=1e-12)
    assert snapshot_cell["cell_dimensions_m"] == [0.02, 0.025, 0.04]
    assert snapshot_cell["optics_transmission"] == 0.9


def test_simulation_lab_may_give_the_simulated_beam_its_own_waist(tmp_path):
    # A miscalibrated beam: the station believes 1 mm, the simulated world has 1.5 mm.
    path = write_station(tmp_path, "beam_waist_m = 1.0e-3\n", "beam_waist_m = 1.5e-3\n")
    config = StationConfig.load(path)
    lab = lab_config_for(config)
    assert lab.beam_waist_m == 1.5e-3
    assert lab.beam_area_m2 == pytest.approx(math.pi * 1.5e-3**2, rel=1e-12)
    assert config.cell.beam_waist_m == 1.0e-3
    assert lab.cell_dimensions_m == config.cell.cell_dimensions_m  # the rest from [cell]


@pytest.mark.parametrize(
    ("holder", "where"), [(LabConfig, ""), (CellConfig, "cell."), (ApparatusParameters, "")]
)
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cell_dimensions_m": (0.03, 0.0, 0.03)}, "cell_dimensions_m = [0.03, 0.0, 0.03] must"),
        ({"n2_fill_pressure_Torr": 4000.0}, "n2_fill_pressure_Torr = 4000"),
        ({"n2_fill_temperature_K": -1.0}, "n2_fill_temperature_K = -1"),
        ({"beam_waist_m": 1e-3, "beam_area_m2": 1e-6}, "beam_area_m2 = 1e-06 disagrees with"),
    ],
)
def test_one_set_of_checks_names_the_setting_where_it_was_given(holder, where, changes, message):
    with pytest.raises(ParameterError) as error:
        holder(**changes)
    assert str(error.value).startswith(where + message.split(" = ")[0])
    assert message in str(error.value)


def test_unknown_geometry_keys_are_named():
    with pytest.raises(ParameterError, match=r"lab\.beam_waste_m"):
        LabConfig.from_mapping({"beam_waste_m": 1e-3})
    with pytest.raises(ParameterError, match=r"station file\.cell\.beam_waste_m"):
        StationConfig.from_mapping({"cell": {"beam_waste_m": 1e-3}})
    lab = LabConfig.from_mapping({"cell_dimensions_m": [0.01, 0.01, 0.05], "seed": 2})
    assert lab.cell_dimensions_m == (0.01, 0.01, 0.05) and lab.seed == 2
