"""The run file: layout, statuses, and what survives a crash."""

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from hotspin.procedures.recorder import RunFile


def test_layout_and_completed_status(tmp_path):
    path = tmp_path / "run.h5"
    with RunFile(path, "spin_noise", {"averages": 10, "field_nT": [1.0, 2.0, 3.0]}) as run:
        run.write_snapshot("start", {"heater": {"setpoint_K": 450.0}})
        for step in range(3):
            run.append_spectrum(np.arange(5.0), np.full(5, step + 1.0))
            run.append_results({"larmor_Hz": (100.0 + step, "Hz"), "atoms": (1e13, "")})
        run.write_snapshot("end", {"heater": {"setpoint_K": 450.0}})
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed"
        assert f.attrs["procedure"] == "spin_noise"
        assert "finished" in f.attrs
        assert f["parameters"].attrs["averages"] == 10
        assert f["snapshot/start/heater"].attrs["setpoint_K"] == 450.0
        assert f["spectra/frequency"].attrs["units"] == "Hz"
        assert f["spectra/psd"].attrs["units"] == "rad^2/Hz"
        assert f["spectra/psd"].shape == (3, 5)
        np.testing.assert_array_equal(f["results/larmor_Hz"][...], [100.0, 101.0, 102.0])
        assert f["results/larmor_Hz"].attrs["units"] == "Hz"


def test_results_columns_added_later_are_padded_with_nan(tmp_path):
    path = tmp_path / "run.h5"
    with RunFile(path, "x", {}) as run:
        run.append_results({"a": (1.0, "")})
        run.append_results({"a": (2.0, ""), "b": (5.0, "V")})
        run.append_results({"b": (6.0, "V")})
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["results/a"][...], [1.0, 2.0, np.nan])
        np.testing.assert_array_equal(f["results/b"][...], [np.nan, 5.0, 6.0])


def test_exception_marks_failed_and_ctrl_c_marks_aborted(tmp_path):
    with pytest.raises(RuntimeError), RunFile(tmp_path / "f.h5", "x", {}):
        raise RuntimeError("coil overheated")
    with pytest.raises(KeyboardInterrupt), RunFile(tmp_path / "a.h5", "x", {}):
        raise KeyboardInterrupt
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f.attrs["status"] == "failed"
        assert "coil overheated" in f.attrs["error"]
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f.attrs["status"] == "aborted"


def test_mismatched_spectrum_is_refused(tmp_path):
    with RunFile(tmp_path / "m.h5", "x", {}) as run:
        with pytest.raises(ValueError, match="4 PSD bins for 5 frequencies"):
            run.append_spectrum(np.arange(5.0), np.ones(4))
        run.append_spectrum(np.arange(5.0), np.ones(5))
        with pytest.raises(ValueError, match="frequency axis"):
            run.append_spectrum(np.arange(5.0) + 1, np.ones(5))


def test_never_overwrites(tmp_path):
    path = tmp_path / "run.h5"
    path.write_bytes(b"data")
    with pytest.raises(FileExistsError):
        RunFile(path, "x", {})
    assert path.read_bytes() == b"data"


def test_sigkill_keeps_every_flushed_step(tmp_path):
    path = tmp_path / "killed.h5"
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from hotspin.procedures.recorder import RunFile
        run = RunFile({str(path)!r}, "sweep", {{"steps": 100}})
        for step in range(5):
            run.append_spectrum(np.arange(8.0), np.full(8, float(step)))
            run.append_results({{"step": (float(step), "")}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -signal.SIGKILL
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "running"
        assert f["spectra/psd"].shape == (5, 8)
        np.testing.assert_array_equal(f["results/step"][...], np.arange(5.0))
    assert os.path.getsize(path) > 0
