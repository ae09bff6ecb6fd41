"""Continuous records: the stream's spectrum, the `record` procedure's file, live and killed.

The spectrum of a long deep-memory stream is compared with the spin model's expectation plus the
ADC's quantisation noise; the run file is read while it grows by another process (SWMR), and a
run killed with SIGKILL leaves a readable file holding every sample a reader saw flushed.
"""

import os
import select
import signal
import subprocess
import sys
import textwrap
import traceback

import h5py
import numpy as np
import pytest
from helpers.streams import gap_free_angle
from hotspin.analysis.detection import DetectionChain, detected_atoms, detected_white_noise
from hotspin.analysis.spectra import welch_expectation
from hotspin.instruments.redpitaya import RedPitaya
from hotspin.instruments.station import Station
from hotspin.procedures.base import run_procedure
from hotspin.procedures.recorder import ContinuousRecord, RunFile, open_run_file
from hotspin.procedures.registry import PROCEDURES
from hotspin.simulators.cell_oven import OvenConfig
from hotspin.simulators.clock import SimClock
from hotspin.simulators.inprocess import InProcessAdapter
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.redpitaya import SimulatedRedPitaya
from scipy import signal as dsp

DEADLINE_S = 120.0  # every wait on another process is bounded by this


def test_spectrum_of_a_long_stream_matches_the_model():
    # An oven of huge heat capacity holds 450 K: a cooling cell would change the spectrum
    # during the record (τ = 300 s: 2 K in these 4 s, 15 % in density).
    config = LabConfig(seed=2, oven=OvenConfig(heat_capacity_J_per_K=1e9))
    lab = SimulatedLab(config, SimClock(manual=True))
    lab.oven.temperature_K = 450.0
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = config.polarimeter.hwp_zero_deg  # balanced
    board = SimulatedRedPitaya(lab)
    pitaya = RedPitaya(InProcessAdapter(board), sleep=lab.clock.sleep, now=lab.clock.now)
    detector = config.polarimeter
    streamed = gap_free_angle(pitaya, 256, 1 << 21, detector)
    volts, theta, fs = streamed.volts, streamed.theta_rad, streamed.sample_rate_Hz
    frequency, psd = dsp.welch(theta, fs, nperseg=1 << 16)
    truth = lab.truth()
    # Rounding to codes adds white noise of q²/12 per sample, q/(2 V_sum) · G_s/G_d in angle.
    step_rad = (
        streamed.volts_per_code[0]
        * detector.gain_sum_V_per_A
        / detector.gain_diff_V_per_A
        / (2 * volts[1].mean())
    )
    # The board records behind the PDB450A's pole and its averaging decimation: the expected
    # Welch spectrum of the detected atoms, white noise and code rounding (exact, with leakage).
    chain = DetectionChain.pdb450a(detector.gain_diff_V_per_A, 256, decimation_averaging=True)
    lags = 1 << 16
    autocovariance = detected_atoms(
        truth.model, truth.coupling_upper_rad, truth.coupling_lower_rad, chain
    ).autocovariance(lags)
    autocovariance += truth.white_noise_psd_rad2_per_Hz * detected_white_noise(
        chain
    ).autocovariance(lags)
    autocovariance[0] += step_rad**2 / 12
    expected = welch_expectation(autocovariance, dsp.get_window("hann", lags), fs)
    # The line (≈ 60 Hz) is narrower than the Welch resolution's leakage allows: above 1 kHz
    # the model is smooth, and 63 averages over 29 000 bins pin the mean ratio to ±0.2 %.
    band = (frequency > 1e3) & (frequency < 0.45 * fs)
    assert np.mean(psd[band] / expected[band]) == pytest.approx(1.0, abs=0.02)
    for low, high in ((1e3, 1e4), (1e4, 1e5)):
        part = (frequency > low) & (frequency < high)
        assert np.mean(psd[part] / expected[part]) == pytest.approx(1.0, abs=0.04)


@pytest.fixture
def station():
    """The embedded simulated station on a clock that moves when the code waits: the board
    writes exactly what the client waits for, however busy the machine."""
    station = Station.from_file(None, manual_clock=True)
    station.configure()
    yield station
    station.close()


def test_record_procedure_writes_the_continuous_format(station, tmp_path):
    procedure = PROCEDURES["record"].from_values({"duration_s": 0.5, "decimation": 1024})
    path = run_procedure(procedure, station, tmp_path / "record.h5")
    n = round(0.5 * 125e6 / 1024)
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed" and f.attrs["procedure"] == "record"
        assert "snapshot/start/heater" in f and "snapshot/end/coils" in f
        assert f["parameters"].attrs["temperature_K"] > 0  # the apparatus state
        record = f["records/polarimeter"]
        assert record.attrs["sample_rate_Hz"] == 125e6 / 1024
        assert record.attrs["decimation"] == 1024
        assert record.attrs["first_index"] == 0
        assert list(record.attrs["channels"]) == ["v_diff", "v_sum"]
        for name in ("v_diff", "v_sum"):
            codes = record[name]
            assert codes.dtype == np.int16 and codes.shape == (n,)  # 4 bytes per sample pair
            assert codes.chunks is not None and codes.maxshape == (None,)
            assert codes.attrs["volts_per_code"] == pytest.approx(1 / 8192)  # LV inputs
        assert record["gaps/length"].shape == (0,)
        assert f["summary"].attrs["samples_recorded"] == n
        assert f["summary"].attrs["samples_missing"] == 0
        # The sum output is the detected light: steady and positive, well inside the range.
        v_sum = record["v_sum"][...] * record["v_sum"].attrs["volts_per_code"]
        assert 0.01 < v_sum.mean() < 0.99


# The writer records on a clock that moves only when it waits, and says after each flush how
# many samples per channel it has flushed.
WRITER = """
import sys
from hotspin.instruments.station import Station
from hotspin.procedures.base import run_procedure
from hotspin.procedures.recorder import ContinuousRecord
from hotspin.procedures.registry import PROCEDURES
flush = ContinuousRecord.flush
def flush_and_say(record):
    flush(record)
    print(record.stored, flush=True)
ContinuousRecord.flush = flush_and_say
station = Station.from_file(None, manual_clock=True)
station.configure()
procedure = PROCEDURES["record"].from_values({{"duration_s": {duration}, "decimation": 1024}})
run_procedure(procedure, station, sys.argv[1])
station.close()
"""


# The reader answers each "look" with the length of the record it sees through SWMR, so the
# test asks it right after each of the writer's flushes: no polling, no waiting on the wall.
READER = """
import sys
import h5py
codes = None
for line in sys.stdin:
    if codes is None:
        codes = h5py.File(sys.argv[1], "r", libver="latest", swmr=True)["records/polarimeter/v_sum"]
    codes.refresh()
    print(codes.shape[0], flush=True)
"""


def python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_swmr_reader_in_another_process_sees_the_record_grow(station, tmp_path, monkeypatch):
    path = tmp_path / "live.h5"
    reader = python(READER, str(path))
    flush = ContinuousRecord.flush
    flushed_and_seen = []

    def flush_then_ask_the_reader(record):
        flush(record)
        reader.stdin.write("look\n")
        reader.stdin.flush()
        ready, _, _ = select.select([reader.stdout], [], [], DEADLINE_S)
        assert ready, "the SWMR reader did not answer"
        flushed_and_seen.append((record.stored, int(reader.stdout.readline())))

    monkeypatch.setattr(ContinuousRecord, "flush", flush_then_ask_the_reader)
    try:
        # Flushed every second of the lab's time: three times before the end of a 3 s record.
        procedure = PROCEDURES["record"].from_values({"duration_s": 3.0, "decimation": 1024})
        run_procedure(procedure, station, path)
    finally:
        _, err = reader.communicate(timeout=DEADLINE_S)
    with h5py.File(path, "r") as f:
        final = f["records/polarimeter/v_sum"].shape[0]
    # After every flush the other process saw exactly what had been flushed, while the run was
    # still writing (all but the last smaller than the finished record).
    assert [seen for _, seen in flushed_and_seen] == [n for n, _ in flushed_and_seen], err
    growing = [seen for _, seen in flushed_and_seen if seen < final]
    assert len(growing) >= 2 and growing == sorted(growing), (flushed_and_seen, final)


def test_a_killed_record_leaves_every_flushed_sample_readable(tmp_path):
    path = tmp_path / "killed.h5"
    writer = python(WRITER.format(duration=60.0), str(path))
    flushed = 0
    try:
        while flushed < 200_000:
            ready, _, _ = select.select([writer.stdout], [], [], DEADLINE_S)
            line = writer.stdout.readline() if ready else ""
            assert line, f"the writer ended or stalled after {flushed} samples: {writer.stderr}"
            flushed = int(line)
        with h5py.File(path, "r", libver="latest", swmr=True) as f:  # what a reader sees now
            record = f["records/polarimeter"]
            for name in ("v_diff", "v_sum"):
                record[name].refresh()
            seen = np.stack([record["v_diff"][:flushed], record["v_sum"][:flushed]], axis=1)
        assert writer.poll() is None, "the writer ended before it was killed"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=DEADLINE_S)
    assert writer.returncode == -signal.SIGKILL
    assert seen.shape[0] == flushed
    with open_run_file(path) as f:
        assert f.attrs["status"] == "running"  # it never finished
        record = f["records/polarimeter"]
        assert record.attrs["sample_rate_Hz"] == 125e6 / 1024
        kept = np.stack([record["v_diff"][...], record["v_sum"][...]], axis=1)
        assert record["gaps/length"][...].sum() == 0
    assert kept.shape[0] >= flushed  # every flushed sample is kept, unchanged
    np.testing.assert_array_equal(kept[:flushed], seen)


def test_a_record_refuses_blocks_out_of_order(tmp_path):
    with RunFile(tmp_path / "run.h5", "record", {}, live=True) as run:
        record = run.create_record("x", {"a": 1e-3}, 1e3, 1, 0.0)
        record.append(0, np.zeros((1, 5), dtype=np.int16))
        with pytest.raises(ValueError, match="starts at sample 7, the record at 5"):
            record.append(7, np.zeros((1, 5), dtype=np.int16))
        record.add_gap(5, 2)
        record.append(7, np.ones((1, 3), dtype=np.int16))
        with pytest.raises(ValueError, match=r"expected \(1, n\) int16"):
            record.append(10, np.zeros((2, 3), dtype=np.int16))
    with h5py.File(tmp_path / "run.h5", "r") as f:
        gaps = f["records/x/gaps"]
        assert (gaps["first_index"][0], gaps["length"][0], gaps["position"][0]) == (5, 2, 5)
        np.testing.assert_array_equal(f["records/x/a"][...], [0, 0, 0, 0, 0, 1, 1, 1])
    assert os.path.getsize(tmp_path / "run.h5") > 0


def test_a_disk_filling_during_a_record_fails_the_run_naming_it(station, tmp_path, monkeypatch):
    # The record's periodic flushes go through the run file's, which checks the free space.
    from hotspin.procedures import recorder

    recording = []

    def flush_every_block(record):
        recording.append(record)
        record.flush()

    # The disk is full from the record's first flush on: the failure comes from that path.
    monkeypatch.setattr(recorder.ContinuousRecord, "_flush_if_due", flush_every_block)
    monkeypatch.setattr(recorder, "free_bytes", lambda directory: 0 if recording else 10**12)
    procedure = PROCEDURES["record"].from_values({"duration_s": 0.5, "decimation": 1024})
    with pytest.raises(OSError, match="disk full at") as failed:
        run_procedure(procedure, station, tmp_path / "record.h5")
    # First raised by the record's own flush (the run's end flush then meets it again).
    chain, error = [], failed.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    frames = {
        frame.f_code.co_name for e in chain for frame, _ in traceback.walk_tb(e.__traceback__)
    }
    assert "flush_every_block" in frames
    with h5py.File(tmp_path / "record.h5", "r", libver="latest", swmr=True) as f:
        assert f.attrs["status"] == "failed" and "disk full at" in f.attrs["error"]
