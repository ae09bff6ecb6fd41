"""`Linked`: a virtual instrument's driver attribute behind its link and lock."""

import threading

import pytest
from hotspin.instruments.linked import Linked, read_all


class FakeLink:
    """A link that records every operation and runs it on a plain driver object."""

    def __init__(self, driver):
        self.driver, self.calls = driver, 0

    def call(self, operation):
        self.calls += 1
        return operation(self.driver)


class Channel:
    setpoint = "12.5"


class Driver:
    id = "LSCI,MODEL336"
    output_1 = Channel()


class Virtual:
    setpoint_K = Linked("setpoint", float, "Control the setpoint in K.", part="_output",
                        writable=True, check="_check")  # fmt: skip
    idn = Linked("id", str, "Get the identification.")

    def __init__(self):
        self.link, self.lock, self.checked = FakeLink(Driver()), threading.RLock(), []

    def _output(self, driver):
        return driver.output_1

    def _check(self, value):
        if value > 100:
            raise ValueError(f"setpoint_K = {value} is outside [0, 100] K")
        self.checked.append(value)


def test_reads_convert_and_writes_go_to_the_channel():
    v = Virtual()
    assert v.setpoint_K == 12.5 and isinstance(v.setpoint_K, float)
    v.setpoint_K = 42
    assert Driver.output_1.setpoint == 42.0 and v.checked == [42]
    assert read_all(v, ("idn", "setpoint_K")) == {"idn": "LSCI,MODEL336", "setpoint_K": 42.0}
    assert Virtual.setpoint_K.__doc__ == "Control the setpoint in K."


def test_a_refused_value_sends_nothing_and_read_only_stays_read_only():
    v = Virtual()
    before = v.link.calls
    with pytest.raises(ValueError, match="outside"):
        v.setpoint_K = 400
    assert v.link.calls == before
    with pytest.raises(AttributeError, match="read-only"):
        v.idn = "x"


class Mount:
    def __init__(self):
        self.position, self.moves = 350.0, []

    def move_to(self, angle):
        self.moves.append(angle)
        self.position = angle


class Board:
    rate = "1.953125e6"


class TwoLinks:
    """An instrument with two links, like the polarimeter's plate mount and digitiser."""

    angle_deg = Linked("position", float, "Control the plate angle in degrees.", link="mount",
                       setter="move_to", send=lambda angle: float(angle) % 360.0)  # fmt: skip
    rate_Hz = Linked("rate", float, "Get the sample rate in Hz.", link="board")

    def __init__(self):
        self.mount, self.board = FakeLink(Mount()), FakeLink(Board())
        self.lock = threading.RLock()


def test_each_property_uses_its_own_link_and_a_setter_method_with_its_own_conversion():
    v = TwoLinks()
    assert v.rate_Hz == 1.953125e6 and (v.mount.calls, v.board.calls) == (0, 1)
    v.angle_deg = 370
    # One call on the mount's link, through the driver's method, with the value as sent.
    assert v.mount.driver.moves == [10.0] and (v.mount.calls, v.board.calls) == (1, 1)
    v.mount.driver.position = -5.0  # the driver's signed reading is the property's, unconverted
    assert v.angle_deg == -5.0


def test_a_value_that_cannot_be_converted_fails_before_the_link_is_used():
    v = TwoLinks()
    with pytest.raises(ValueError, match="could not convert"):
        v.angle_deg = "north"
    assert v.mount.calls == 0 and v.mount.driver.moves == []
