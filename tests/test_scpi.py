"""The shared SCPI session layer: header matching, error queues and the per-instrument options.

Rules checked: SCPI-99 vol. 1 §6.2.5.2 (a numeric suffix left out is 1), §6.2 (short and long
forms, optional nodes); SCPI-99 vol. 2 §21.8 (the queue's overflow entry -350); IEEE 488.2 §7.7.5
(a quote inside string data is doubled) and §11 (ESR, ESE, STB bits).
"""

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.scpi import ErrorQueue, Header, ScpiInstrument, format_error


class _Meter(ScpiInstrument):
    """A minimal instrument: two numbered channels and a parameterless query."""

    error_queue_length = 4

    def __init__(self, lab: SimulatedLab) -> None:
        super().__init__(lab, "meter")
        self.levels = {1: 0.0, 2: 0.0}
        self.declare(
            [
                ("[:SOURce#]:VOLTage[:LEVel]", self._set, lambda p: str(self.levels[self._n()])),
                (
                    ":SYSTem:ERRor[:NEXT]",
                    None,
                    self._common(lambda: format_error(self.errors.pop())),
                ),
            ]
        )

    def _n(self) -> int:
        return self.numbers[0]

    def _set(self, parameter: str) -> None:
        self.levels[self._n()] = float(parameter)

    def identity(self) -> str:
        return "HOTSPIN,METER,0,0"

    def reset(self) -> None:
        self.levels = {1: 0.0, 2: 0.0}


@pytest.fixture
def lab():
    return SimulatedLab(LabConfig(seed=1), SimClock(manual=True))


@pytest.mark.parametrize(
    ("tokens", "numbers"),
    [
        (["SOUR2", "VOLT"], (2,)),
        (["source12", "voltage", "lev"], (12,)),
        (["SOUR", "VOLT"], (1,)),  # bare: 1
        (["VOLT"], (1,)),  # the optional numbered node left out: 1
        (["SOURC2", "VOLT"], None),  # neither the short nor the long form
        (["SOUR2", "VOLT", "LEV", "X"], None),
    ],
)
def test_numbered_headers_give_their_suffix(tokens, numbers):
    assert Header("[:SOURce#]:VOLTage[:LEVel]").match(tokens) == numbers


def test_a_numbered_header_reaches_its_channel(lab):
    meter = _Meter(lab)
    assert meter.handle(b"SOUR2:VOLT 1.5;:VOLT 0.5;:SOUR2:VOLT?;:VOLT?") == b"1.5;0.5\n"


def test_queue_keeps_its_last_slot_for_the_overflow_by_default():
    queue = ErrorQueue(3)
    assert [queue.push(-100 - n, "e") for n in range(4)] == [True, True, False, False]
    assert queue.drain() == [(-100, "e"), (-101, "e"), (-350, "Queue overflow")]


def test_queue_that_replaces_its_newest_entry_holds_its_whole_length():
    queue = ErrorQueue(3, replace_last=True)
    assert [queue.push(-100 - n, "e") for n in range(3)] == [True, True, True]
    assert queue.push(-103, "e") is False
    assert queue.drain() == [(-100, "e"), (-101, "e"), (-350, "Queue overflow")]


def test_a_quote_in_an_error_message_is_doubled():
    assert format_error((-113, 'Undefined header;A "B"')) == '-113,"Undefined header;A ""B"""'


def test_by_default_a_parameter_refuses_a_parameterless_command(lab):
    meter = _Meter(lab)
    meter.handle(b"*CLS")
    assert meter.handle(b"*IDN? 1") == b""  # refused: no reply
    assert meter.handle(b"*ESR?") == b"32\n"  # -108 is a command error: ESR bit 5
    assert meter.handle(b"SYST:ERR?") == b'-108,"Parameter not allowed"\n'


def test_the_status_is_the_instruments_own_unless_per_connection(lab):
    meter = _Meter(lab)
    first, second = meter.open_session(), meter.open_session()
    first.feed(b"*ESE 16\n")
    assert second.feed(b"*ESE?\n") == b"16\n"
    assert meter.handle(b"*ESR?") == b"128\n"  # power on (IEEE 488.2 §11.5.1.1.2, bit 7)
