"""`hotspin simulate`, `--help`, `--version` and `list`: the file written and the errors given."""

import math
import subprocess
import sys

import h5py
import numpy as np
import pytest
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.procedures import __version__
from scipy import signal

from hotspin.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hotspin.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version_and_help():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"hotspin {__version__}"
    helped = run_cli("--help")
    assert helped.returncode == 0
    for command in ("list", "simulate"):
        assert command in helped.stdout


def test_list_shows_settings_with_units_and_ranges(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "temperature_K" in out and "[250, 700] K" in out
    assert "field_nT" in out and "probe_detuning_GHz" in out and "seed" in out


def test_simulate_writes_the_data_file_layout_with_truth(tmp_path, capsys):
    out = tmp_path / "record.h5"
    fs = 200e3
    code = main(
        [
            "simulate", "--duration-s", "2", "--sample-rate-Hz", str(fs), "--out", str(out),
            "--set", "temperature_K=440", "--set", "field_nT=300,0,0", "--set", "seed=4",
            "--set", "probe_detuning_GHz=80", "--set", "probe_power_W=2e-3",
        ]
    )  # fmt: skip
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed"
        assert f.attrs["procedure"] == "simulate"
        assert f.attrs["hotspin_version"] == __version__
        assert "started" in f.attrs
        assert f["parameters"].attrs["temperature_K"] == 440
        truth = dict(f["truth"].attrs)
        expected = derive(
            ApparatusParameters(
                temperature_K=440.0,
                field_T=(300e-9, 0, 0),
                probe_detuning_Hz=80e9,
                probe_power_W=2e-3,
            )
        )
        assert truth["spin_exchange_rate_per_s"] == pytest.approx(expected.spin_exchange_rate)
        assert truth["atom_number"] == pytest.approx(expected.atom_number)
        np.testing.assert_allclose(truth["field_nT"], [300, 0, 0])
        assert truth["coupling_upper_rad"] == pytest.approx(expected.coupling_upper_rad)
        assert truth["shot_noise_psd_rad2_per_Hz"] == pytest.approx(
            expected.shot_noise_psd_rad2_per_Hz
        )
        # The continuous-record format: int16 codes per channel, 4 bytes per sample pair.
        record = f["records/polarimeter"]
        assert record.attrs["sample_rate_Hz"] == fs
        assert record.attrs["first_index"] == 0
        assert record["gaps/length"].shape == (0,)
        volts = {}
        for name in ("v_diff", "v_sum"):
            codes = record[name]
            assert codes.dtype == np.int16 and codes.shape == (400_000,)
            assert codes.attrs["units"] == "ADC code"
            step = codes.attrs["volts_per_code"]
            assert math.log2(step) == round(math.log2(step))  # a power of two
            volts[name] = codes[...] * step
            # Its range holds the channel with room, and V_diff's rounding is negligible.
            assert np.abs(codes[...]).max() < 32767
        assert np.std(volts["v_diff"]) / record["v_diff"].attrs["volts_per_code"] > 1000
        assert "traces" not in f
        gain_ratio = truth["gain_sum_V_per_A"] / truth["gain_diff_V_per_A"]
        # At balance θ = ½ arcsin[(V_diff/G_diff)/(V_sum/G_sum)].
        theta = 0.5 * np.arcsin(volts["v_diff"] * gain_ratio / volts["v_sum"])
        # The record's spectrum is the truth spectrum stored beside it.
        frequency, psd = f["truth/frequency"][...], f["truth/psd"][...]
        assert f["truth/psd"].attrs["units"] == "rad^2/Hz"
    welch_f, welch = signal.welch(theta, fs, nperseg=4096)
    model = np.interp(welch_f, frequency, psd)
    band = (welch_f > 100) & (welch_f < 0.45 * fs)
    assert np.mean(welch[band] / model[band]) == pytest.approx(1.0, abs=0.02)
    assert np.var(theta) == pytest.approx(
        truth["angle_variance_rad2"] + truth["white_noise_psd_rad2_per_Hz"] * fs / 2, rel=0.05
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "temperature_K=-3"], "temperature_K = -3 is outside the allowed range"),
        (["--set", "temperature_K=nan"], "temperature_K = nan is outside the allowed range"),
        (["--set", "field_nT=inf,0,0"], "field_nT = inf,0,0 is outside the allowed range"),
        (["--set", "field_nT=1,2"], "field_nT = 1,2 has 2 component(s); it needs 3"),
        (["--set", "colour=blue"], "unknown parameter 'colour'"),
        (["--set", "seed=1.5"], "seed = 1.5 must be an integer"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(tmp_path, capsys, extra, message):
    out = tmp_path / "bad.h5"
    args = ["simulate", "--duration-s", "1", "--sample-rate-Hz", "1e4", "--out", str(out)]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("rate", ["0", "-5"])
def test_non_positive_sample_rate_is_refused(tmp_path, capsys, rate):
    out = tmp_path / "bad.h5"
    assert main(["simulate", "--duration-s", "1", "--sample-rate-Hz", rate, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sample_rate_Hz" in err and "(0, 1e+09] Hz" in err
    assert not out.exists()


def test_simulate_never_overwrites_a_run(tmp_path, capsys):
    out = tmp_path / "exists.h5"
    out.write_bytes(b"precious")
    args = ["simulate", "--duration-s", "0.01", "--sample-rate-Hz", "1e4", "--out", str(out)]
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_probe_far_detuned_gives_the_electron_spin_couplings(tmp_path):
    # Far off resonance the F=2 and F=1 couplings become equal: θ ∝ (F_a − F_b)/4.
    d = derive(ApparatusParameters(probe_detuning_Hz=500e9))
    assert d.coupling_lower_rad == pytest.approx(d.coupling_upper_rad, rel=0.03)
    assert math.isfinite(d.shot_noise_psd_rad2_per_Hz)
