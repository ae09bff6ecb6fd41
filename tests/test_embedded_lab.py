"""The embedded simulated lab kept between processes; the scripting API on it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from hotspin.instruments.station import Station
from hotspin.simulators.persistence import LabInUseError, LabStore

import hotspin
from hotspin.cli import main


def hotspin_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "hotspin.cli", *args], capture_output=True, text=True,
        timeout=300, **kwargs,
    )  # fmt: skip


def test_a_cold_lab_refuses_a_spectrum_before_any_record(lab_state, tmp_path, capsys):
    out = tmp_path / "never.h5"
    assert main(["run", "spin_noise", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cell at 295 K" in err and "run `hotspin run warmup` first" in err
    assert not out.exists()


def test_warmup_in_one_process_then_a_spectrum_in_the_next(lab_state, tmp_path):
    warm = hotspin_cli("run", "warmup", "--set", "dwell_s=10", "--out", str(tmp_path / "w.h5"))
    assert warm.returncode == 0, warm.stderr
    assert "new embedded simulated lab, cold" in warm.stderr
    balance = hotspin_cli("run", "balance", "--out", str(tmp_path / "b.h5"))
    assert balance.returncode == 0, balance.stderr
    assert "as it was left: cell 45" in balance.stderr  # 450 K, held by the loop
    spectrum = hotspin_cli(
        "run", "spin_noise", "--set", "averages=6", "--out", str(tmp_path / "s.h5")
    )
    assert spectrum.returncode == 0, spectrum.stderr
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["status"] == "completed"
        assert f["snapshot/start/heater"].attrs["temperature_K"] > 440
        # The field the coils apply (the embedded station's bias, 300 nT) sets the line.
        larmor = f["summary"].attrs["larmor_frequency_Hz"]
        assert larmor == pytest.approx(4.659 * 300, rel=0.05)


def test_a_second_process_is_refused_naming_the_first(lab_state, tmp_path):
    store = LabStore()
    store.acquire()
    try:
        second = hotspin_cli("run", "warmup", "--out", str(tmp_path / "w.h5"))
        assert second.returncode == 2
        assert "in use by PID" in second.stderr
        with pytest.raises(LabInUseError, match="in use by PID"):
            LabStore().acquire()
    finally:
        store.release()
    LabStore().acquire()  # free again once released


def test_leaving_open_station_through_an_exception_leaves_the_coils_off(lab_state):
    keithleys = []
    with pytest.raises(RuntimeError, match="the script failed"), hotspin.open_station() as station:
        station.coils.set_currents([0.005, 0.0, 0.002])
        keithleys += [station.simulated_instruments[f"coil_{a}"] for a in "xyz"]
        assert keithleys[0].lab.coils.currents_A[0] == pytest.approx(0.005)
        raise RuntimeError("the script failed")
    currents = keithleys[0].lab.coils.currents_A
    assert np.allclose(currents, 0.0)
    assert not any(k.output_on for k in keithleys)


def test_the_readme_script_example_runs(lab_state, tmp_path):
    # A lab made ready by `hotspin sim reset --ready` (in this process: the lab it leaves is
    # persisted all the same), then the README's example as written.
    assert main(["sim", "reset", "--ready"]) == 0
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(textwrap.dedent(example).replace('averages=50', 'averages=18, out=OUT'),
         {"OUT": tmp_path / "s.h5", **namespace})  # fmt: skip
    run = hotspin.load_run(tmp_path / "s.h5")
    spectrum = run.spectrum
    assert spectrum["psd"].attrs["units"] == "rad^2/Hz"
    peak = float(spectrum["frequency"][int(np.argmax(spectrum["psd"].values[0]))])
    field_nT = 300.0
    assert peak == pytest.approx(4.659 * field_nT, rel=0.1)
    assert run.results.shape[0] == 1 and "larmor_frequency_Hz" in run.results
    assert run.summary["larmor_frequency_Hz"].units == "Hz"
    assert run.summary["atom_number"].uncertainty > 0


def test_one_station_at_a_time_in_process(lab_state):
    with Station.from_file(None, persist=True), pytest.raises(LabInUseError):
        Station.from_file(None, persist=True)
