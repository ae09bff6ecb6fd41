"""The station file's `driver =` chooses the driver class from a registry (entry points too)."""

import sys

import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.drivers import known_drivers
from hotspin.instruments.lakeshore336 import LakeShore336
from hotspin.instruments.station import Station
from hotspin.instruments.station_config import StationConfig, station_file_text

THIRD_PARTY = '''
from hotspin.instruments.lakeshore336 import LakeShore336


class CountingLakeShore(LakeShore336):
    """A third party's Lake Shore driver: the stock one, counting its constructions."""

    built = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1
        super().__init__(*args, **kwargs)
'''


def station_with(tmp_path, old, new):
    path = tmp_path / "station.toml"
    text = station_file_text(None)
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_an_unknown_driver_is_refused_naming_the_known_ones(tmp_path):
    path = station_with(tmp_path, 'driver = "lakeshore336"', 'driver = "nonsense"')
    config = StationConfig.load(path)
    with pytest.raises(ParameterError) as refused:
        Station(config)
    message = str(refused.value)
    assert "heater.driver = 'nonsense' is not a known driver" in message
    assert "lakeshore336" in message and "keithley6221" in message


@pytest.fixture
def third_party_package(tmp_path, monkeypatch):
    """A package on sys.path that registers a driver through the `hotspin.drivers` group."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "labdrivers.py").write_text(THIRD_PARTY)
    info = root / "labdrivers-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labdrivers\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[hotspin.drivers]\ncounting-lakeshore = labdrivers:CountingLakeShore\n"
    )
    monkeypatch.syspath_prepend(str(root))
    yield
    sys.modules.pop("labdrivers", None)


def test_a_registered_third_party_driver_is_used(tmp_path, third_party_package):
    assert "counting-lakeshore" in known_drivers()
    path = station_with(tmp_path, 'driver = "lakeshore336"', 'driver = "counting-lakeshore"')
    with Station(StationConfig.load(path)) as station:
        driver = station.links["heater"].driver
        assert type(driver).__name__ == "CountingLakeShore"
        assert isinstance(driver, LakeShore336)
        assert station.heater.temperature_K == pytest.approx(295.0, abs=1.0)
    assert sys.modules["labdrivers"].CountingLakeShore.built == 1
