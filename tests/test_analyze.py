"""`hotspin analyze`: simulated records, saved runs with spectra rows, crashed runs, bad files."""

import math
import subprocess
import sys
from dataclasses import asdict

import h5py
import numpy as np
import pytest
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.spectra import StreamingPSD
from hotspin.procedures.analyze import analyze_file, format_report, welch_attributes
from hotspin.procedures.parameters import assign
from hotspin.procedures.recorder import RunFile
from hotspin.simulators.spin_noise import FastAngleNoise

from hotspin.cli import main
from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

SERF_SETTINGS = ["seed=1", "probe_power_W=5e-3", "field_nT=100,0,0"]


def simulated(tmp_path, *assignments, duration_s=1.0, rate=100e3, name="record.h5"):
    values = assign(SIMULATE_PARAMETERS, [*SERF_SETTINGS, *assignments])
    return simulate_record(tmp_path / name, duration_s, rate, values)


def test_simulated_record_is_calibrated_fitted_and_written_back(tmp_path):
    path = simulated(tmp_path)
    analysis = analyze_file(path)
    assert analysis.status == "completed" and analysis.written
    assert "v_diff" in analysis.source
    (result,) = analysis.spectra
    assert result.error is None and result.fit.flags == ()
    d = derive(result.apparatus)
    for name, truth in (
        ("field_T", d.field_magnitude_T),
        ("atom_number", d.atom_number),
        ("white_noise_psd", d.white_noise_psd_rad2_per_Hz),
        ("spin_exchange_rate", d.spin_exchange_rate),
    ):
        estimate = result.fit.parameters[name]
        assert abs(estimate.value - truth) < 3 * estimate.uncertainty, name
    report = format_report(analysis)
    for text in ("|B|", "R_SE", "N (one Lorentzian)", "xi^2", "truth", "chi^2/dof", "written"):
        assert text in report
    with h5py.File(path, "r") as f:
        group = f["analysis"]
        assert group.attrs["run_status"] == "completed"
        assert group["atom_number"].attrs["units"] == ""
        assert group["field_T"].attrs["units"] == "T"
        assert group["field_T_uncertainty"].attrs["units"] == "T"
        assert group["field_T"][0] == pytest.approx(result.fit.parameters["field_T"].value)
        assert group["larmor_frequency"].attrs["units"] == "Hz"
        assert f["spectra/psd"].shape[0] == 1
        assert f["spectra/psd"].attrs["units"] == "rad^2/Hz"
        assert f["spectra/frequency"].attrs["units"] == "Hz"
        assert f["spectra/psd_standard_error"].attrs["units"] == "rad^2/Hz"
    # Analysing again replaces the results and keeps the one stored spectrum.
    again = analyze_file(path)
    assert again.spectra[0].fit.parameters["atom_number"].value == pytest.approx(
        result.fit.parameters["atom_number"].value
    )
    with h5py.File(path, "r") as f:
        assert f["spectra/psd"].shape[0] == 1 and f["analysis/label"].shape == (1,)


def spectrum_of(apparatus: ApparatusParameters, seed: int, rate: float = 100e3):
    d = derive(apparatus)
    generator = FastAngleNoise.from_derived(d, rate, seed=seed)
    psd = StreamingPSD(4096, rate)
    psd.add(generator.block(round(1.0 * rate)))
    return psd.spectrum()


def saved_run(path, temperatures, *, welch=True, crash=False):
    """Write a run as a procedure does: apparatus in `parameters`, one spectrum per step."""
    base = ApparatusParameters(
        temperature_K=450.0, field_T=(100e-9, 0, 0), probe_power_W=5e-3, probe_detuning_Hz=60e9
    )
    run = RunFile(path, "spin_noise_sweep", asdict(base))
    for step, temperature in enumerate(temperatures):
        spectrum = spectrum_of(base.with_changes(temperature_K=temperature), seed=step)
        run.append_spectrum(spectrum.frequency_Hz, spectrum.psd)
        # As every spectrum procedure does: the fitted |B| under the fit's name, `field_T`.
        run.append_results({"temperature_K": (temperature, "K"), "field_T": (1e-7, "T")})
        if welch:
            run.file["spectra/psd"].attrs.update(welch_attributes(spectrum, "hann"))
    if crash:
        run.file.close()  # the process died: status stays 'running'
    else:
        run.close("completed")
    return base


def test_saved_run_fits_every_row_with_its_own_temperature(tmp_path):
    path = tmp_path / "sweep.h5"
    temperatures = (440.0, 450.0, 460.0)
    saved_run(path, temperatures)
    analysis = analyze_file(path)
    assert analysis.source == "spectra/psd"
    assert len(analysis.spectra) == 3
    for result, temperature in zip(analysis.spectra, temperatures, strict=True):
        assert "temperature_K from results" in result.label
        assert result.apparatus.temperature_K == temperature
        n = result.fit.parameters["atom_number"]
        assert abs(n.value - derive(result.apparatus).atom_number) < 3 * n.uncertainty
        assert result.fit.flags == ()
    with h5py.File(path, "r") as f:
        assert f["analysis/atom_number"].shape == (3,)
        assert np.all(np.diff(f["analysis/density_from_temperature"][...]) > 0)


def test_spectra_without_estimation_details_are_fitted_with_a_flag(tmp_path):
    path = tmp_path / "bare.h5"
    saved_run(path, (450.0,), welch=False)
    (result,) = analyze_file(path).spectra
    assert any("no χ² test" in flag for flag in result.fit.flags)
    assert math.isnan(result.fit.p_value)


def test_crashed_run_is_reported_and_what_it_saved_is_analysed(tmp_path):
    path = tmp_path / "crashed.h5"
    saved_run(path, (450.0, 455.0), crash=True)
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "running"
    looked = analyze_file(path, write=False)  # a look only: the file is left as it is
    assert looked.status == "running"
    assert any("never finished" in note for note in looked.notes)
    analysis = analyze_file(path)  # marks the crash, then analyses what was saved
    assert analysis.status == "failed"
    assert any("had crashed" in note for note in analysis.notes)
    assert [r.error for r in analysis.spectra] == [None, None]
    assert "status failed" in format_report(analysis)
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "failed"
        assert "without closing its file" in f.attrs["error"]
        assert "crash_detected" in f.attrs


def test_crashed_simulated_record_is_cut_where_writing_stopped(tmp_path):
    path = simulated(tmp_path)
    with h5py.File(path, "r+") as f:  # what a crash mid-record leaves: status, a short record
        f.attrs["status"] = "running"
        for name in ("v_diff", "v_sum"):
            f["records/polarimeter"][name].resize((60_000,))
    analysis = analyze_file(path)
    assert any("only 60000 of 100000 samples" in note for note in analysis.notes)
    assert analysis.spectra[0].error is None
    assert analysis.spectra[0].fit.flags == ()


def test_bad_rows_and_bad_records_are_reported_clearly(tmp_path):
    path = tmp_path / "nan_row.h5"
    saved_run(path, (450.0, 455.0))
    with h5py.File(path, "r+") as f:
        f["spectra/psd"][1, 10] = np.nan
    analysis = analyze_file(path)
    assert analysis.spectra[0].error is None
    assert "NaN" in analysis.spectra[1].error
    assert "not analysed" in format_report(analysis)

    record = simulated(tmp_path, name="short_record.h5")
    with h5py.File(record, "r+") as f:
        for name in ("v_diff", "v_sum"):
            f["records/polarimeter"][name].resize((10,))
    with pytest.raises(ValueError, match="holds 10 samples: too few"):
        analyze_file(record)

    empty = tmp_path / "empty.h5"
    RunFile(empty, "nothing", {}).close("completed")
    with pytest.raises(ValueError, match="nothing to analyse"):
        analyze_file(empty)


def test_clipped_detector_output_is_flagged(tmp_path):
    # A monitor gain of 10⁶ V/A puts V_sum far above the detector's 10 V swing.
    path = simulated(tmp_path, "gain_sum_V_per_A=1e6")
    (result,) = analyze_file(path).spectra
    assert any("clipped" in flag for flag in result.fit.flags)
    assert "flag: record clipped" in format_report(analyze_file(path))


def test_command_line_analyze(tmp_path, capsys):
    path = simulated(tmp_path)
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "N (beam-weighted)" in out and "results written" in out
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not a run file")
    assert main(["analyze", str(not_hdf5)]) == 2
    assert "hotspin analyze: error" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing.h5")]) == 2


def test_a_run_still_being_written_by_another_process_gets_a_plain_error(tmp_path):
    path = tmp_path / "live.h5"
    saved_run(path, (450.0,), crash=True)
    live = h5py.File(path, "r+")  # held open for writing, as by a running procedure
    try:
        other = subprocess.run(
            [sys.executable, "-m", "hotspin.cli", "analyze", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        live.close()
    assert other.returncode == 2
    assert "open for writing by a running procedure" in other.stderr


def test_files_that_are_not_hotspin_runs_are_refused_untouched(tmp_path, capsys):
    empty = tmp_path / "zero.h5"
    empty.touch()
    text = tmp_path / "notes.h5"
    text.write_text("not a run file")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(4.0)
    cases = [
        (empty, "is empty (0 bytes): not a hotspin run file"),
        (text, "is not an HDF5 file"),
        (
            foreign,
            "is not a hotspin run file: it lacks the attribute(s) hotspin_version, procedure",
        ),
    ]
    for path, message in cases:
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        assert main(["analyze", str(path)]) == 2
        assert message in capsys.readouterr().err
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # never written


def test_a_truncated_run_file_is_told_from_a_locked_one(tmp_path, capsys):
    path = tmp_path / "cut.h5"
    saved_run(path, (450.0, 455.0))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is truncated" in err and "open for writing" not in err


def test_a_read_only_run_file_is_analysed_without_writing_to_it(tmp_path, capsys):
    path = tmp_path / "archived.h5"
    saved_run(path, (450.0,))
    path.chmod(0o444)
    before = path.read_bytes()
    analysis = analyze_file(path)
    assert not analysis.written and analysis.spectra[0].error is None
    assert "read-only: analysed, results not written back" in format_report(analysis)
    assert path.read_bytes() == before


def test_a_malformed_run_file_names_what_it_lacks(tmp_path, capsys):
    path = tmp_path / "no_axis.h5"
    saved_run(path, (450.0,))
    with h5py.File(path, "r+") as f:
        del f["spectra/frequency"]
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is a malformed run file: it lacks" in err and "frequency" in err
    assert "Traceback" not in err
