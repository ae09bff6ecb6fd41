"""pyLabLib's Thorlabs Elliptec class, unchanged, against `hotspin sim serve`'s ELL14.

pyLabLib (``pylablib/devices/Thorlabs/elliptec.py``) opens a serial port through pyserial's
``serial_for_url``, so it reaches the mount both as the serial device it is (the pseudo-terminal
`hotspin sim serve` prints) and through a ``socket://`` URL on the mount's TCP port. Its moves
wait for the ``PO`` the mount sends when the move ends, unprompted; velocity, home offset and
motor information are read with ``gv``, ``go`` and ``i1``/``i2``. The mount turns the served
lab's plate: hotspin's own driver, on the TCP port, reads the same position.
"""

import pytest
from helpers.served_lab import served_lab
from hotspin.instruments.thorlabs_ell14 import ELL14

#: One pulse of the ELL14 in degrees; pyLabLib truncates a move to whole pulses.
PULSE_DEG = 360.0 / 143360


@pytest.fixture(scope="module")
def Thorlabs():
    """pyLabLib's Thorlabs devices, imported by the tests that use them: 0.8 s of CPU, which
    every test process would otherwise spend collecting this module."""
    from pylablib.devices import Thorlabs

    return Thorlabs


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with served_lab(tmp_path_factory.mktemp("pylablib")) as served:
        yield served


@pytest.fixture(scope="module", params=["pty", "socket"])
def stage(request, lab, Thorlabs):
    """One connection per transport (pyLabLib polls all 16 addresses on connecting: 2 s)."""
    port = lab.mount_pty if request.param == "pty" else f"socket://127.0.0.1:{lab.ports['mount']}"
    stage = Thorlabs.ElliptecMotor(port)
    yield stage
    stage.close()


def test_connect_and_identify(stage):
    assert stage.get_connected_addrs() == [0]  # found by polling gs on all 16 addresses
    info = stage.get_device_info()
    assert (info.model_no, info.travel, info.pulse) == (14, 360, 143360)
    assert info.serial_no == "11400999"
    assert stage.get_status() == "ok"


def test_home_absolute_and_relative_moves_complete_and_report_the_position(stage, lab):
    assert stage.home() is True  # True: answered PO, the position reached
    assert stage.get_position() == 0.0
    assert stage.move_to(90.0) is True
    assert stage.get_position() == pytest.approx(90.0, abs=PULSE_DEG)
    assert stage.move_by(-30.0) is True
    assert stage.get_position() == pytest.approx(60.0, abs=PULSE_DEG)
    own = ELL14(f"TCPIP::127.0.0.1::{lab.ports['mount']}::SOCKET")  # the same mount, over TCP
    try:
        assert own.position_deg == pytest.approx(60.0, abs=PULSE_DEG)
    finally:
        own.adapter.close()


def test_velocity_home_offset_and_motor_information(stage):
    assert stage.get_velocity() == 100
    assert stage.set_velocity(50) == 50
    assert stage.move_to(10.0) is True  # at half speed, still answered when it ends
    assert stage.set_velocity(100) == 100
    assert stage.get_home_offset() == 0.0
    motors = stage.get_full_info()["motor_info"][0]
    assert len(motors) == 2  # i1 and i2 answer, i3 is refused
    assert motors[0].loop and motors[0].motor
    assert motors[0].fw_freq == pytest.approx(14740000 / 0xA4)


def test_an_invalid_command_raises_the_clients_error(stage, Thorlabs):
    with pytest.raises(Thorlabs.ThorlabsError, match="not_supported"):
        stage.get_motor_info(motor=3)  # the ELL14 has two motors: GS03
    assert stage.get_status() == "ok"  # the link is still in step
