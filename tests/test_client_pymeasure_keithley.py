"""pymeasure's stock `Keithley6221` driver against a served 6221, over pyvisa-py.

The stock driver (not hotspin's subclass) with its defaults; only the resource is ours, and the
read termination: a raw socket has no end-of-message signal (GPIB's EOI), so pyvisa needs one for
any instrument on a ``::SOCKET`` resource, the real 6221 on port 1394 included; the driver leaves
it to the caller. It reads
the status byte with ``*STB?`` (SCPIMixin.status), sets ``:SOUR:DEL`` (source_delay), resets with
``status:queue:clear;*RST;:stat:pres;:*CLS;`` and reads the error queue with ``SYST:ERR?``.
"""

import pytest
from hotspin.simulators.clock import SimClock
from hotspin.simulators.keithley6221 import SimulatedKeithley6221
from hotspin.simulators.lab import SimulatedLab
from hotspin.simulators.server import SimServer
from pymeasure.instruments.keithley import Keithley6221


@pytest.fixture
def served():
    lab = SimulatedLab(clock=SimClock(manual=True))
    with SimServer({"coil_x": (SimulatedKeithley6221(lab, "coil_x", axis=0), 0)}) as server:
        yield lab, server.resource("coil_x")


def test_the_whole_session_of_pymeasures_keithley6221(served):
    lab, resource = served
    source = Keithley6221(resource, read_termination="\n")
    try:
        assert source.id.startswith("KEITHLEY INSTRUMENTS INC.,MODEL 6221,")
        source.reset()
        assert source.check_errors() == []
        assert source.status == "0"
        assert source.source_current == 0.0
        source.source_range = 0.02
        source.source_current = 0.0125
        source.source_compliance = 5.0
        source.source_delay = 0.01
        assert source.source_delay == pytest.approx(0.01)
        source.enable_source()
        assert source.source_enabled is True
        assert source.source_current == pytest.approx(0.0125)
        assert lab.coils.currents_A[0] == pytest.approx(0.0125)
        source.measurement_event_enabled = 8
        assert source.measurement_event_enabled == 8
        assert source.srq_event_enabled == 0
        # Invalid: the driver's validator refuses before sending ...
        with pytest.raises(ValueError):
            source.source_enabled = "maybe"
        # ... and a command the 6221 does not know lands in its error queue, which the driver's
        # own check reads: -113, and the error-available bit (4) of the status byte meanwhile.
        source.write(":SOUR:CURR:LIMIT 1")
        assert int(source.status) & 4
        assert source.check_errors() == [[-113.0, '"Undefined header"']]
        # A level beyond the fixed 20 mA range is refused (-222); the coil keeps its current.
        source.write(":SOUR:CURR 0.05")
        assert source.next_error == [-222.0, '"Parameter data out of range"']
        assert lab.coils.currents_A[0] == pytest.approx(0.0125)
        source.shutdown()
        assert source.source_enabled is False  # a query: the write before it has been executed
        assert lab.coils.currents_A[0] == 0.0
    finally:
        source.adapter.close()
