"""A full disk: refused before a run that cannot fit, `failed` with the disk named when it fills
during one, the file readable up to its last flush, and never a crash inside HDF5."""

import contextlib
import subprocess
import sys
import textwrap

import h5py
import pytest
from hotspin.procedures import recorder
from hotspin.procedures.recorder import DISK_RESERVE_BYTES, RunFile

from hotspin.cli import main

WARMUP = ["run", "warmup", "--set", "target_temperature_K=320", "--set", "dwell_s=20",
          "--set", "sample_interval_s=0.5"]  # fmt: skip


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of the test's own (skipped where it cannot be mounted)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory, leave_bytes):
    """Fill the disk holding ``directory`` until ``leave_bytes`` are free."""
    free = recorder.free_bytes(directory)
    with open(directory / "filler", "wb") as filler, contextlib.suppress(OSError):
        filler.write(bytes(max(free - leave_bytes, 0)))


def test_a_run_that_fills_the_disk_fails_naming_it_and_keeps_its_steps(
    small_disk, monkeypatch, capsys
):
    out = small_disk / "warm.h5"
    append = RunFile.append_results

    def append_then_fill(self, row):
        append(self, row)
        if self._steps == 3:  # another program fills the disk after the third step
            fill(small_disk, DISK_RESERVE_BYTES // 2)

    monkeypatch.setattr(RunFile, "append_results", append_then_fill)
    assert main([*WARMUP, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"hotspin run: failed: disk full at {out}" in err
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed"
        assert f.attrs["error"] == f"disk full at {out}"
        assert f["results/temperature_K"].shape[0] >= 3  # every flushed step
    assert not (small_disk / "warm.h5.reserve").exists()


REAL_ENOSPC = """
import sys
import numpy as np
import h5py
from hotspin.procedures.recorder import DISK_RESERVE_BYTES, DiskFullError, RunFile, free_bytes

directory, = sys.argv[1:]
run = RunFile(directory + "/spectra.h5", "spin_noise", {})
run.append_spectrum(np.arange(10.0), np.ones(10))
with open(directory + "/filler", "wb") as filler:  # room for the reserve check, not for a row
    filler.write(bytes(free_bytes(directory) - DISK_RESERVE_BYTES - 100_000))
try:
    with run:
        # 3.2 MB, more than is left: HDF5 itself meets the full disk when it flushes
        run.write_dataset("traces/big", np.ones(400_000), "V")
except DiskFullError as error:
    print(error)
"""


def test_hdf5_meeting_a_full_disk_does_not_crash_and_the_file_stays_readable(small_disk):
    finished = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REAL_ENOSPC), str(small_disk)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr  # no SIGBUS, no segfault
    assert f"disk full at {small_disk}/spectra.h5" in finished.stdout
    with h5py.File(small_disk / "spectra.h5", "r") as f:
        assert f.attrs["status"] == "failed"
        assert f["spectra/psd"].shape[0] >= 1  # the row flushed before the disk filled


def test_a_file_that_fails_to_write_ends_the_run_failed_and_readable(tmp_path, monkeypatch, capsys):
    out = tmp_path / "warm.h5"
    flush = h5py.File.flush
    calls = []

    def flush_until_the_disk_fails(self):
        calls.append(1)
        if len(calls) > 6:
            raise RuntimeError(
                "Unable to synchronously flush file (file write failed: errno = 28, "
                "error message = 'No space left on device')"
            )
        flush(self)

    monkeypatch.setattr(h5py.File, "flush", flush_until_the_disk_fails)
    assert main([*WARMUP, "--out", str(out)]) == 1
    assert f"disk full at {out}" in capsys.readouterr().err
    monkeypatch.setattr(h5py.File, "flush", flush)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed"
        assert f.attrs["error"] == f"disk full at {out}"
        assert "results" in f


def test_a_run_larger_than_the_free_disk_is_refused_with_both_figures(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(recorder, "free_bytes", lambda directory: 500_000)
    out = tmp_path / "sweep.h5"
    assert main(["run", "field_sweep", "--set", "points=100", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    # 100 steps of three 4097-bin rows of 8-byte floats, the fixed part and the reserve.
    needed = 100 * 3 * 8 * 4097 + 2 * (1 << 20)
    assert f"needs about {needed / 1e6:.4g} MB at {tmp_path}" in err
    assert "only 0.5 MB are free there" in err
    assert not out.exists()


def test_simulate_refuses_a_record_larger_than_the_free_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recorder, "free_bytes", lambda directory: 10_000_000)
    out = tmp_path / "huge.h5"
    args = ["simulate", "--duration-s", "1e5", "--sample-rate-Hz", "1e6", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"a record of {int(1e11)} samples needs about {(12e11 + (1 << 20)) / 1e6:.4g} MB" in err
    assert "only 10 MB are free there" in err
    assert not out.exists()
