"""Toptica DLC pro: the driver's exchanges, and the driver against the simulated controller.

Protocol sources, cited per test: toptica-lasersdk 3.3.0 (``asyncio/connection.py``: welcome
purged up to ``"\\n> "``, replies read up to ``"\\n> "`` with an optional ``"\\r"``;
``asyncio/client.py``: request formats, ``param-set!`` status; ``decop.py``: value encoding and
``Error`` replies; ``dlcpro/v2_4_0.py``: parameter names). Replies are written here with their
line end and the prompt as a separate read, exactly the bytes on the wire.
"""

import datetime
import math
import re
import socket

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentCommandError, InstrumentTimeoutError
from hotspin.instruments.toptica_dlcpro import DLCpro
from hotspin.simulators.clock import SimClock
from hotspin.simulators.decop_monitoring import MonitoringLineServer, Subscription
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import PortInUseError, SimServer
from hotspin.simulators.toptica_dlcpro import TEC_TIME_CONSTANT_S, SimulatedDLCpro
from pymeasure.test import expected_protocol

# The SDK's NetworkConnection.open() reads the welcome up to the first "\n> " and discards it.
WELCOME = [(None, "DeCoF Command Line\n"), (None, "> ")]


def exchange(request, *lines):
    """The pairs of one request and its reply lines, each with its "\\n", then the prompt."""
    pairs = [(request, lines[0] + "\n")] + [(None, line + "\n") for line in lines[1:]]
    return [*pairs, (None, "> ")]


def limited(*pairs):
    """A DLCpro with a station current limit of 150 mA (no query of current-clip)."""
    return expected_protocol(DLCpro, WELCOME + list(pairs), current_limit_A=0.150)


# --- protocol ------------------------------------------------------------------------------------
def test_connecting_reads_the_welcome_and_the_current_clip():
    """Welcome purge (SDK connection.py); without a station limit the clip is the limit."""
    pairs = WELCOME + exchange("(param-ref 'laser1:dl:cc:current-clip)", "150.0")
    with expected_protocol(DLCpro, pairs) as dlc:
        assert dlc.current_limit_A == pytest.approx(0.150)


def test_a_long_welcome_with_empty_lines_is_discarded():
    """The welcome text of a DLC pro 1.3.1 (qtlab Toptica_DLpro docstring) spans several lines."""
    welcome = [
        (None, "*smiley *heart* DLCpro firmware, version 1.3.1\n"),
        (None, "SN: DLC PRO_020295\n"),
        (None, "uptime: 123:45:06\n"),
        (None, "\n"),
        (None, "DeCoF Command Line\n"),
        (None, "> "),
    ]
    with expected_protocol(DLCpro, welcome, current_limit_A=0.150) as dlc:
        assert dlc.current_limit_A == 0.150


def test_current_setpoint_is_sent_in_mA():
    """SDK client.set: "(param-set! '<name> <value>)", answered by the status 0."""
    with limited(
        *exchange("(param-set! 'laser1:dl:cc:current-set 120)", "0"),
        *exchange("(param-ref 'laser1:dl:cc:current-set)", "120.0"),
    ) as dlc:
        dlc.current_setpoint_A = 0.120
        assert dlc.current_setpoint_A == pytest.approx(0.120)


def test_actual_current_and_clip_are_read_in_A():
    """SDK client.get: "(param-ref '<name>)", the value line, the prompt."""
    with limited(
        *exchange("(param-ref 'laser1:dl:cc:current-act)", "98.9962"),
        *exchange("(param-ref 'laser1:dl:cc:current-clip)", "180.0"),
    ) as dlc:
        assert dlc.current_A == pytest.approx(0.0989962)
        assert dlc.current_clip_A == pytest.approx(0.180)


def test_emission_switch_and_safety_states_are_booleans():
    """decop.encode_value/decode_value: booleans are #t and #f; names from dlcpro/v2_4_0.py."""
    with limited(
        *exchange("(param-set! 'laser1:dl:cc:enabled #t)", "0"),
        *exchange("(param-ref 'laser1:dl:cc:enabled)", "#t"),
        *exchange("(param-ref 'emission)", "#f"),
        *exchange("(param-ref 'interlock-open)", "#t"),
        *exchange("(param-ref 'frontkey-locked)", "#f"),
        *exchange("(param-ref 'emission-button-enabled)", "#t"),
    ) as dlc:
        dlc.emission_enabled = True
        assert dlc.emission_enabled is True
        assert dlc.emission is False
        assert dlc.interlock_open is True
        assert dlc.frontkey_locked is False
        assert dlc.emission_button_enabled is True


def test_temperature_and_piezo_are_in_the_instruments_units():
    """laser1:dl:tc:temp-set/temp-act in °C, laser1:dl:pc:voltage-set in V (dlcpro/v2_4_0.py)."""
    with limited(
        *exchange("(param-set! 'laser1:dl:tc:temp-set 21.5)", "0"),
        *exchange("(param-ref 'laser1:dl:tc:temp-act)", "21.4998"),
        *exchange("(param-set! 'laser1:dl:pc:voltage-set 70.5)", "0"),
        *exchange("(param-ref 'laser1:dl:pc:voltage-set)", "70.5"),
    ) as dlc:
        dlc.temperature_setpoint_C = 21.5
        assert dlc.temperature_C == pytest.approx(21.4998)
        dlc.piezo_voltage_V = 70.5
        assert dlc.piezo_voltage_V == 70.5


def test_identity_strings_are_unquoted():
    """There is no *IDN?; system-type, serial-number and fw-ver are quoted strings."""
    with limited(
        *exchange("(param-ref 'system-type)", '"DLCpro"'),
        *exchange("(param-ref 'serial-number)", '"DLC PRO_020295"'),
        *exchange("(param-ref 'fw-ver)", '"2.4.0"'),
    ) as dlc:
        assert dlc.system_type == "DLCpro"
        assert dlc.serial_number == "DLC PRO_020295"
        assert dlc.firmware_version == "2.4.0"


def test_an_echoed_request_and_crlf_line_ends_are_tolerated():
    """The serial line echoes the request (InstrumentKit TopMode tests); "\\r\\n" (SDK tests)."""
    with limited(
        (
            "(param-ref 'laser1:dl:cc:current-act)",
            "(param-ref 'laser1:dl:cc:current-act)\r\n",
        ),
        (None, "98.9962\r\n"),
        (None, "> "),
    ) as dlc:
        assert dlc.current_A == pytest.approx(0.0989962)


def test_an_error_reply_raises_with_its_code():
    """decop.decode_value raises on a reply starting with "Error"; the code, negative on the
    device ("Error: -7 lockpoint not found", toptica/python-lasersdk issue 3), is kept."""
    with (
        limited(
            *exchange("(param-ref 'laser1:dl:cc:current-sett)", "Error: -4 invalid parameter")
        ) as dlc,
        pytest.raises(InstrumentCommandError, match="invalid parameter") as error,
    ):
        dlc.parameter("laser1:dl:cc:current-sett")
    assert error.value.code == -4


def test_a_negative_set_status_raises_with_its_code():
    """SDK client.set: a status below zero means the setting was refused."""
    with (
        limited(*exchange("(param-set! 'laser1:dl:tc:temp-set 40)", "-6")) as dlc,
        pytest.raises(InstrumentCommandError, match="status -6") as error,
    ):
        dlc.temperature_setpoint_C = 40.0
    assert error.value.code == -6


def test_a_current_above_the_limit_is_refused_before_sending():
    """Nothing but the welcome is exchanged: the protocol would fail on any request."""
    with limited() as dlc, pytest.raises(ParameterError) as error:
        dlc.current_setpoint_A = 0.2
    assert "current_setpoint_A = 0.2" in str(error.value)
    assert "[0, 0.15] A" in str(error.value)


def test_a_negative_current_and_a_wild_piezo_voltage_are_refused_before_sending():
    with limited() as dlc:
        with pytest.raises(ParameterError, match=r"current_setpoint_A = -0\.01"):
            dlc.current_setpoint_A = -0.01
        with pytest.raises(ParameterError, match=r"piezo_voltage_V = 200 .*\[-1, 140\] V"):
            dlc.piezo_voltage_V = 200


# --- the driver against the simulated controller -------------------------------------------------
@pytest.fixture
def lab():
    return SimulatedLab(clock=SimClock(manual=True))


@pytest.fixture(params=["inprocess", "tcp"])
def connected(request, lab):
    """The real driver on the simulated DLC pro, in-process and over TCP through pyvisa-py."""
    sim = SimulatedDLCpro(lab)
    if request.param == "inprocess":
        yield DLCpro(InProcessAdapter(sim)), sim
        return
    with SimServer({"dlcpro": (sim, 0)}) as server:
        dlc = DLCpro(server.resource("dlcpro"))
        yield dlc, sim
        dlc.adapter.close()


def test_driver_identifies_the_simulated_controller(connected):
    dlc, sim = connected
    assert dlc.system_type == "DLCpro"
    assert dlc.serial_number == sim.serial_number
    assert dlc.firmware_version == "2.4.0"
    # The limit came from the controller's current-clip: the head's maximum current.
    assert dlc.current_limit_A == pytest.approx(sim.lab.laser.config.max_current_A)


def test_current_temperature_and_piezo_reach_the_laser(connected, lab):
    dlc, _ = connected
    dlc.current_setpoint_A = 0.1234
    dlc.piezo_voltage_V = 4.0
    assert dlc.current_setpoint_A == pytest.approx(0.1234)
    assert lab.laser.current_A == pytest.approx(0.1234)
    assert lab.laser.piezo_V == pytest.approx(4.0)
    assert dlc.piezo_voltage_V == pytest.approx(4.0)
    dlc.emission_enabled = True
    assert dlc.emission is True
    assert dlc.current_A == pytest.approx(0.1234)


def test_invalid_requests_get_decop_errors(connected):
    dlc, _ = connected
    with pytest.raises(InstrumentCommandError) as unknown:
        dlc.parameter("laser1:dl:cc:no-such-thing")
    assert unknown.value.code == -4
    with pytest.raises(InstrumentCommandError) as read_only:
        dlc.set_parameter("laser1:dl:cc:current-act", 100.0)
    assert read_only.value.code == -3
    with pytest.raises(InstrumentCommandError) as malformed:
        dlc.ask("(param-ref 'emission")
    assert malformed.value.code == -2
    with pytest.raises(InstrumentCommandError) as unknown_operation:
        dlc.ask("(frobnicate 'emission)")
    assert unknown_operation.value.code == -7
    with pytest.raises(InstrumentCommandError) as wrong_type:
        dlc.set_parameter("laser1:dl:cc:enabled", 3)
    assert wrong_type.value.code == -5
    # A value the head does not accept, sent around the driver's own guard, is refused.
    with pytest.raises(InstrumentCommandError, match="status -6") as out_of_range:
        dlc.set_parameter("laser1:dl:tc:temp-set", 40.0)
    assert out_of_range.value.code == -6
    assert dlc.temperature_setpoint_C == pytest.approx(22.0)  # unchanged


def test_the_driver_still_reads_values_with_echo_switched_on(connected):
    dlc, sim = connected
    dlc.set_parameter("echo", True)
    assert sim.echo is True
    dlc.current_setpoint_A = 0.110
    assert dlc.current_setpoint_A == pytest.approx(0.110)


def test_no_emission_with_the_interlock_open(lab):
    dlc = DLCpro(InProcessAdapter(SimulatedDLCpro(lab)))
    lab.laser.interlock_closed = False
    dlc.emission_enabled = True
    assert dlc.interlock_open is True
    assert dlc.emission is False
    assert dlc.current_A == 0.0
    assert lab.laser.output_power_W == 0.0
    lab.laser.interlock_closed = True
    assert dlc.interlock_open is False
    assert dlc.emission is True
    assert lab.laser.output_power_W > 0.0


def test_no_emission_with_the_key_switch_locked(lab):
    sim = SimulatedDLCpro(lab)
    dlc = DLCpro(InProcessAdapter(sim))
    sim.frontkey_locked = True
    dlc.emission_enabled = True
    assert dlc.frontkey_locked is True
    assert dlc.emission is False
    assert lab.laser.output_power_W == 0.0


def test_power_and_detuning_follow_the_current_with_mode_hops(lab):
    """Inside the mode-hop-free window the frequency tunes with the cavity; outside it hops."""
    dlc = DLCpro(InProcessAdapter(SimulatedDLCpro(lab)))
    config = lab.laser.config
    dlc.emission_enabled = True
    currents_A = np.round(np.arange(0.060, 0.1801, 0.001), 6)
    detunings, powers, modes = [], [], []
    for current in currents_A:
        dlc.current_setpoint_A = float(current)
        detunings.append(lab.laser.detuning_Hz)
        powers.append(lab.laser.output_power_W)
        modes.append(lab.laser.mode_index)
    steps = np.diff(detunings)
    hops = np.diff(modes) != 0
    in_window = config.cavity_current_tuning_Hz_per_A * 1e-3
    assert hops.sum() >= 2  # the window is ±50 mA wide: a 120 mA sweep leaves it twice
    np.testing.assert_allclose(steps[~hops], in_window, rtol=1e-6)
    np.testing.assert_allclose(
        steps[hops], in_window + np.diff(modes)[hops] * config.free_spectral_range_Hz, rtol=1e-6
    )
    np.testing.assert_allclose(np.diff(powers), config.slope_efficiency_W_per_A * 1e-3, rtol=1e-6)


def test_temperature_approaches_the_setpoint_with_the_tec_time_constant(lab):
    dlc = DLCpro(InProcessAdapter(SimulatedDLCpro(lab)))
    dlc.temperature_setpoint_C = 23.0
    assert dlc.temperature_C == pytest.approx(22.0)
    lab.clock.advance(TEC_TIME_CONSTANT_S)
    assert dlc.temperature_C == pytest.approx(23.0 - math.exp(-1.0))
    lab.clock.advance(20 * TEC_TIME_CONSTANT_S)
    assert dlc.temperature_C == pytest.approx(23.0, abs=1e-6)
    assert lab.laser.temperature_C == pytest.approx(23.0, abs=1e-6)


def test_a_request_left_unanswered_is_a_timeout(lab):
    dlc = DLCpro(InProcessAdapter(SimulatedDLCpro(lab)))
    with pytest.raises(InstrumentTimeoutError):
        dlc.read()


# --- the simulated controller's command line and monitoring line ---------------------------------
def command_line(sim):
    """A session on the simulated command line, past the welcome; returns a request function."""
    session = sim.open_session()
    assert session.greeting().endswith(b"DeCoF Command Line\r\n> ")  # CR LF lines (QMI dlc.py)

    def request(line):
        reply = session.feed(line.encode() + b"\n")
        assert reply.endswith(b"\n> ")
        return reply[: -len(b"\n> ")].decode()

    return request


def test_get_set_value_display_and_identity_parameters(lab):
    request = command_line(SimulatedDLCpro(lab))
    assert request("(param-set! 'laser1:dl:cc:current-set 101.5)") == "0"
    assert request("(param-gsv 'laser1:dl:cc:current-set)") == "101.5"
    assert request("(param-disp 'laser1:dl:cc:current-set)") == "laser1:dl:cc:current-set = 101.5"
    node = request("(param-disp 'laser1:dl:tc)").split("\n")
    assert "laser1:dl:tc:temp-set = 22.0" in node
    assert all(line.startswith("laser1:dl:tc:") for line in node)
    assert request("(param-ref 'laser1:product-name)") == '"DL pro 795"'
    assert request("(param-ref 'system-health)") == "0"
    assert request("(param-ref 'system-health-txt)") == '"OK"'
    assert request("(param-disp 'laser9)") == "Error: -4 invalid parameter"
    assert request("(param-gsv 'emission #t)") == "Error: -2 parse error"


def test_system_health_reports_an_unsettled_tec(lab):
    request = command_line(SimulatedDLCpro(lab))
    assert request("(param-set! 'laser1:dl:tc:temp-set 25)") == "0"
    assert request("(param-ref 'system-health)") == "2"  # bit 1: temperature control
    lab.clock.advance(30 * TEC_TIME_CONSTANT_S)
    assert request("(param-ref 'system-health)") == "0"


def test_exec_change_ul_and_system_summary(lab):
    request = command_line(SimulatedDLCpro(lab))
    assert request('(exec \'change-ul 4 "")') == "4"  # read-only
    assert request('(param-set! \'system-label "x")') == "Error: -3 access denied"
    assert request('(exec \'change-ul 1 "guess")') == "4"  # a wrong password keeps the level
    assert request('(exec \'change-ul 3 "")') == "3"
    assert request("(param-ref 'ul)") == "3"
    summary = request("(exec 'system-summary)").split("\n")
    assert summary[-1] == "()"  # the return value line: none
    assert summary[0].startswith("System type: DLCpro")
    assert request("(exec 'emission)") == "Error: -7 unknown operation"
    assert request("(exec 'no-such-command)") == "Error: -4 invalid parameter"


MONITOR_UPDATE = re.compile(
    r"^\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) '(?P<name>[^ ]+) (?P<value>.*)\)$"
)


@pytest.fixture
def monitoring(lab):
    """A socket on the simulated monitoring line, and a function reading its next line."""
    sim = SimulatedDLCpro(lab)
    with (
        MonitoringLineServer(sim, 0) as line,
        socket.create_connection(("127.0.0.1", line.port), timeout=5) as link,
    ):
        stream = link.makefile("rb")
        yield sim, link, lambda: stream.readline().decode()


def test_the_monitoring_line_sends_the_value_then_its_changes(monitoring, lab):
    sim, link, next_line = monitoring
    link.sendall(b"(add 'laser1:dl:cc:current-set 10)\n")
    first = MONITOR_UPDATE.match(next_line().rstrip("\n"))
    assert first is not None
    assert (first["name"], first["value"]) == ("laser1:dl:cc:current-set", "120.0")
    datetime.datetime.strptime(first[1], "%Y-%m-%dT%H:%M:%S.%fZ")  # the SDK's format
    request = command_line(sim)
    assert request("(param-set! 'laser1:dl:cc:current-set 111)") == "0"
    assert MONITOR_UPDATE.match(next_line().rstrip("\n"))["value"] == "111.0"
    link.sendall(b"(remove 'laser1:dl:cc:current-set)\n(add 'emission)\n")
    request("(param-set! 'laser1:dl:cc:current-set 112)")
    assert MONITOR_UPDATE.match(next_line().rstrip("\n"))["name"] == "emission"


def test_the_monitoring_line_answers_an_unknown_parameter_with_an_error(monitoring):
    _, link, next_line = monitoring
    link.sendall(b"(add 'laser1:no-such-thing)\n")
    assert re.fullmatch(
        r"\(Error: -4 \(\S+Z 'laser1:no-such-thing\) invalid parameter\)\n", next_line()
    )


def test_a_threshold_holds_back_small_changes():
    update = Subscription("laser1:dl:cc:current-act", 0.1, threshold=5.0, last_text="120.0")
    assert not update.changed("124.9")
    assert update.changed("125.0")
    assert Subscription("x", 0.1, None, last_text='"a"').changed('"b"')


def test_an_occupied_monitoring_port_is_named(lab):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"laser monitoring line .*:{port}: Address"):
            MonitoringLineServer(SimulatedDLCpro(lab, "laser"), port).start()
