"""Keithley 6221 driver (exact exchanges) and the simulated 6221 on one coil axis.

Commands follow the Model 6220/6221 Reference Manual: SOURce subsystem (``:SOUR:CURR``,
``:COMP``, ``:RANG``, ``:RANG:AUTO``), ``OUTPut``, ``SYSTem:ERRor?`` with the codes of
Appendix B (Table B-1), and the measurement condition register of §11 (Table 11-4,
Figure 11-6: B3 = Compliance).
"""

import numpy as np
import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentCommandError, InstrumentTimeoutError
from hotspin.instruments.keithley6221 import Keithley6221
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.keithley6221 import SimulatedKeithley6221
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import SimServer
from pymeasure.test import expected_protocol

NO_ERROR = ("SYST:ERR?", '0,"No error"')

# --- the driver against the manual's exchanges ------------------------------------------------


def test_dc_source_settings_each_followed_by_the_error_queue():
    """Each setting, then SYST:ERR? until 0,"No error" (Appendix B: reading the error queue)."""
    with expected_protocol(
        Keithley6221,
        [
            ("*IDN?", "KEITHLEY INSTRUMENTS INC.,MODEL 6221,4143215,D04 /A02"),
            (":SOUR:CURR 0.0125", None),
            NO_ERROR,
            (":SOUR:CURR?", "1.250000E-02"),
            (":SOUR:CURR:COMP 2.5", None),
            NO_ERROR,
            (":SOUR:CURR:COMP?", "2.500000E+00"),
            (":SOUR:CURR:RANG:AUTO 0;:SOUR:CURR:RANG 0.02", None),
            NO_ERROR,
            (":SOUR:CURR:RANG?", "2.000000E-02"),
            (":SOUR:CURR:RANG:AUTO 1", None),
            NO_ERROR,
            ("OUTPut 1", None),
            NO_ERROR,
            ("OUTPut?", "1"),
            ("*OPC?", "1"),
        ],
    ) as k:
        assert k.id.startswith("KEITHLEY INSTRUMENTS INC.,MODEL 6221")
        k.source_current = 0.0125
        assert k.source_current == 0.0125
        k.source_compliance = 2.5
        assert k.source_compliance == 2.5
        k.source_range = 0.02
        assert k.source_range == 0.02
        k.source_auto_range = True
        k.source_enabled = True
        assert k.source_enabled is True
        assert k.complete == "1"


def test_compliance_is_bit_3_of_the_measurement_condition_register():
    with expected_protocol(Keithley6221, [("STAT:MEAS:COND?", "8"), ("STAT:MEAS:COND?", "0")]) as k:
        assert k.in_compliance is True
        assert k.in_compliance is False


def test_a_garbled_condition_register_is_an_error_not_a_state():
    """A corrupted reply must not read as 'in compliance' or not: the link retries a ValueError."""
    reply = [("STAT:MEAS:COND?", "????")]
    with expected_protocol(Keithley6221, reply) as k, pytest.raises(ValueError):
        _ = k.in_compliance


def test_an_error_queue_entry_raises_with_the_instruments_code():
    """-222 Parameter data out of range, read from the queue after the setting (Table B-1)."""
    with (
        expected_protocol(
            Keithley6221,
            [
                (":SOUR:CURR:COMP 50", None),
                ("SYST:ERR?", '-222,"Parameter data out of range"'),
                NO_ERROR,
            ],
        ) as k,
        pytest.raises(InstrumentCommandError, match="-222, Parameter data out of range"),
    ):
        k.source_compliance = 50


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("source_current", 0.2, r"source_current = 0\.2 .*\[-0\.105, 0\.105\] A"),
        ("source_current", -0.11, r"source_current = -0\.11 "),
        ("source_compliance", 0.05, r"source_compliance = 0\.05 .*\[0\.1, 105\] V"),
        ("source_compliance", 200, r"source_compliance = 200 "),
        ("source_range", 1.0, r"source_range = 1 "),
        ("source_enabled", "yes", r"source_enabled = 'yes' is not one"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_is_sent(name, value, message):
    with expected_protocol(Keithley6221, []) as k, pytest.raises(ParameterError, match=message):
        setattr(k, name, value)


# --- the simulated 6221 -----------------------------------------------------------------------


@pytest.fixture
def lab():
    return SimulatedLab(clock=SimClock(manual=True))


@pytest.fixture
def sim(lab):
    return SimulatedKeithley6221(lab, "coil_y", axis=1)


@pytest.fixture(params=["in-process", "tcp"])
def keithley(request, sim):
    """The real driver connected to the simulator, in-process or over TCP with pyvisa-py."""
    if request.param == "in-process":
        yield Keithley6221(InProcessAdapter(sim))
        return
    with SimServer({"coil_y": (sim, 0)}) as server:
        driver = Keithley6221(server.resource("coil_y"), timeout=2000)
        yield driver
        driver.adapter.close()


def test_driver_sets_the_coil_current(keithley, lab):
    assert keithley.id.startswith("KEITHLEY INSTRUMENTS INC.,MODEL 6221,")
    keithley.source_compliance = 5.0
    keithley.source_range = 0.02  # the *RST range, 2 mA, cannot hold 12.3 mA
    keithley.source_current = 0.0123
    assert lab.coils.currents_A[1] == 0.0  # output still off
    keithley.source_enabled = True
    assert keithley.source_enabled is True
    assert keithley.source_current == pytest.approx(0.0123)
    assert keithley.source_compliance == pytest.approx(5.0)
    assert lab.coils.currents_A.tolist() == [0.0, 0.0123, 0.0]
    assert keithley.in_compliance is False
    keithley.source_range = 0.02
    assert keithley.source_range == pytest.approx(0.02)
    keithley.shutdown()  # OUTPUT OFF, no reply: the query after it waits for it
    assert keithley.source_enabled is False
    assert lab.coils.currents_A[1] == 0.0


def test_instrument_errors_reach_the_driver_with_their_codes(keithley):
    keithley.write(":SOUR:CURR:LIMIT 1")  # no such header on a 6221
    with pytest.raises(InstrumentCommandError, match="Undefined header") as error:
        keithley.check_set_errors()
    assert error.value.code == -113
    keithley.write(":SOUR:CURR 0.2")  # past the validator, straight to the instrument
    with pytest.raises(InstrumentCommandError, match="out of range") as error:
        keithley.check_set_errors()
    assert error.value.code == -222
    assert keithley.source_current == 0.0  # the bad value was not taken


def test_error_queue_is_first_in_first_out(sim):
    session = sim.open_session()
    assert session.feed(b"OUTP MAYBE;:BOGUS;:SOUR:CURR 1\n") == b""
    replies = [session.feed(b"SYST:ERR?\n") for _ in range(4)]
    assert replies == [
        b'-141,"Invalid character data"\n',
        b'-113,"Undefined header"\n',
        b'-222,"Parameter data out of range"\n',
        b'0,"No error"\n',
    ]
    assert session.feed(b"*ESR?\n") == b"48\n"  # command (32) and execution (16) errors


def test_scpi_short_long_forms_case_and_paths(sim, lab):
    session = sim.open_session()
    assert session.feed(b"source:current:level:immediate:amplitude 1e-3\n") == b""
    assert session.feed(b"CURR?;:SOUR:CURR:COMP?\n") == b"1.000000E-03;1.000000E+01\n"
    # After SOUR:CURR the path is SOUR:, so CURR:COMP continues it; COMP alone does not exist.
    assert session.feed(b"SOUR:CURR 2E-3;CURR:COMP 5;:OUTPUT:STATE ON\n") == b""
    assert session.feed(b"SOUR:CURR:COMPLIANCE?;:outp?\n") == b"5.000000E+00;1\n"
    assert session.feed(b"SOUR:CURR 2E-3;COMP 5\n") == b""
    assert session.feed(b"SYST:ERR?\n") == b'-113,"Undefined header"\n'
    assert session.feed(b"SOUR:CURRE?\n") == b""  # neither short nor long form
    assert session.feed(b"SYST:ERR:NEXT?\n") == b'-113,"Undefined header"\n'
    assert session.feed(b"SOUR:CURR:RANG:AUTO ON;:SOUR:CURR MAX\n") == b""  # 105 mA: 1.05 V on 10 Ω
    assert lab.coils.currents_A[1] == pytest.approx(0.105)


def test_compliance_limits_the_coil_current(lab):
    sim = SimulatedKeithley6221(lab, "coil_x", axis=0, coil_resistance_ohm=10.0)
    keithley = Keithley6221(InProcessAdapter(sim))
    keithley.source_compliance = 0.1  # 10 mA through 10 Ω at most
    keithley.source_range = 0.1
    keithley.source_current = -0.05
    keithley.source_enabled = True
    assert lab.coils.currents_A[0] == pytest.approx(-0.01)
    assert keithley.in_compliance is True
    keithley.source_compliance = 1.0
    assert lab.coils.currents_A[0] == pytest.approx(-0.05)
    assert keithley.in_compliance is False
    assert keithley.ask("STAT:MEAS?") == "8"  # the event register kept the episode
    assert keithley.ask("STAT:MEAS?") == "0"  # and clears when read


def test_three_sources_set_the_field_through_the_coil_matrix(lab):
    sources = [
        Keithley6221(InProcessAdapter(SimulatedKeithley6221(lab, name, axis)))
        for axis, name in enumerate(("coil_x", "coil_y", "coil_z"))
    ]
    currents = np.array([0.004, -0.0025, 0.001])
    for source, current in zip(sources, currents, strict=True):
        source.source_range = 0.02
        source.source_current = current
        source.source_enabled = True
    coils = lab.config.coils
    expected = np.asarray(coils.residual_field_T) + coils.matrix @ currents
    np.testing.assert_allclose(lab.coils.field_T(), expected, rtol=1e-12)
    sources[0].source_enabled = False
    expected = np.asarray(coils.residual_field_T) + coils.matrix @ (currents * [0, 1, 1])
    np.testing.assert_allclose(lab.coils.field_T(), expected, rtol=1e-12)


def test_an_unknown_query_gets_no_reply_and_times_out(sim):
    keithley = Keithley6221(InProcessAdapter(sim))
    with pytest.raises(InstrumentTimeoutError):
        keithley.ask(":SOUR:CURR:LIMIT?")
    assert keithley.next_error == [-113.0, '"Undefined header"']


def test_status_byte_and_source_delay():
    """*STB? → status byte (Reference Manual §11: bit 2 error available); :SOUR:DEL <n> and
    :SOUR:DEL? (§14, SOURce subsystem; pymeasure's source_delay)."""
    with expected_protocol(
        Keithley6221,
        [("*STB?", "4"), (":SOUR:DEL 0.01", None), (":SOUR:DEL?", "1.000000E-02")],
    ) as k:
        assert k.status == "4"
        k.source_delay = 0.01
        assert k.source_delay == 0.01


def test_status_system_through_the_driver_over_lf(keithley):
    """LF framing both ways; an error sets EAV (bit 2) of the status byte until read; the
    measurement summary (bit 0) follows the enabled compliance event; STAT:PRES clears enables."""
    keithley.write(":SOUR:CURR:LIMIT 1")
    assert int(keithley.status) & 4
    assert keithley.ask("SYST:ERR:COUN?") == "1"
    assert keithley.ask("SYST:ERR:ALL?") == '-113,"Undefined header"'
    assert int(keithley.status) == 0
    keithley.source_delay = 0.25
    assert keithley.source_delay == pytest.approx(0.25)
    keithley.write(":STAT:MEAS:ENAB 8")
    keithley.source_range = 0.02
    keithley.source_compliance = 0.1  # 10 mA through 10 Ω at most
    keithley.source_current = 0.015
    keithley.source_enabled = True
    assert keithley.in_compliance is True
    assert int(keithley.status) & 1  # measurement summary bit
    keithley.write(":STAT:PRES")
    assert keithley.ask(":STAT:MEAS:ENAB?") == "0"
    assert keithley.ask("SYST:VERS?") == "1999.0"
    assert keithley.ask("*TST?") == "0"
    assert keithley.ask("*ESE 16;*ESE?;*SRE 4;*SRE?") == "16;4"


def test_a_level_beyond_a_fixed_range_is_refused_and_a_smaller_range_clamps(sim, lab):
    """Each range delivers 105 % of full scale (Reference Manual §4, source ranging); a level
    beyond it on a fixed range is -222 and not executed."""
    session = sim.open_session()
    assert session.feed(b"OUTP ON;:SOUR:CURR 2.1E-3\n") == b""  # 105 % of the 2 mA range
    assert lab.coils.currents_A[sim.axis] == pytest.approx(2.1e-3)
    assert session.feed(b"SOUR:CURR 2.2E-3;:SYST:ERR?\n") == b'-222,"Parameter data out of range"\n'
    assert session.feed(b"SOUR:CURR?\n") == b"2.100000E-03\n"
    assert session.feed(b"SOUR:CURR:RANG 2E-3;:SOUR:CURR:RANG:AUTO ON;:SOUR:CURR 0.05\n") == b""
    assert lab.coils.currents_A[sim.axis] == pytest.approx(0.05)
    assert session.feed(b"SOUR:CURR:RANG 2E-4\n") == b""  # below the level: the output clamps
    assert lab.coils.currents_A[sim.axis] == pytest.approx(2.1e-4)
