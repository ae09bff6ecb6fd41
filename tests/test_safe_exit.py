"""Safe on every exit: signals, a second interrupt, a hung supply (issue: no coil left on)."""

import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.interrupts import interrupts_held
from hotspin.instruments.station import Station
from hotspin.simulators.instrument_base import Fault

SWEEP_SCRIPT = """
import sys
from hotspin.instruments.interrupts import terminating_interrupts
from hotspin.instruments.station import Station
from hotspin.procedures.base import run_procedure
from hotspin.procedures.registry import PROCEDURES

steps = []


def on_step(row):
    steps.append(row)
    print("step", flush=True)
    if len(steps) == 2:  # hold the sweep here, coils energised, until the test signals
        sys.stdin.readline()


with terminating_interrupts(), Station.from_file(None, manual_clock=True) as station:
    station.configure()
    run_procedure(PROCEDURES["warmup"].from_values({"dwell_s": 5.0}), station, sys.argv[1] + "-w")
    run_procedure(PROCEDURES["balance"].from_values({}), station, sys.argv[1] + "-b")
    sweep = PROCEDURES["field_sweep"].from_values({"points": 20, "averages": 2})
    run_procedure(sweep, station, sys.argv[1], on_step=on_step)
"""


def default_interrupts() -> None:
    """In the child: Ctrl-C acts as from a terminal, even when the test runner ignores it (a
    shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "signals", [[signal.SIGTERM], [signal.SIGHUP], [signal.SIGINT, signal.SIGINT]],
    ids=["SIGTERM", "SIGHUP", "double-Ctrl-C"],
)  # fmt: skip
def test_a_signal_during_a_field_sweep_aborts_it_with_the_coils_off(tmp_path, signals):
    out = tmp_path / "sweep.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", SWEEP_SCRIPT, str(out)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_interrupts,
    )  # fmt: skip
    for _ in range(2):
        assert process.stdout.readline() == "step\n", process.stderr.read()
    for number in signals:
        process.send_signal(number)
    process.wait(timeout=120)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "aborted"
        reason = f.attrs["abort_reason"]
        if signals[0] != signal.SIGINT:
            assert reason == f"terminated by {signals[0].name}"
        assert "safe_state_failures" not in f.attrs
        end = f["snapshot/end/coils/sources"]
        for axis in "xyz":
            assert end[axis].attrs["source_current_A"] == 0.0
            assert not end[axis].attrs["source_enabled"]
        assert f["results/applied_field_nT"].shape[0] == 2


def test_a_hung_supply_leaves_the_other_two_at_zero_and_off_and_is_named():
    with Station.from_file(None, manual_clock=True) as station:
        station.configure()
        station.coils.set_currents([0.004, -0.003, 0.002])
        sims = {axis: station.simulated_instruments[f"coil_{axis}"] for axis in "xyz"}
        sims["y"].faults.add(Fault("stall"))  # coil_y answers nothing from now on
        with pytest.raises(InterlockError) as refused:
            station.coils.safe_state()
        assert "coil_y" in str(refused.value) and "coil_x" not in str(refused.value)
        currents = sims["x"].lab.coils.currents_A
        assert currents[0] == 0.0 and currents[2] == 0.0
        assert not sims["x"].output_on and not sims["z"].output_on
        assert currents[1] == pytest.approx(-0.003)  # the hung one: as it was, and named
        sims["y"].faults.clear()


def test_held_interrupts_are_delivered_after_the_block():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever ran before
    order = []
    try:
        with pytest.raises(KeyboardInterrupt), interrupts_held():
            signal.raise_signal(signal.SIGINT)
            order.append("the block finished")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert order == ["the block finished"]


AVERAGE_SCRIPT = """
import sys
from hotspin.instruments.station import Station
from hotspin.procedures.base import run_procedure
from hotspin.procedures.recorder import RunFile
from hotspin.procedures.registry import PROCEDURES

RunFile.checkpoint_due = lambda self, interval_s=1.0: True  # every segment, for the test
with Station.from_file(None, manual_clock=True) as station:
    station.configure()
    run_procedure(PROCEDURES["warmup"].from_values({"dwell_s": 5.0}), station, sys.argv[1] + "-w")
    run_procedure(PROCEDURES["balance"].from_values({}), station, sys.argv[1] + "-b")
    long = PROCEDURES["spin_noise"].from_values({"averages": 100000})
    run_procedure(long, station, sys.argv[1], progress=lambda p, m: print(m, flush=True))
"""


def test_a_killed_long_average_keeps_the_average_flushed_before_the_kill(tmp_path):
    out = tmp_path / "average.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", AVERAGE_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True
    )
    seen = 0
    while seen < 5:
        line = process.stdout.readline()
        assert line, "the run ended before it was killed"
        if line.startswith("spectrum: segment"):
            seen = int(line.split()[2])
    process.kill()
    process.wait(timeout=60)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running"  # killed: nobody marked it
        running = f["running_spectrum"]
        assert running.attrs["records"] >= seen
        psd, frequency = running["psd"][...], running["frequency"][...]
        assert psd.shape == frequency.shape and np.all(np.isfinite(psd)) and psd[1:].min() > 0
