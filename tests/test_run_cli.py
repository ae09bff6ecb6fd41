"""`hotspin run`: headless runs, exit codes, Ctrl-C and SIGKILL, and runs over TCP via sim serve."""

import io
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import NAMES, SMALL, free_ports, station_text
from helpers.killable import Child, start_child, wait_for_steps

from hotspin.cli import main
from hotspin.headless import run_command
from hotspin.progress import ProgressBar


def test_run_writes_the_file_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "warm.h5"
    args = ["run", "warmup", "--set", "target_temperature_K=320", "--set", "dwell_s=5",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "warmup: completed" in printed.out and "final_temperature_K" in printed.out
    assert "simulated lab: a new embedded simulated lab, cold" in printed.err  # where it starts
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed"
        assert f["results/temperature_K"][-1] == pytest.approx(320.0, abs=0.2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "warmup", "--set", "dwell_s=-1"], "dwell_s = -1 is outside the allowed range"),
        (["run", "warmup", "--set", "target_temperature_K=480"], "heater.max_temperature_K"),
        (["run", "teleport"], "unknown procedure 'teleport'"),
        (["run", "spin_noise", "--set", "averages=many"], "averages = 'many' is not a number"),
    ],
)
def test_bad_input_is_refused_before_the_run(tmp_path, capsys, args, message):
    out = tmp_path / "never.h5"
    assert main([*args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_unbalanced_polarimeter_is_refused_saying_what_to_run(tmp_path, capsys):
    # A warm cell, the light on, the plate where nobody balanced it: the probe record clips.
    assert main(["run", "warmup", "--set", "dwell_s=5", "--out", str(tmp_path / "w.h5")]) == 0
    capsys.readouterr()
    out = tmp_path / "refused.h5"
    assert main(["run", "spin_noise", "--set", "averages=4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the polarimeter clips" in err and "run `hotspin run balance` first" in err
    assert not out.exists()


def default_interrupts() -> None:
    """In the child: Ctrl-C acts as from a terminal, even when the test runner ignores it (a
    shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "hotspin.cli", "run", "warmup", "--set", "sample_interval_s=2",
         "--set", "dwell_s=3000",
         "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_interrupts,
    )  # fmt: skip


def wait_for_progress(process, percent):
    """Read the progress bar until it shows at least ``percent``."""
    text = ""
    while process.poll() is None:
        text += process.stderr.read(40)
        shown = [int(p) for p in text.replace("%", " % ").split() if p.isdigit()]
        if shown and max(shown) >= percent:
            return
    raise AssertionError(f"the run ended before {percent} %: {text[-300:]}")


def test_ctrl_c_aborts_with_status_aborted_and_keeps_the_steps(tmp_path):
    out = tmp_path / "interrupted.h5"
    process = start_run(out)
    wait_for_progress(process, 10)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "aborted"
        steps = f["results/temperature_K"].shape[0]
        assert steps >= 2
        assert f["results/time_s"].shape[0] == steps
        assert "snapshot/end" in f


def test_sigkill_leaves_a_readable_file_with_every_flushed_step(tmp_path):
    out = tmp_path / "killed.h5"
    process = start_run(out)
    wait_for_progress(process, 10)
    process.kill()
    process.wait(timeout=30)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "running"
        steps = f["results/temperature_K"].shape[0]
        assert steps >= 2
        for column in f["results"].values():
            assert column.shape == (steps,)
        assert np.all(np.isfinite(f["results/temperature_K"][...]))


def test_every_procedure_runs_through_sim_serve_over_tcp(tmp_path):
    ports = free_ports(len(NAMES))
    served = tmp_path / "served.toml"
    served.write_text(station_text(ports, simulated=True).replace("50.0", "1000.0"))
    client = tmp_path / "client.toml"  # its clock at the served lab's speed
    client.write_text(station_text(ports, simulated=False).replace("50.0", "1000.0"))
    server = subprocess.Popen(
        [sys.executable, "-m", "hotspin.cli", "sim", "serve", "--station", str(served)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(1 + len(NAMES)):
            server.stdout.readline()
        runs = [
            ("warmup", ["target_temperature_K=450", "dwell_s=1", "sample_interval_s=0.5"]),
            ("balance", []),
            *[(name, [f"{k}={v}" for k, v in SMALL[name].items()]) for name in SMALL
              if name not in ("warmup", "balance")],
            ("spin_noise", ["averages=18"]),  # segments: the data of six records
        ]  # fmt: skip
        for name, settings in runs:
            settings = [s.replace(" ", "").strip("[]") if "," in s else s for s in settings]
            out = tmp_path / f"{name}.h5"
            if out.exists():
                out.unlink()
            assert run_command(name, settings, str(client), str(out)) == 0, name
            with h5py.File(out, "r") as f:
                assert f.attrs["status"] == "completed", name
        with h5py.File(tmp_path / "spin_noise.h5", "r") as f:
            assert "simulation_truth" not in f["snapshot/start"]
            # The client keeps the served lab's speed, and knows no reader follows its ring.
            assert "runs 1000 times faster than the wall" in f.attrs["notes"]
            atoms = f["summary"].attrs["atom_number"]
            sigma = f["summary"].attrs["atom_number_uncertainty"]
            assert f["summary"].attrs["larmor_frequency_Hz"] == pytest.approx(4.659 * 300, rel=0.05)
        # 450 K, 3 cm, 3.1 mm²: about 3.3e13 atoms in the beam.
        assert abs(atoms - 3.28e13) < 4 * sigma
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL])
def test_a_sweep_stopped_by_ctrl_c_or_killed_keeps_every_finished_spectrum(tmp_path, stop):
    out = tmp_path / "sweep.h5"
    warm_and_balanced = (("warmup", {"dwell_s": 5.0}), ("balance", {}))
    sweep = Child("field_sweep", {"points": 40, "averages": 4}, str(out),
                  before=warm_and_balanced, hold_at_step=3, interrupts=True)  # fmt: skip
    process, reports = start_child(sweep)
    wait_for_steps(reports, 3)
    os.kill(process.pid, stop)
    process.join(timeout=60)
    assert not process.is_alive()
    with h5py.File(out, "r") as f:
        expected = "aborted" if stop == signal.SIGINT else "running"
        assert f.attrs["status"] == expected
        steps = f["results/applied_field_nT"].shape[0]
        assert steps == 3
        assert f["spectra/psd"].shape[0] == steps
        assert f["spectra/psd_standard_error"].shape[0] == steps
        assert np.all(np.isfinite(f["results/larmor_frequency_Hz"][:3]))


def test_the_progress_bar_redraws_on_change_and_ends_its_line_once():
    stream = io.StringIO()
    bar = ProgressBar("sweep", stream=stream, width=10)
    for done in (0, 0.1, 0.1, 5, 10, 10):
        bar(done, 10)
    frames = stream.getvalue().replace("\r", "\n").splitlines()
    assert [frame.split("]")[1].split("%")[0].strip() for frame in frames] == [
        "0",
        "1",
        "50",
        "100",
    ]
    assert stream.getvalue().count("\n") == 1 and frames[-1].startswith("sweep [##########] 100%")


@pytest.mark.timeout(120)
def test_a_station_nobody_answers_names_the_instrument_and_resource_and_exits_3(tmp_path, capsys):
    ports = free_ports(len(NAMES))
    station = tmp_path / "dead.toml"
    station.write_text(station_text(ports, simulated=False))  # nothing listens on these ports
    out = tmp_path / "never.h5"
    assert main(["run", "warmup", "--station", str(station), "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hotspin run: failed: ")
    assert "::SOCKET)" in err and any(f"127.0.0.1::{port}::SOCKET" in err for port in ports)
    assert "Error:" not in err  # the instrument and where it is, not a Python class
