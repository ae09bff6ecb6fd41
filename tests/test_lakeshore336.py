"""Lake Shore 336 driver (exact exchanges) and the simulated 336 on the cell oven.

Command forms and reply formats are those of the Lake Shore Model 336 User's Manual, chapter 6
(Computer Interface Operation), cited by command name; each message carries ``;*ESR?`` as
Lake Shore's own Python driver sends it (``temperature_controllers.py``: query, command).
"""

import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentCommandError, InstrumentTimeoutError
from hotspin.instruments.lakeshore336 import (
    HeaterStatus,
    LakeShore336,
    ReadingStatus,
    StandardEvent,
)
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.lakeshore336 import SimulatedLakeShore336, pt100_resistance_ohm
from hotspin.simulators.server import SimServer
from pymeasure.test import expected_protocol

# --- the driver against the manual's exchanges ------------------------------------------------


def test_identification_and_status_registers():
    """*IDN? → LSCI,MODEL336,<serial>/<option serial>,<firmware>; *ESR? and *STB? → bit sums
    (manual: *IDN?, *ESR?, *STB?). *ESR? itself is sent without a trailing *ESR?."""
    with expected_protocol(
        LakeShore336,
        [
            ("*IDN?;*ESR?", "LSCI,MODEL336,LSA1234/#######,2.9;000"),
            ("*ESR?", "036"),
            ("*STB?;*ESR?", "032;000"),
        ],
    ) as ls:
        assert ls.id == "LSCI,MODEL336,LSA1234/#######,2.9"
        assert ls.event_status == StandardEvent.COMMAND_ERROR | StandardEvent.QUERY_ERROR
        assert ls.status == 32


def test_readings_and_reading_status():
    """KRDG?/CRDG?/SRDG? <input> → ±nnnnnn; KRDG? 0 → all four; RDGST? → nnn bit sum
    (manual: KRDG?, CRDG?, SRDG?, RDGST?)."""
    with expected_protocol(
        LakeShore336,
        [
            ("KRDG? A;*ESR?", "+450.000;000"),
            ("CRDG? A;*ESR?", "+176.850;000"),
            ("SRDG? A;*ESR?", "+169.385;000"),
            ("KRDG? 0;*ESR?", "+450.000,+295.000,+000.000,+000.000;000"),
            ("RDGST? C;*ESR?", "001;000"),
            ("RDGST? A;*ESR?", "032;000"),
        ],
    ) as ls:
        assert ls.input_A.kelvin == 450.0
        assert ls.input_A.celsius == 176.85
        assert ls.input_A.sensor == 169.385
        assert ls.values("KRDG? 0") == [450.0, 295.0, 0.0, 0.0]
        assert ls.input_C.reading_status == ReadingStatus.INVALID_READING
        assert ls.input_A.reading_status == ReadingStatus.TEMPERATURE_OVERRANGE


def test_control_loop_settings():
    """SETP <out>,<value>; RANGE <out>,<0-3>; PID <out>,<P>,<I>,<D>; MOUT <out>,<%>;
    RAMP <out>,<off/on>,<rate>; RAMPST?; HTR? (manual: SETP, RANGE, PID, MOUT, RAMP, RAMPST?,
    HTR?)."""
    with expected_protocol(
        LakeShore336,
        [
            ("SETP 1,450;*ESR?", "000"),
            ("SETP? 1;*ESR?", "+450.000;000"),
            ("RANGE 1,3;*ESR?", "000"),
            ("RANGE? 1;*ESR?", "3;000"),
            ("PID 1,50,20,0;*ESR?", "000"),
            ("PID? 1;*ESR?", "+50.0,+20.0,+0;000"),
            ("MOUT 1,12.5;*ESR?", "000"),
            ("MOUT? 1;*ESR?", "+12.50;000"),
            ("RAMP 1,1,10;*ESR?", "000"),
            ("RAMP? 1;*ESR?", "1,+10.0;000"),
            ("RAMPST? 1;*ESR?", "1;000"),
            ("HTR? 1;*ESR?", "+55.68;000"),
        ],
    ) as ls:
        out = ls.output_1
        out.setpoint = 450
        assert out.setpoint == 450.0
        out.range = "high"
        assert out.range == "high"
        out.pid = (50, 20, 0)
        assert out.pid == [50.0, 20.0, 0.0]
        out.mout = 12.5
        assert out.mout == 12.5
        out.configure_ramp(True, 10)
        assert out.ramp == [1.0, 10.0]
        assert out.ramping is True
        assert out.output == 55.68


def test_output_mode_heater_setup_and_limits():
    """OUTMODE <out>,<mode>,<input>,<powerup enable>; HTRSET in the 336's form
    <out>,<resistance>,<max current>,<max user current>,<current/power>; TLIMIT <input>,<K>;
    HTRST? → 0/1/2 (manual: OUTMODE, HTRSET, TLIMIT, HTRST?)."""
    with expected_protocol(
        LakeShore336,
        [
            ("OUTMODE 1,1,1,0;*ESR?", "000"),
            ("OUTMODE? 1;*ESR?", "1,1,0;000"),
            ("HTRSET 1,2,0,1,1;*ESR?", "000"),
            ("HTRSET? 1;*ESR?", "2,0,+1.000,1;000"),
            ("TLIMIT A,500;*ESR?", "000"),
            ("TLIMIT? A;*ESR?", "+500.000;000"),
            ("HTRST? 1;*ESR?", "1;000"),
        ],
    ) as ls:
        ls.output_1.set_output_mode("closed_loop", "A", powerup_enable=False)
        assert ls.output_1.output_mode == [1, 1, 0]
        ls.output_1.setup_heater(50, 1.0, "current")
        assert ls.output_1.heater_setup == [2.0, 0.0, 1.0, 1.0]
        ls.input_A.temperature_limit_K = 500
        assert ls.input_A.temperature_limit_K == 500.0
        assert ls.output_1.heater_status == HeaterStatus.OPEN_LOAD


def test_all_heaters_off_is_one_chained_message():
    """The front panel's All Off as one message (Lake Shore driver ``all_heaters_off``)."""
    with expected_protocol(
        LakeShore336, [("RANGE 1,0;RANGE 2,0;RANGE 3,0;RANGE 4,0;*ESR?", "000")]
    ) as ls:
        ls.all_heaters_off()


def test_error_bits_in_the_esr_raise_a_command_error():
    """ESR bit 5 (32) = command error, bit 4 (16) = execution error (manual: *ESR?)."""
    with expected_protocol(
        LakeShore336, [("SETP 1,450;*ESR?", "032"), ("KRDG? E;*ESR?", "016")]
    ) as ls:
        with pytest.raises(InstrumentCommandError, match="command error") as error:
            ls.output_1.setpoint = 450
        assert error.value.code == 32
        with pytest.raises(InstrumentCommandError, match="execution error") as error:
            ls.ask("KRDG? E")
        assert error.value.code == 16


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda ls: setattr(ls.output_1, "setpoint", 2000), r"setpoint = 2000 .*\[0, 1500\] K"),
        (lambda ls: setattr(ls.output_1, "pid", (0, 20, 0)), r"P = 0 .*\[0\.1, 1000\]"),
        (lambda ls: setattr(ls.output_1, "pid", (50, 20, 250)), r"D = 250 .*\[0, 200\] %"),
        (lambda ls: ls.output_1.configure_ramp(True, 200), r"ramp_rate_K_per_min = 200 .*100"),
        (lambda ls: setattr(ls.output_1, "range", "max"), r"heater_range = 'max' is not one"),
        (lambda ls: setattr(ls.output_1, "mout", 150), r"manual_output = 150 .*\[0, 100\] %"),
        (lambda ls: setattr(ls.input_A, "temperature_limit_K", -5), r"temperature_limit_K = -5"),
        (lambda ls: ls.output_1.setup_heater(50, 1.5), r"max_current_A = 1\.5 .*1\.41421\] A"),
        (lambda ls: ls.output_2.setup_heater(50, 1.2), r"max_current_A = 1\.2 .*\(0, 1\] A"),
        (lambda ls: ls.output_3.setup_heater(50, 0.5), r"heater output = 3 is not one of \[1, 2\]"),
        (lambda ls: ls.output_1.set_output_mode("pid", "A"), r"output_mode = 'pid'"),
    ],
)
def test_bad_values_are_refused_before_anything_is_sent(action, message):
    with expected_protocol(LakeShore336, []) as ls, pytest.raises(ParameterError, match=message):
        action(ls)


# --- the simulated 336 ------------------------------------------------------------------------


@pytest.fixture
def lab():
    return SimulatedLab(clock=SimClock(manual=True))


@pytest.fixture
def sim(lab):
    return SimulatedLakeShore336(lab)


@pytest.fixture(params=["in-process", "tcp"])
def ls(request, sim):
    """The real driver connected to the simulator, in-process or over TCP with pyvisa-py."""
    if request.param == "in-process":
        yield LakeShore336(InProcessAdapter(sim))
        return
    with SimServer({"ls336": (sim, 0)}) as server:
        driver = LakeShore336(server.resource("ls336"), timeout=2000)
        yield driver
        driver.adapter.close()


def heat(ls, setpoint_K=450.0):
    """Configure output 1 as a 336 user would for the cell: 50 Ω heater, PID on input A."""
    out = ls.output_1
    out.setup_heater(50, 1.0)
    out.set_output_mode("closed_loop", "A")
    out.pid = (50, 20, 0)
    out.setpoint = setpoint_K
    out.range = "high"
    return out


def test_driver_talks_to_the_simulator(ls, lab):
    assert ls.id.startswith("LSCI,MODEL336,")
    assert ls.input_A.kelvin == pytest.approx(lab.cell_temperature_K, abs=1e-3)
    assert ls.input_A.celsius == pytest.approx(lab.cell_temperature_K - 273.15, abs=1e-3)
    assert ls.input_A.sensor == pytest.approx(pt100_resistance_ohm(lab.cell_temperature_K), 1e-5)
    assert ls.input_A.reading_status == ReadingStatus(0)
    assert ls.input_D.reading_status == ReadingStatus.INVALID_READING
    out = heat(ls, 420.0)
    assert (out.setpoint, out.range, out.pid) == (420.0, "high", [50.0, 20.0, 0.0])
    assert out.output_mode == [1, 1, 0]
    assert out.heater_setup == [2.0, 0.0, 1.0, 1.0]
    out.configure_ramp(True, 5)
    assert out.ramp == [1.0, 5.0]
    ls.input_A.temperature_limit_K = 500
    assert ls.input_A.temperature_limit_K == 500.0
    assert ls.output_3.range == "off"


def test_invalid_command_gets_no_reply_and_sets_the_command_error_bit(ls, sim):
    """The real 336 drops an invalid command and sets ESR bit 5; the driver raises."""
    assert ls.event_status == StandardEvent.POWER_ON  # the first read after power-up
    with pytest.raises(InstrumentCommandError, match="command error") as error:
        ls.write("HEAT 1,100")
    assert error.value.code == 32
    with pytest.raises(InstrumentCommandError, match="execution error"):
        ls.write("RANGE 3,2")  # voltage outputs are only off or on
    assert ls.event_status == StandardEvent(0)  # each error was read (and cleared) in its turn


def test_simulator_framing_chains_and_silence():
    session = SimulatedLakeShore336(SimulatedLab(clock=SimClock(manual=True))).open_session()
    assert session.feed(b"FOO 1\r\n") == b""  # no reply to an invalid command
    assert session.feed(b"*ESR?\r\n") == b"160\r\n"  # power-on and command error
    assert session.feed(b"SETP 1,300;SETP? 1;RANGE 1,9;*ESR?\r\n") == b"+300.000;016\r\n"
    assert session.feed(b"krdg? a\r\n") == b"+295.000\r\n"
    # Output 1 is rated 100 W, output 2 50 W: √2 A into 50 Ω is too much for output 2.
    assert session.feed(b"HTRSET 1,2,3,0,1;HTRSET 2,2,3,0,1;*ESR?\r\n") == b"016\r\n"
    assert session.feed(b"HTRSET? 1;HTRSET? 2\r\n") == b"2,3,+0.000,1;2,2,+0.000,1\r\n"


def test_query_without_reply_times_out_as_on_the_wire(sim):
    ls = LakeShore336(InProcessAdapter(sim))
    ls.adapter.write("KRDG? A")  # the raw query, no *ESR? appended
    assert ls.read() == "+295.000"
    with pytest.raises(InstrumentTimeoutError):
        ls.read()


# --- the physics behind it --------------------------------------------------------------------


def test_closed_loop_settles_at_450_K_and_holds_within_a_tenth_of_a_kelvin(sim, lab):
    ls = LakeShore336(InProcessAdapter(sim))
    heat(ls, 450.0)
    warm_up = []
    for _ in range(60):  # one hour in minutes
        lab.clock.advance(60.0)
        warm_up.append(ls.input_A.kelvin)
    # Full power until the loop takes over near the setpoint; the integral does not wind up
    # while the output is clamped at 100 %, so there is no overshoot.
    assert max(warm_up) < 450.1
    held = []
    for _ in range(60):  # and the next hour
        lab.clock.advance(60.0)
        held.append(ls.input_A.kelvin)
    assert max(abs(T - 450.0) for T in held) < 0.1
    # Holding 450 K takes P = (T - T_amb)/R_th: the heater current squared times 50 Ω.
    oven = lab.config.oven
    power_W = (450.0 - oven.ambient_K) / oven.thermal_resistance_K_per_W
    current_A = ls.output_1.output / 100.0 * 1.0
    assert current_A**2 * oven.heater_resistance_ohm == pytest.approx(power_W, rel=2e-3)


def test_setpoint_ramp_moves_the_loop_at_the_set_rate(sim, lab):
    ls = LakeShore336(InProcessAdapter(sim))
    out = ls.output_1
    out.configure_ramp(True, 10.0)  # K/min
    heat(ls, 400.0)
    lab.clock.advance(300.0)
    assert out.ramping
    # Five minutes at 10 K/min from 295 K: the cell follows a few kelvin behind 345 K.
    assert 335.0 < ls.input_A.kelvin < 346.0
    lab.clock.advance(1200.0)
    assert not out.ramping
    assert ls.input_A.kelvin == pytest.approx(400.0, abs=0.1)


def test_open_loop_manual_output_and_range_decades(sim, lab):
    ls = LakeShore336(InProcessAdapter(sim))
    out = ls.output_1
    out.setup_heater(50, 1.0)
    out.set_output_mode("open_loop", "A")
    out.mout = 50.0
    out.range = "high"
    lab.clock.advance(10 * lab.config.oven.time_constant_s)
    power_high = (0.5 * 1.0) ** 2 * lab.config.oven.heater_resistance_ohm
    assert ls.input_A.kelvin == pytest.approx(lab.oven.steady_temperature_K(power_high), abs=0.01)
    out.range = "medium"  # a tenth of the power
    lab.clock.advance(10 * lab.config.oven.time_constant_s)
    expected = lab.oven.steady_temperature_K(power_high / 10)
    assert ls.input_A.kelvin == pytest.approx(expected, abs=0.01)
    out.range = "off"
    lab.clock.advance(10 * lab.config.oven.time_constant_s)
    assert ls.input_A.kelvin == pytest.approx(lab.config.oven.ambient_K, abs=0.01)


def test_temperature_limit_switches_every_output_off(sim, lab):
    ls = LakeShore336(InProcessAdapter(sim))
    ls.input_A.temperature_limit_K = 400.0
    ls.output_2.range = "low"
    heat(ls, 450.0)
    lab.clock.advance(600.0)
    assert ls.output_1.range == "off" and ls.output_2.range == "off"
    assert ls.output_1.output == 0.0
    assert ls.input_A.kelvin < 400.5  # tripped on the way up, cooling since
    # The trip is not a heater fault: HTRST? knows only open load and short.
    assert ls.output_1.heater_status == HeaterStatus.NO_ERROR


def test_heater_fault_is_latched_until_queried(sim, lab):
    ls = LakeShore336(InProcessAdapter(sim))
    sim.heater_connection = "open"
    heat(ls, 450.0)
    lab.clock.advance(60.0)
    assert ls.input_A.kelvin == pytest.approx(lab.config.oven.ambient_K)  # no current flows
    assert ls.output_1.heater_status == HeaterStatus.OPEN_LOAD
    assert ls.output_1.heater_status == HeaterStatus.NO_ERROR  # cleared by the query
    sim.heater_connection = "ok"
    lab.clock.advance(60.0)
    assert ls.input_A.kelvin > 350.0
    assert ls.output_1.heater_status == HeaterStatus.NO_ERROR


def test_driver_with_lf_only_framing_as_lake_shores_own_client_sends():
    """The 336 ends a message at its LF (the CR is optional) and always replies CR LF."""
    lab = SimulatedLab(clock=SimClock(manual=True))
    with SimServer({"ls336": (SimulatedLakeShore336(lab), 0)}) as server:
        ls = LakeShore336(server.resource("ls336"), timeout=2000, write_termination="\n")
        try:
            assert ls.id.startswith("LSCI,MODEL336,")
            assert ls.input_A.kelvin == pytest.approx(lab.cell_temperature_K, abs=1e-3)
            ls.output_1.setpoint = 321.5
            assert ls.output_1.setpoint == 321.5
            with pytest.raises(InstrumentCommandError, match="command error"):
                ls.write("HEAT 1,100")
        finally:
            ls.adapter.close()


def test_zone_mode_and_the_status_byte_through_the_driver(sim):
    """OUTMODE mode 2 (zone) is taken; *ESE/*STB: the event summary bit 5 follows ESR & ESE."""
    ls = LakeShore336(InProcessAdapter(sim))
    out = ls.output_1
    out.set_output_mode("zone", "A")
    assert out.output_mode == [2, 1, 0]
    ls.write("ZONE 1,1,500,40,25,0,0,3,1,0")
    assert ls.ask("ZONE? 1,1") == "+500.000,+40.0,+25.0,+0,+0.00,3,1,+0.0"
    ls.write("*ESE 32")
    assert ls.ask("*ESE?") == "032"
    assert ls.status == 0  # the appended *ESR? of each message keeps the ESR clear
    session = sim.open_session()  # a raw client without the driver's *ESR? after each message
    assert session.feed(b"BOGUS\n*STB?\n") == b"032\r\n"
    assert session.feed(b"*ESR?;*STB?\n") == b"032;000\r\n"  # reading the ESR clears ESB


def test_zone_mode_runs_the_loop_with_the_zone_the_setpoint_lies_in(sim, lab):
    """Zone mode: the first zone whose upper bound is at or above the setpoint sets P, I, D,
    manual output and range (336 manual, zone settings); the loop then holds that setpoint."""
    ls = LakeShore336(InProcessAdapter(sim))
    out = ls.output_1
    out.setup_heater(50, 1.0)
    ls.write("ZONE 1,1,400,10,5,0,0,1,1,0")  # up to 400 K: low range, soft gains
    ls.write("ZONE 1,2,600,50,20,0,0,3,1,0")  # up to 600 K: the factory gains, high range
    out.set_output_mode("zone", "A")
    out.setpoint = 450.0
    lab.clock.advance(1.0)
    assert (out.range, out.pid) == ("high", [50.0, 20.0, 0.0])
    lab.clock.advance(10 * lab.config.oven.time_constant_s)
    assert ls.input_A.kelvin == pytest.approx(450.0, abs=0.1)
    out.setpoint = 350.0  # into zone 1
    lab.clock.advance(1.0)
    assert (out.range, out.pid) == ("low", [10.0, 5.0, 0.0])


def test_a_message_longer_than_the_input_buffer_is_dropped_as_a_command_error(sim):
    session = sim.open_session()
    assert session.feed(b"SETP 1," + b"9" * sim.input_buffer_bytes + b"\n") == b""
    assert session.feed(b"*ESR?\n") == b"160\r\n"  # power-on and command error
    assert session.feed(b"SETP? 1\n") == session.feed(b"SETP? 1\r\n")  # the loop is untouched
