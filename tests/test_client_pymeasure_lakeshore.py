"""pymeasure's stock `LakeShore3xx` driver against the served 336, over pyvisa-py.

The stock driver (not hotspin's subclass) with its defaults: pyvisa's CR LF write termination,
its own CR LF read termination, pyvisa's 2 s timeout. Only the resource is ours.
"""

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.lakeshore336 import SimulatedLakeShore336
from hotspin.simulators.server import SimServer
from pymeasure.instruments.lakeshore import LakeShore3xx
from pyvisa.errors import VisaIOError


@pytest.fixture
def served():
    lab = SimulatedLab(clock=SimClock(manual=True))
    with SimServer({"heater": (SimulatedLakeShore336(lab), 0)}) as server:
        yield lab, server.resource("heater")


def test_the_whole_session_of_pymeasures_lakeshore3xx(served):
    lab, resource = served
    controller = LakeShore3xx(resource)
    try:
        assert controller.id.startswith("LSCI,MODEL336,")
        assert controller.status == "000"  # *STB?: nothing to report
        assert controller.complete == "1"  # *OPC?
        assert controller.input_A.kelvin == pytest.approx(lab.oven.temperature_K, abs=1e-3)
        assert controller.input_A.celsius == pytest.approx(
            lab.oven.temperature_K - 273.15, abs=1e-3
        )
        controller.output_1.setpoint = 320.0
        assert controller.output_1.setpoint == 320.0
        controller.output_1.range = "low"
        assert controller.output_1.range == "low"
        controller.output_1.mout = 12.5
        assert controller.output_1.mout == 12.5
        assert controller.output_1.output == 0.0  # the loop has not run yet (manual clock)
        # Invalid: the driver's own validator refuses before anything is sent ...
        with pytest.raises(ValueError, match="extreme"):
            controller.output_1.range = "extreme"
        # ... and an unknown query gets no reply, as on the 336: pyvisa's timeout, then the
        # command-error bit in the ESR.
        with pytest.raises(VisaIOError):
            controller.ask("BOGUS?")
        assert controller.ask("*ESR?") == "160"  # power-on (128) and command error (32)
        controller.clear()  # *CLS
        assert controller.ask("*ESR?") == "000"
    finally:
        controller.adapter.close()
