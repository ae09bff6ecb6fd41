"""QCoDeS's `LakeshoreModel336` driver against the served 336, over pyvisa-py.

The stock QCoDeS driver with its defaults (5 s timeout); only the address is ours. Its
``snapshot(update=True)`` reads every parameter of the four inputs and four outputs: INTYPE?,
INCRV?, INNAME?, CRVHDR?, OUTMODE?, PID?, HTRSET?, HTR?, RAMP?, ... — each must be answered, or the
snapshot waits 5 s per unanswered query.

QCoDeS (0.58 and its main branch as fetched) reads ``HTRSET?`` into the five parameters of its
shared Lake Shore base, ``output_type`` first, as the Model 335 answers (output type, resistance,
max current, max user current, display) and sets it with six arguments. The 336 has no output
type: ``HTRSET <output>,<resistance>,<max current>,<max user current>,<current/power>`` and
``HTRSET?`` answers the four fields after the output (Lake Shore's python-driver, model_336.py
``get_heater_setup`` reads ``[0]`` resistance, ``[1]`` max-current preset, ``[2]`` max user current,
``[3]`` display; QCoDeS pull request #8520, open, "The 336's HTRSET has no output_type field").
So QCoDeS's heater-setup group fails to parse on every output — quickly, a parse error and no
timeout. The tests name exactly those parameters so that any other failure shows.
"""

import logging

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.lakeshore336 import SimulatedLakeShore336
from hotspin.simulators.server import SimServer


@pytest.fixture(scope="module")
def qcodes_lakeshore():
    """QCoDeS's Lake Shore drivers, imported by the tests that use them (0.3 s of CPU that every
    test process would otherwise spend collecting this module)."""
    return pytest.importorskip("qcodes.instrument_drivers.Lakeshore")


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
def test_the_whole_session_of_qcodes_lakeshore_model336(served, caplog, qcodes_lakeshore):
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


def test_qcodes_misreads_the_336s_heater_setup_by_one_field(served, qcodes_lakeshore):
    """The values QCoDeS's heater-setup parameters get from the 336's four-field reply."""
    _, address = served
    ls = qcodes_lakeshore.LakeshoreModel336("ls336", address)
    try:
        output = ls.output_1
        # 25 Ω (1), max current user-specified (0), 0.5 A, display in power (2): the 336 form
        ls.write("HTRSET 1,1,0,0.5,2")
        assert ls.ask("HTRSET? 1") == "1,0,+0.500,2"
        assert ls.ask("*ESR?") == "128"  # taken without error
        with pytest.raises(KeyError, match="'0' not in val_mapping"):
            output.heater_group.update()
        cached = {name: output.parameters[name].cache.get(False) for name in HEATER_SETUP_GROUP}
        # QCoDeS zips its five names onto the four fields: the resistance code 1 becomes output
        # type "voltage", the max-current preset 0 is taken for a resistance code and refused.
        assert cached == dict.fromkeys(HEATER_SETUP_GROUP) | {"output_type": "voltage"}
        # Setting one reads the group first to fill in the others, and fails there: nothing sent.
        with pytest.raises(KeyError, match="setting ls336_output_1_output_display"):
            output.output_display("current")
        assert ls.ask("HTRSET? 1;*ESR?") == "1,0,+0.500,2;000"
    finally:
        ls.close()
