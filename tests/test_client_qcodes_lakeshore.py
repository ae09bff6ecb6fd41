"""QCoDeS's `LakeshoreModel336` driver against the served 336, over pyvisa-py.

The stock QCoDeS driver with its defaults (5 s timeout); only the address is ours. Its
``snapshot(update=True)`` reads every parameter of the four inputs and four outputs: INTYPE?,
INCRV?, INNAME?, CRVHDR?, OUTMODE?, PID?, HTRSET?, HTR?, RAMP?, ... — each must be answered, or the
snapshot waits 5 s per unanswered query.

QCoDeS parses ``HTRSET?`` with the Model 335's six fields (its shared Lake Shore base); the 336
answers five (Lake Shore's python-driver, model_336.py get_heater_setup), so QCoDeS's heater-setup
group fails to parse on every output — quickly, a parse error and no timeout. The test names
exactly those parameters so that any other failure shows.
"""

import logging

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.lakeshore336 import SimulatedLakeShore336
from hotspin.simulators.server import SimServer

qcodes_lakeshore = pytest.importorskip("qcodes.instrument_drivers.Lakeshore")

HEATER_SETUP_GROUP = {
    "output_type",
    "output_heater_resistance",
    "output_max_current",
    "output_max_user_current",
    "output_display",
}


@pytest.fixture
def served():
    lab = SimulatedLab(clock=SimClock(manual=True))
    with SimServer({"heater": (SimulatedLakeShore336(lab), 0)}) as server:
        yield lab, server.resource("heater")


@pytest.mark.timeout(60)  # 181 s when INTYPE?, INCRV?, INNAME? and CRVHDR? were not answered
def test_the_whole_session_of_qcodes_lakeshore_model336(served, caplog):
    lab, address = served
    ls = qcodes_lakeshore.LakeshoreModel336("ls336", address)
    try:
        assert ls.IDN()["model"] == "336"
        with caplog.at_level(logging.WARNING, logger="qcodes"):
            snapshot = ls.snapshot(update=True)
        failed = {
            record.getMessage().rsplit(": ", 1)[-1]
            for record in caplog.records
            if "Could not update parameter" in record.getMessage()
        }
        assert failed == HEATER_SETUP_GROUP
        a = snapshot["submodules"]["A"]["parameters"]
        assert a["temperature"]["value"] == pytest.approx(lab.oven.temperature_K, abs=1e-3)
        assert a["sensor_type"]["value"] == "platinum_rtd"
        assert a["curve_number"]["value"] == 6
        assert a["curve_name"]["value"].strip() == "PT-100"
        assert a["curve_format"]["value"] == "Ohms/K"
        assert a["sensor_name"]["value"] == "Cell".ljust(15)
        c = snapshot["submodules"]["C"]["parameters"]
        assert c["sensor_type"]["value"] == "disabled"
        assert c["sensor_status"]["value"] == "Invalid Reading"
        # set
        ls.output_1.setpoint(320.0)
        assert ls.output_1.setpoint() == 320.0
        ls.output_1.output_range("low")
        assert ls.output_1.output_range() == "low"
        ls.output_1.mode("zone")  # the 336's zone mode, refused by the simulator before
        assert ls.output_1.mode() == "zone"
        ls.A.sensor_name("Rb cell, oven 1")  # QCoDeS takes 15 characters at least
        assert ls.A.sensor_name() == "Rb cell, oven 1"
        # invalid: QCoDeS's own validator refuses before anything is sent
        with pytest.raises(ValueError, match="setpoint"):
            ls.output_1.setpoint(1e6)
        assert ls.ask("*ESR?") == "128"  # power-on only: no command reached the 336 in error
    finally:
        ls.close()
