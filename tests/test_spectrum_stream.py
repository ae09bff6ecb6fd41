"""A spectrum procedure's segments come from one continuous deep-memory stream.

The driver's stream is tapped (every item the board's ring delivered is kept), so the test knows
independently of the procedure which samples there were: the stored spectrum must be
scipy.signal.welch of exactly the first (K − 1)·D + L of them — K segments of length L at hop D,
consecutive across the stream's block boundaries, no gap — and must match the simulated lab's
model within its statistics.
"""

import itertools

import h5py
import numpy as np
import pytest
from hotspin.analysis.detection import DetectionChain, detected_atoms, detected_white_noise
from hotspin.analysis.spectra import Spectrum, angle_from_difference_and_sum
from hotspin.instruments.redpitaya import RedPitaya, StreamBlock
from hotspin.instruments.station import Station
from hotspin.procedures.analyze import analyze_file
from hotspin.procedures.base import run_procedure
from hotspin.procedures.registry import PROCEDURES
from hotspin.simulators.instrument_base import Fault
from scipy import signal


@pytest.fixture(scope="module")
def warm_station(tmp_path_factory):
    """The embedded lab on a manual clock (time moves only while the reader waits), warm and
    balanced."""
    directory = tmp_path_factory.mktemp("warm")
    station = Station.from_file(None, manual_clock=True)
    station.configure()
    for name, values in (("warmup", {"target_temperature_K": 450.0, "dwell_s": 10.0}),
                         ("balance", {})):  # fmt: skip
        run_procedure(PROCEDURES[name].from_values(values), station, directory / f"{name}.h5")
    yield station
    station.close()


@pytest.fixture
def tapped(monkeypatch):
    """Every item of every deep-memory stream the driver starts, in order."""
    items = []
    original = RedPitaya.stream

    def stream(self, *args, **kwargs):
        started = original(self, *args, **kwargs)
        inner = started._items

        def tee():
            for item in inner:
                items.append(item)
                yield item

        started._items = tee()
        return started

    monkeypatch.setattr(RedPitaya, "stream", stream)
    return items


def test_a_spectrum_is_the_welch_average_of_one_continuous_stream(warm_station, tapped, tmp_path):
    station = warm_station
    K, L, decimation = 40, 4096, 256
    procedure = PROCEDURES["spin_noise"].from_values(
        {"averages": K, "segment_length": L, "decimation": decimation,
         "bias_field_nT": [400.0, 0.0, 0.0]}
    )  # fmt: skip
    path = run_procedure(procedure, station, tmp_path / "spin_noise.h5")
    hop = L // 2
    needed = K * hop + (L - hop)  # segments × hop + overlap
    with h5py.File(path, "r") as f:
        psd = f["spectra/psd"][0]
        attributes = dict(f["spectra/psd"].attrs)
        used = f["results/samples_used"][0]
        lost = f["results/samples_lost"][0]
    assert attributes["segments"] == K
    assert used == needed and lost == 0
    # The board's items: blocks only, each starting where the last ended, from index 0.
    assert tapped and all(isinstance(item, StreamBlock) for item in tapped)
    assert tapped[0].first_index == 0
    assert all(b.first_index == a.end_index for a, b in itertools.pairwise(tapped))
    codes = np.concatenate([item.codes for item in tapped], axis=1)
    assert codes.shape[1] >= needed  # the reader may have read past what the segments needed
    assert len(tapped) > 1 and tapped[0].codes.shape[1] < needed  # segments cross a block edge
    config = station.polarimeter.config
    scale = station.polarimeter.digitiser.call(
        lambda board: [board.analog_in[ch].full_scale_V / 8192 for ch in (1, 2)]
    )
    d, s = config.diff_channel - 1, config.sum_channel - 1
    theta = angle_from_difference_and_sum(
        codes[d, :needed] * scale[d], codes[s, :needed] * scale[s],
        config.gain_diff_V_per_A, config.gain_sum_V_per_A,
    )  # fmt: skip
    fs = 125e6 / decimation
    _, reference = signal.welch(theta, fs, window="hann", nperseg=L, noverlap=L - hop)
    np.testing.assert_allclose(psd, reference, rtol=1e-9, atol=0)
    # Against the model: the detected atoms plus the white floor and the ADC's rounding
    # (q²/12 per sample of V_diff, q·G_s/(2 G_d V_sum) in angle), through the same window.
    window = signal.get_window("hann", L)
    spectrum = Spectrum(np.fft.rfftfreq(L, 1 / fs), psd, sample_rate_Hz=fs, window=window)
    station.coils.set_field(np.array([400e-9, 0.0, 0.0]))  # the run's field (its end zeroed it)
    model = station.lab.truth()
    v_sum = float(np.mean(codes[s, :needed])) * scale[s]
    step = scale[d] * config.gain_sum_V_per_A / config.gain_diff_V_per_A / (2 * v_sum)
    # Atoms and white floor behind the PDB450A's pole and the board's boxcar (ACQ:AVG ON).
    chain = DetectionChain.pdb450a(config.gain_diff_V_per_A, decimation, True)
    atoms = detected_atoms(model.model, model.coupling_upper_rad, model.coupling_lower_rad, chain)
    R = atoms.autocovariance(L)
    R += model.white_noise_psd_rad2_per_Hz * detected_white_noise(chain).autocovariance(L)
    R[0] += step**2 / 12
    expected = spectrum.expectation(R)
    band = slice(attributes["mean_removed_bins"], -1)
    ratio = psd[band] / expected[band]
    # 2 000 bins of K_eff ≈ 38 averages, neighbours correlated by 0.46: the mean ratio to
    # ±0.4 % (one σ); the line's region (the lowest 2 kHz) to a few per cent.
    assert ratio.mean() == pytest.approx(1.0, abs=0.02)
    line = spectrum.frequency_Hz[band] < 2e3
    assert ratio[line].mean() == pytest.approx(1.0, abs=0.15)


def test_the_fit_models_the_stations_detection_chain_and_analyze_refits_with_it(
    warm_station, tmp_path
):
    procedure = PROCEDURES["spin_noise"].from_values(
        {"averages": 8, "decimation": 1024, "bias_field_nT": [400.0, 0.0, 0.0]}
    )
    path = run_procedure(procedure, warm_station, tmp_path / "spin_noise.h5")
    # The PDB450A at the station's 10⁵ V/A (a 4 MHz pole) into the board's averaging decimation.
    chain = DetectionChain.pdb450a(1e5, 1024, True)
    with h5py.File(path, "r") as f:
        attributes = f["spectra/psd"].attrs
        assert attributes["detection_bandwidth_Hz"] == 4e6
        assert attributes["detection_decimation"] == 1024
        assert bool(attributes["detection_averaging"]) is True
        fitted = {n: f["results"][n][0] for n in ("spin_exchange_rate", "atom_number")}
    refit = analyze_file(path).spectra[0].fit
    assert refit.geometry.detection == chain
    for name, value in fitted.items():
        assert refit.value(name) == pytest.approx(value, rel=1e-6), name


def test_a_dropped_link_restarts_the_stream_and_no_segment_spans_the_restart(
    warm_station, tapped, tmp_path
):
    station = warm_station
    K, L = 40, 4096
    procedure = PROCEDURES["spin_noise"].from_values(
        {"averages": K, "segment_length": L, "bias_field_nT": [400.0, 0.0, 0.0]}
    )
    digitiser = station.simulated_instruments["digitiser"]
    measure = procedure.execute

    def execute_with_a_drop():
        # 30 commands in: the stream is set up and its first blocks are being read.
        digitiser.faults.add(Fault("drop", after=30))
        measure()

    procedure.execute = execute_with_a_drop
    try:
        path = run_procedure(procedure, station, tmp_path / "dropped.h5")
    finally:
        digitiser.faults.clear()
    with h5py.File(path, "r") as f:
        notes = str(f.attrs["notes"])
        segments = f["spectra/psd"].attrs["segments"]
        used = f["results/samples_used"][0]
        lost = f["results/samples_lost"][0]
    assert "spin_noise: stream restarted after" in notes
    assert segments == K
    # Two streams: the first run of segments ends where the first stream did (its last partial
    # segment is dropped), the second starts a new run; whatever the old writer wrote after the
    # last block read is a gap.
    hop = L // 2
    assert used > K * hop + (L - hop) or lost > 0
    starts = [item.first_index for item in tapped]
    assert starts.count(0) == 2  # each stream counts from its own start
