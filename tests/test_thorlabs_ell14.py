"""Thorlabs ELL14: the driver's exchanges, and the driver against the simulated mount.

Protocol sources: the ELLx communications protocol manual as implemented by pylablib
``devices/Thorlabs/elliptec.py`` (no write terminator, CR LF replies, ``IN`` field widths, ``GS``
codes, ``ho``/``ma``/``mr``/``gp`` and their ``PO`` answers, 32-bit two's complement positions)
and thorlabs-elliptec 1.3.0 ``ellx.py`` (a move is answered ``PO`` when it ends, ``GS`` on a fault;
thread type in bit 7 of the hardware byte). The move's answer is unprompted: it is sent when the
move ends, not held until the next command (pyLabLib's ``move_to`` reads it without asking). The
ELL14 has 143360 = 0x23000 pulses per turn
(Thorlabs ELL14 specification). Replies are written without their CR LF, as pymeasure's
`expected_protocol` wants; commands carry no terminator at all.
"""

import os
import select
import socket

import pytest
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentCommandError, InstrumentTimeoutError
from hotspin.instruments.thorlabs_ell14 import ELL14, ELLStatus
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.pty_serial import PtySerialServer
from hotspin.simulators.server import SimServer
from hotspin.simulators.thorlabs_ell14 import (
    PULSES_PER_REVOLUTION,
    ROTATION_SPEED_DEG_PER_S,
    SimulatedELL14,
)
from pymeasure.test import expected_protocol

# model 0E (ELL14), serial 11400284, 2019, firmware 15, hardware 01 (metric), 360°, 0x23000 pulses
INFO = ("0in", "0IN0E1140028420191501016800023000")
#: One pulse in degrees: the resolution of every position the driver reports.
PULSE_DEG = 360.0 / PULSES_PER_REVOLUTION


def ell14(*pairs):
    return expected_protocol(ELL14, [INFO, *pairs])


# --- protocol ------------------------------------------------------------------------------------
def test_info_is_parsed_from_the_in_reply():
    with ell14() as mount:
        info = mount.info
        assert (info.model, info.serial_number, info.year) == (14, "11400284", 2019)
        assert (info.firmware, info.hardware_release, info.imperial_thread) == ("15", 1, False)
        assert (info.travel, info.pulses_per_travel) == (360, 143360)
        assert mount.pulses_per_revolution == 143360


def test_status_codes():
    with ell14(("0gs", "0GS00"), ("0gs", "0GS09"), ("0gs", "0GS0D")) as mount:
        assert mount.status is ELLStatus.OK
        assert mount.is_moving is True
        assert mount.status is ELLStatus.OVER_CURRENT


def test_position_is_read_in_degrees():
    with ell14(("0gp", "0PO00008C00"), ("0gp", "0POFFFFBA00")) as mount:
        assert mount.position_deg == 90.0  # 0x8C00 = 35840 = a quarter of 143360
        assert mount.position_deg == -45.0  # two's complement


def test_absolute_move_is_answered_when_it_ends():
    """No terminator after 'ma' + 8 hex; the PO answer comes ahead of the next GS."""
    with ell14(
        ("0ma00008C00", None),
        ("0gs", "0GS09"),  # still turning
        ("0gs", "0PO00008C00"),
        (None, "0GS00"),
        ("0gp", "0PO00008C00"),
    ) as mount:
        mount.move_to(90.0)
        assert mount.position_deg == 90.0


def test_move_without_waiting_then_position_waits():
    with ell14(
        ("0ma00011800", None),
        ("0gs", "0PO00011800"),
        (None, "0GS00"),
        ("0gp", "0PO00011800"),
    ) as mount:
        mount.move_to(180.0, wait=False)
        assert mount.position_deg == 180.0


def test_relative_move_and_homing():
    with ell14(
        ("0mrFFFFBA00", None),  # -45° = -17920 pulses
        ("0gs", "0PO00004600"),  # from 90° to 45°
        (None, "0GS00"),
        ("0ho1", None),  # counter-clockwise
        ("0gs", "0PO00000000"),
        (None, "0GS00"),
    ) as mount:
        mount.move_by(-45.0)
        mount.home(clockwise=False)


def test_a_failed_move_raises_its_status():
    """A move that fails is answered GS (here 02, mechanical time out) instead of PO."""
    with (
        ell14(("0ma00008C00", None), ("0gs", "0GS02"), (None, "0GS00")) as mount,
        pytest.raises(InstrumentCommandError, match="mechanical timeout") as error,
    ):
        mount.move_to(90.0)
    assert error.value.code == 2


def test_a_status_poll_skips_a_move_answer_it_did_not_wait_for():
    """An unprompted PO (a move an earlier connection started) ahead of the GS is no status."""
    with ell14(("0gs", "0PO00004600"), (None, "0GS00")) as mount:
        assert mount.status is ELLStatus.OK


def test_a_late_move_answer_ahead_of_another_reply_is_skipped():
    """A PO from a move this driver did not start (an earlier connection's) is not a reply."""
    with ell14(("0gv", "0PO00004600"), (None, "0GV64")) as mount:
        assert mount.send_command("gv", "GV") == "64"


def test_waiting_for_a_move_uses_the_injected_clock():
    """With a manual simulated clock the driver's sleep advances time: no wall-clock wait."""
    lab = SimulatedLab(clock=SimClock(manual=True))
    mount = ELL14(InProcessAdapter(SimulatedELL14(lab)), now=lab.clock.now, sleep=lab.clock.sleep)
    mount.move_to(180.0)
    assert lab.clock.now() == pytest.approx(180.0 / ROTATION_SPEED_DEG_PER_S, abs=0.06)
    assert mount.position_deg == pytest.approx(180.0, abs=PULSE_DEG)


def test_an_error_status_in_place_of_a_reply_raises_and_is_cleared():
    """The refusal is answered again by the next gs (pyLabLib): the driver reads it once."""
    with (
        ell14(("0zz", "0GS03"), ("0gs", "0GS03")) as mount,
        pytest.raises(InstrumentCommandError, match="command error") as error,
    ):
        mount.send_command("zz", "ZZ")
    assert error.value.code == 3


@pytest.mark.parametrize("angle", [360.0, -0.5, 1e9, float("nan")])
def test_absolute_angles_outside_one_turn_are_refused_before_sending(angle):
    with ell14() as mount, pytest.raises(ParameterError, match=r"angle_deg = .*\[0, 360\) deg"):
        mount.move_to(angle)


def test_relative_angles_beyond_one_turn_are_refused_before_sending():
    with ell14() as mount, pytest.raises(ParameterError) as error:
        mount.move_by(400.0)
    assert "delta_deg = 400" in str(error.value)
    assert "[-360, 360] deg" in str(error.value)


def test_the_address_must_be_one_hex_digit():
    with pytest.raises(ParameterError, match="address"):
        ELL14(InProcessAdapter(SimulatedELL14(SimulatedLab())), address="10")


# --- the driver against the simulated mount ------------------------------------------------------
@pytest.fixture
def lab():
    return SimulatedLab(clock=SimClock(manual=True))


@pytest.fixture(params=["inprocess", "tcp", "pty"])
def connected(request, lab):
    """The real driver on the simulated mount: in-process, and through pyvisa-py over TCP and
    over a pseudo-terminal (an ASRL serial resource)."""
    sim = SimulatedELL14(lab)
    if request.param == "inprocess":
        yield ELL14(InProcessAdapter(sim)), sim
        return
    if request.param == "tcp":
        with SimServer({"ell14": (sim, 0)}) as server:
            mount = ELL14(server.resource("ell14"))
            yield mount, sim
            mount.adapter.close()
        return
    with PtySerialServer(sim) as line:
        mount = ELL14(f"ASRL{line.device_path}::INSTR")
        yield mount, sim
        mount.adapter.close()


def test_driver_reads_the_simulated_mounts_info(connected):
    mount, sim = connected
    assert mount.info.model == 14
    assert mount.info.serial_number == sim.serial_number
    assert mount.pulses_per_revolution == PULSES_PER_REVOLUTION
    assert mount.status is ELLStatus.OK


def test_a_rotation_takes_time_reports_busy_and_turns_the_plate(connected, lab):
    mount, _ = connected
    duration_s = 90.0 / ROTATION_SPEED_DEG_PER_S
    mount.move_to(90.0, wait=False)
    assert mount.status is ELLStatus.BUSY
    lab.clock.advance(0.5 * duration_s)
    assert mount.is_moving is True
    assert lab.hwp_angle_deg == pytest.approx(45.0, abs=PULSE_DEG)
    lab.clock.advance(0.5 * duration_s)
    assert mount.status is ELLStatus.OK
    assert lab.hwp_angle_deg == pytest.approx(90.0, abs=PULSE_DEG)
    assert mount.position_deg == pytest.approx(90.0, abs=PULSE_DEG)


def test_relative_moves_cross_zero_and_homing_returns(connected, lab):
    mount, _ = connected
    # Each `is_moving` is a round trip: over TCP it makes sure the mount has started the move
    # before the (manual) clock is advanced.
    mount.move_to(10.0, wait=False)
    assert mount.is_moving
    lab.clock.advance(1.0)
    mount.move_by(-20.0, wait=False)
    assert mount.is_moving
    lab.clock.advance(1.0)
    assert mount.position_deg == pytest.approx(350.0, abs=PULSE_DEG)
    assert lab.hwp_angle_deg == pytest.approx(350.0, abs=PULSE_DEG)
    mount.home(wait=False)
    assert mount.is_moving
    lab.clock.advance(1.0)
    mount.wait_for_move()
    assert mount.position_deg == 0.0
    assert lab.hwp_angle_deg == 0.0


def test_an_invalid_command_gets_the_command_error_status(connected):
    mount, _ = connected
    with pytest.raises(InstrumentCommandError) as error:
        mount.send_command("zz", "ZZ")
    assert error.value.code == ELLStatus.COMMAND_ERROR
    assert mount.status is ELLStatus.OK  # the link is still in step, the fault read and gone


def test_a_fault_status_is_answered_once_more_by_the_next_gs(lab):
    session = SimulatedELL14(lab).open_session()
    assert session.feed(b"0ma00023000") == b"0GS04\r\n"  # 360°: out of range
    assert session.feed(b"0gs") == b"0GS04\r\n"  # the fault, once more
    assert session.feed(b"0gs") == b"0GS00\r\n"
    assert session.feed(b"0gp") == b"0PO00000000\r\n"


def test_a_move_that_never_ends_times_out(lab):
    """The mount's clock stands still, the driver's runs on: the wait must not hang."""
    driver_clock = SimClock(manual=True)
    mount = ELL14(
        InProcessAdapter(SimulatedELL14(lab)),
        move_timeout_s=0.1,
        now=driver_clock.now,
        sleep=driver_clock.sleep,
    )
    mount.move_to(90.0, wait=False)
    with pytest.raises(InstrumentTimeoutError, match="did not end"):
        mount.wait_for_move()


def test_a_command_for_another_address_gets_no_answer(lab):
    with pytest.raises(InstrumentTimeoutError):
        ELL14(InProcessAdapter(SimulatedELL14(lab, address="3")), address="0")


def test_commands_are_framed_by_their_lengths(lab):
    """No terminator: the mount cuts the byte stream by each command's known length."""
    sim = SimulatedELL14(lab)
    session = sim.open_session()
    assert session.feed(b"0gs0g") == b"0GS00\r\n"
    assert session.feed(b"p0ma0000") == b"0PO00000000\r\n"  # 'ma' still lacks 4 hex digits
    assert session.feed(b"8C00") == b""  # now the move starts; it is answered when it ends
    assert session.feed(b"0gs") == b"0GS09\r\n"
    lab.clock.advance(1.0)
    assert session.feed(b"0gs\r\n") == b"0PO00008C00\r\n0GS00\r\n"  # CR LF between: skipped
    assert session.feed(b"0ma00023000") == b"0GS04\r\n"  # 360° is outside one turn


def test_the_plate_turns_during_a_record_even_when_nobody_asks_the_mount(lab):
    mount = ELL14(InProcessAdapter(SimulatedELL14(lab)))
    mount.move_to(90.0, wait=False)
    lab.clock.advance(0.5 * 90.0 / ROTATION_SPEED_DEG_PER_S)
    lab.record(16, 1e6)  # the digitiser's view of the apparatus
    assert lab.hwp_angle_deg == pytest.approx(45.0, abs=PULSE_DEG)


def test_the_mount_sends_a_moves_answer_when_it_ends_without_being_asked(lab):
    """Over TCP: after the move nothing is sent; the PO arrives as the (manual) clock passes."""
    sim = SimulatedELL14(lab)
    with (
        SimServer({"ell14": (sim, 0)}) as server,
        socket.create_connection(("127.0.0.1", server.port("ell14")), timeout=5) as link,
    ):
        link.sendall(b"0ma00008C000gs")
        assert link.recv(64) == b"0GS09\r\n"  # the move has started and is in progress
        lab.clock.advance(1.0)
        assert link.recv(64) == b"0PO00008C00\r\n"  # unprompted, within the socket timeout
        link.sendall(b"0gs")
        assert link.recv(64) == b"0GS00\r\n"


def test_the_pty_line_carries_raw_bytes_and_unprompted_move_answers(lab):
    """The pseudo-terminal passes bytes unchanged (no echo, no CR/LF translation)."""
    with PtySerialServer(SimulatedELL14(lab)) as line:
        fd = os.open(line.device_path, os.O_RDWR | os.O_NOCTTY)
        try:

            def read_line():
                data = b""
                while not data.endswith(b"\r\n"):
                    ready, _, _ = select.select([fd], [], [], 5)
                    assert ready, f"no reply, got {data!r}"
                    data += os.read(fd, 64)
                return data

            os.write(fd, b"0gs")
            assert read_line() == b"0GS00\r\n"
            os.write(fd, b"0ho0")  # already at zero: a move of no length is answered at once
            assert read_line() == b"0PO00000000\r\n"
            os.write(fd, b"0mr00002300\r\n")  # CR LF after a command, as thorlabs-elliptec
            os.write(fd, b"0gs")
            assert read_line() == b"0GS09\r\n"
            lab.clock.advance(1.0)
            assert read_line() == b"0PO00002300\r\n"
        finally:
            os.close(fd)


@pytest.mark.parametrize(
    ("commands", "reply"),
    [
        (b"0gv", b"0GV64\r\n"),  # velocity 100 %
        (b"0sv32", b"0GS00\r\n"),
        (b"0sv320gv", b"0GS00\r\n0GV32\r\n"),  # 50 %
        (b"0sv65", b"0GS04\r\n"),  # 101 % is out of range
        (b"0gj", b"0GJ00000F8E\r\n"),  # 10° jog step = 3982 pulses
        (b"0so000023000go", b"0GS00\r\n0HO00002300\r\n"),
        (b"0i1", b"0I11105D5FFFFFFFF00A400A8\r\n"),
        (b"0i3", b"0GS03\r\n"),  # two motors only
        (b"0us", b"0GS00\r\n"),
        (b"0st", b"0GS00\r\n"),  # nothing to stop
        (b"0xx", b"0GS03\r\n"),
        (b"0ca11gs", b"1GS00\r\n1GS00\r\n"),  # the new address answers
    ],
)
def test_settings_and_information_commands(lab, commands, reply):
    assert SimulatedELL14(lab).open_session().feed(commands) == reply


def test_velocity_sets_the_rotation_speed_and_stop_ends_a_move_where_it_is(lab):
    session = SimulatedELL14(lab).open_session()
    assert session.feed(b"0sv32") == b"0GS00\r\n"  # 50 %: 215 °/s
    assert session.feed(b"0ma00011800") == b""  # 180°
    lab.clock.advance(90.0 / (0.5 * ROTATION_SPEED_DEG_PER_S))
    assert session.feed(b"0st") == b"0PO00008C00\r\n"  # stopped halfway, at 90°
    assert lab.hwp_angle_deg == pytest.approx(90.0)


def test_jogs_move_by_the_jog_step_and_wrap_around(lab):
    session = SimulatedELL14(lab).open_session()
    assert session.feed(b"0sj00002300") == b"0GS00\r\n"  # 22.5°
    assert session.feed(b"0bw") == b""
    lab.clock.advance(1.0)
    assert session.poll() == b"0PO00020D00\r\n"  # 337.5° = 143360 - 8960 pulses
