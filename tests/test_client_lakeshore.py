"""Lake Shore's own Python client (`lakeshore`, Model336 over TCP) against the served 336.

The client is used as shipped, with its defaults; only the host and the port are ours. It ends
every message with LF alone and appends ``;*ESR?`` to every query and setting (python-driver
``temperature_controllers.py``), so this runs the simulator's LF-only framing and its status
register on every exchange.
"""

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.lakeshore336 import SimulatedLakeShore336
from hotspin.simulators.server import SimServer

lakeshore = pytest.importorskip("lakeshore")


@pytest.fixture
def served():
    lab = SimulatedLab(clock=SimClock(manual=True))
    sim = SimulatedLakeShore336(lab)
    with SimServer({"heater": (sim, 0)}) as server:
        yield lab, server.port("heater")


def test_the_whole_session_of_lake_shores_client(served):
    lab, port = served
    controller = lakeshore.Model336(ip_address="127.0.0.1", tcp_port=port)
    try:
        # connect and identify: the client parses *IDN? into model, serial and firmware
        assert controller.model_number == "MODEL336"
        assert controller.serial_number == "SIM0001"
        assert controller.firmware_version == "2.9"
        assert controller.get_self_test() is False  # *TST? 0: no errors found
        # read
        cell_K = lab.oven.temperature_K
        assert controller.get_kelvin_reading("A") == pytest.approx(cell_K, abs=1e-3)
        readings = controller.get_all_kelvin_reading()
        assert readings[0] == pytest.approx(cell_K, abs=1e-3) and readings[2:] == [0.0, 0.0]
        sensor = controller.get_input_sensor("A")
        assert sensor.sensor_type == controller.InputSensorType.PLATINUM_RTD
        assert controller.get_input_curve("A") == 6
        header = controller.get_curve_header(6)
        assert header.curve_name.strip() == "PT-100" and header.temperature_limit == 800.0
        assert controller.get_sensor_name("A").strip() == "Cell"
        # set
        controller.set_control_setpoint(1, 450.0)
        assert controller.get_control_setpoint(1) == 450.0
        assert lab.heater_control is not None
        controller.set_heater_output_mode(1, controller.HeaterOutputMode.ZONE, 1)
        high, input_a = controller.HeaterRange.HIGH, controller.InputChannel.CHANNEL_A
        zone = lakeshore.Model336ControlLoopZoneSettings(
            500.0, 40.0, 25.0, 0.0, 0.0, high, input_a, 0.0
        )
        controller.set_control_loop_zone_table(1, 1, zone)
        got = controller.get_control_loop_zone_table(1, 1)
        assert (got.upper_bound, got.proportional, got.integral) == (500.0, 40.0, 25.0)
        assert got.heater_range == controller.HeaterRange.HIGH
        # an invalid command: the ESR's command-error bit, raised by the client's own check
        with pytest.raises(lakeshore.InstrumentException, match="Command Error"):
            controller.command("BOGUS 1")
        with pytest.raises(lakeshore.InstrumentException, match="Execution Error"):
            controller.set_control_setpoint(1, 1e6)  # beyond any curve
        assert controller.get_control_setpoint(1) == 450.0  # the bad value was not taken
    finally:
        controller.disconnect_tcp()
