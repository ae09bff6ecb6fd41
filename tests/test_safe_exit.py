"""Safe on every exit: signals, a second interrupt, a hung supply (issue: no coil left on)."""

import os
import signal

import h5py
import numpy as np
import pytest
from helpers.killable import Child, next_report, start_child, wait_for_steps
from hotspin.instruments.errors import InterlockError
from hotspin.instruments.interrupts import interrupts_held
from hotspin.instruments.station import Station
from hotspin.simulators.instrument_base import Fault

WARM_AND_BALANCED = (("warmup", {"dwell_s": 5.0}), ("balance", {}))


@pytest.mark.parametrize(
    "signals", [[signal.SIGTERM], [signal.SIGHUP], [signal.SIGINT, signal.SIGINT]],
    ids=["SIGTERM", "SIGHUP", "double-Ctrl-C"],
)  # fmt: skip
def test_a_signal_during_a_field_sweep_aborts_it_with_the_coils_off(tmp_path, signals):
    out = tmp_path / "sweep.h5"
    # A new embedded lab, warmed and balanced, then a sweep held at its second step with the
    # coils energised, in a process whose Ctrl-C, SIGTERM and SIGHUP act as the command line's.
    sweep = Child("field_sweep", {"points": 20, "averages": 2}, str(out),
                  before=WARM_AND_BALANCED, hold_at_step=2, interrupts=True)  # fmt: skip
    process, reports = start_child(sweep)
    wait_for_steps(reports, 2)
    for number in signals:
        os.kill(process.pid, number)
    process.join(timeout=120)
    assert not process.is_alive()
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


def test_a_killed_long_average_keeps_the_average_flushed_before_the_kill(tmp_path):
    out = tmp_path / "average.h5"
    average = Child("spin_noise", {"averages": 100000}, str(out), before=WARM_AND_BALANCED,
                    checkpoint_every_segment=True)  # fmt: skip
    process, reports = start_child(average)
    seen = 0
    while seen < 5:
        assert reports.poll(120), "no report from the run"
        message = next_report(reports)
        assert message != "done", "the run ended before it was killed"
        if message.startswith("progress: spectrum: segment"):
            seen = int(message.split()[3])
    process.kill()
    process.join(timeout=60)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running"  # killed: nobody marked it
        running = f["running_spectrum"]
        assert running.attrs["records"] >= seen
        psd, frequency = running["psd"][...], running["frequency"][...]
        assert psd.shape == frequency.shape and np.all(np.isfinite(psd)) and psd[1:].min() > 0
