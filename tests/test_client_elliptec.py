"""The ``elliptec`` package (PyPI), unchanged, against `hotspin sim serve`'s ELL14.

``elliptec.Controller`` opens a serial port with pyserial (no URL handlers), so it reaches the
mount as the serial device it is: the pseudo-terminal `hotspin sim serve` prints. Each command
reads one reply up to CR LF (``controller.py``): a move is answered by the ``PO`` the mount sends
when the move ends. The package reports device errors by logging them (``tools.error_check``)
and raises ``ExternalDeviceNotFound`` when no device answers ``in``.
"""

import logging

import elliptec
import pytest
from helpers.served_lab import served_lab

#: One pulse of the ELL14 in degrees; the package truncates a move to whole pulses.
PULSE_DEG = 360.0 / 143360


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    with served_lab(tmp_path_factory.mktemp("elliptec")) as lab:
        controller = elliptec.Controller(lab.mount_pty)
        yield controller
        controller.close_connection()


@pytest.fixture
def rotator(controller):
    return elliptec.Rotator(controller)  # reads `in` on creation


def test_connect_and_identify(rotator):
    assert rotator.info["Motor Type"] == 14
    assert rotator.info["Serial No."] == "11400999"
    assert (rotator.range, rotator.pulse_per_rev) == (360, 143360)
    assert rotator.get("status") == ("0", "GS", "0")


def test_home_absolute_and_relative_moves_complete_and_report_the_position(rotator):
    assert rotator.home() == ("0", "PO", 0)
    assert rotator.set_angle(90.0) == 90.0  # the angle of the PO that ended the move
    assert rotator.shift_angle(-30.0) == pytest.approx(60.0, abs=PULSE_DEG)
    assert rotator.get_angle() == pytest.approx(60.0, abs=PULSE_DEG)


def test_jog_step_home_offset_and_motor_information(rotator):
    rotator.home()
    assert rotator.get_jog_step() == pytest.approx(10.0, abs=PULSE_DEG)
    assert rotator.jog("forward") == pytest.approx(10.0, abs=PULSE_DEG)
    assert rotator.jog("backward") == pytest.approx(0.0, abs=PULSE_DEG)
    assert rotator.get_home_offset() == 0.0
    motor = rotator.get("motor_1_info")
    assert (motor["Loop"], motor["Motor"]) == ("1", "1")
    assert motor["Forward frequency"] == pytest.approx(14740000 / 0xA4)
    rotator.save_user_data()  # us: answered GS00


def test_a_refused_command_is_reported_the_clients_way(rotator, caplog):
    with caplog.at_level(logging.ERROR, logger="elliptec"):
        status = rotator.move("absolute", 0x23000)  # one full turn: outside the travel
    assert status == ("0", "GS", "4")
    assert "Value Out of Range" in caplog.text
    assert rotator.get("status") == ("0", "GS", "4")  # the fault is answered once more
    assert rotator.get("status") == ("0", "GS", "0")  # then the link is in step again


def test_no_device_at_an_address_raises_the_clients_error(controller):
    with pytest.raises(elliptec.ExternalDeviceNotFound):
        elliptec.Rotator(controller, address="5")  # nobody answers: the 2 s read times out
