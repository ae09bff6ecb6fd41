"""`hotspin gui --watch FILE` follows a run file another process is writing with h5py SWMR."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hotspin.gui.run_viewer import RunViewer
from hotspin.gui.watch import RunFileWatcher

WAIT_MS = 20_000

# A writer in its own process: SWMR file with the run file's groups (root status, spectra rows,
# a results column); it appends one row per line read on stdin and answers when it is flushed.
WRITER = textwrap.dedent(
    """
    import sys
    import h5py
    import numpy as np

    f = h5py.File(sys.argv[1], "w", libver="latest")
    f.attrs["procedure"] = "spin_noise"
    f.attrs["status"] = "running"
    f.create_group("parameters").attrs["averages"] = 20
    spectra = f.create_group("spectra")
    frequency = np.linspace(0.0, 5000.0, 101)
    spectra.create_dataset("frequency", data=frequency)
    psd = spectra.create_dataset("psd", shape=(0, 101), maxshape=(None, 101), chunks=(1, 101))
    step = f.create_group("results").create_dataset("step", shape=(0,), maxshape=(None,),
                                                    chunks=(64,))
    step.attrs["units"] = ""
    f.swmr_mode = True
    for line in sys.stdin:
        n = psd.shape[0]
        larmor = 1000.0 * (n + 1)
        psd.resize((n + 1, 101))
        psd[n] = 1e-14 + 1e-12 / (1 + ((frequency - larmor) / 50.0) ** 2)
        step.resize((n + 1,))
        step[n] = n
        psd.flush()
        step.flush()
        print(f"row {n + 1}", flush=True)
    f.close()
    """
)


@pytest.fixture
def writer(tmp_path):
    path = tmp_path / "growing.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def append() -> str:
        process.stdin.write("next\n")
        process.stdin.flush()
        return process.stdout.readline().strip()

    yield path, append
    process.stdin.close()
    process.wait(timeout=20)


def test_watch_follows_a_file_that_another_process_is_writing(qtbot, writer):
    path, append = writer
    assert append() == "row 1"
    viewer = RunViewer(path.parent)
    qtbot.addWidget(viewer)
    watcher = RunFileWatcher(path, viewer, interval_s=0.05)
    watcher.start()
    try:
        qtbot.waitUntil(
            lambda: viewer.contents is not None and viewer.contents.steps == 1, timeout=WAIT_MS
        )
        assert "running" in viewer.header.text()
        for rows in (2, 3):
            assert append() == f"row {rows}"
            qtbot.waitUntil(lambda r=rows: viewer.contents.steps == r, timeout=WAIT_MS)
        assert viewer.contents.psd.shape == (3, 101)
        assert list(viewer.contents.results["step"].values) == [0, 1, 2]
        assert viewer.results_table.rowCount() == 3
    finally:
        watcher.stop()


def test_hotspin_gui_help_names_the_watch_option(capsys):
    from hotspin.cli import main as cli_main

    with pytest.raises(SystemExit):
        cli_main(["gui", "--help"])
    assert "--watch FILE" in capsys.readouterr().out
