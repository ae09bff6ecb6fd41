"""thorlabs-elliptec (PyPI), unchanged, against `hotspin sim serve`'s ELL14.

``thorlabs_elliptec.ELLx`` opens a serial port with pyserial, so it reaches the mount as the
serial device it is: the pseudo-terminal `hotspin sim serve` prints. It appends CR LF to every
command (the mount skips them), polls ``gs`` and ``gp`` in a background thread, and takes the
reply to a move as its end: ``PO`` and the position, or ``GS`` and a fault (``ellx.py``). A
blocking move that fails raises ``ELLError``.
"""

import pytest
import thorlabs_elliptec
from helpers.served_lab import served_lab

#: The client truncates a move to whole pulses and rounds positions to 0.001°.
TOLERANCE_DEG = 360.0 / 143360 + 0.0005


@pytest.fixture(scope="module")
def mount(tmp_path_factory):
    with served_lab(tmp_path_factory.mktemp("thorlabs-elliptec")) as lab:
        device = thorlabs_elliptec.ELLx(lab.mount_pty)
        yield device
        device.close()


def test_connect_and_identify(mount):
    assert mount.model_number == "ELL14/M"  # metric thread: bit 7 of the hardware byte clear
    assert mount.serial_number == "11400999"
    assert (mount.travel, mount.units, mount.year) == (360, "°", 2024)


def test_home_absolute_and_relative_moves_complete_and_report_the_position(mount):
    mount.home(blocking=True)
    assert mount.get_position() == 0.0
    mount.move_absolute(90.0, blocking=True)
    assert mount.get_position() == 90.0  # from the PO that ended the move
    mount.move_relative(-30.0, blocking=True)
    assert mount.get_position() == pytest.approx(60.0, abs=TOLERANCE_DEG)
    assert not mount.is_moving(raise_errors=True)


def test_a_refused_move_raises_the_clients_error(mount):
    with pytest.raises(thorlabs_elliptec.ELLError) as error:
        mount.move_absolute(400.0, blocking=True)  # outside one turn: GS04
    assert error.value.status is thorlabs_elliptec.ELLStatus.VALUE_OUT_OF_RANGE
    mount.move_absolute(45.0, blocking=True)  # the mount goes on working
    assert mount.get_position() == 45.0
