"""`hotspin analyze` on a continuous record runs the continuous Kalman filter of the fitted model
over the whole record (the "filter check"): its innovations, their normalised variance and
whiteness, written with the witness into the `analysis` group."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hotspin.analysis.qnd import ContinuousKalmanFilter, ContinuousReadout
from hotspin.analysis.spectra import angle_from_difference_and_sum
from hotspin.procedures.analyze import FILTER_CHECK_LAGS, analyze_file, format_report
from hotspin.procedures.parameters import assign
from hotspin.procedures.recorder import ContinuousRecord

from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

ENTANGLING = ["seed=4", "temperature_K=450", "probe_power_W=2e-3", "field_nT=57.7,57.7,57.7"]
RATE = 100e3


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    values = assign(SIMULATE_PARAMETERS, ENTANGLING)
    return simulate_record(tmp_path_factory.mktemp("filter") / "record.h5", 2.0, RATE, values)


def test_the_filter_check_of_a_simulated_record_is_consistent_and_written(simulated):
    analysis = analyze_file(simulated)
    (result,) = analysis.spectra
    check = result.filter_check
    assert check is not None and result.filter_check_error == ""
    assert check.samples == round(2.0 * RATE) and check.gaps == 0
    # The simulated record is the model's: innovations white with the predicted variance.
    v = check.normalised_variance
    assert v.uncertainty == pytest.approx(np.sqrt(2.0 / check.samples))
    assert abs(v.value - 1.0) < 3 * v.uncertainty
    assert check.p_value > 0.01 and check.lags == FILTER_CHECK_LAGS and check.consistent
    # The filter's ξ² is the witness's (the same Riccati solution of the same model).
    xi2 = result.witness.squeezing_parameter.value
    assert check.squeezing_parameter == pytest.approx(xi2, rel=1e-9)
    with h5py.File(simulated, "r") as f:
        group = f["analysis"]
        assert "continuous Kalman filter" in group.attrs["filter_check"]
        assert group["filter_check_normalised_variance"][0] == pytest.approx(v.value)
        assert group["filter_check_normalised_variance_uncertainty"][0] == v.uncertainty
        assert group["filter_check_p_value"][0] == check.p_value
        assert group["filter_check_samples"][0] == check.samples
        assert group["filter_check_consistent"][0] == 1.0
        assert group["filter_check_squeezing_parameter"][0] == pytest.approx(
            group["squeezing_parameter"][0], rel=1e-9
        )
        assert group["filter_check_error"][0] in (b"", "")
    assert "filter check: innovations' normalised variance" in format_report(analysis)


def test_the_filter_check_takes_a_gap_as_missing_samples(simulated, tmp_path):
    # The same record with 5000 samples cut out, stored as a gap in the gap table.
    path, cut, gap = tmp_path / "gap.h5", 60_000, 5000
    with h5py.File(simulated, "r") as source, h5py.File(path, "w", libver="latest") as f:
        f.attrs.update(source.attrs)
        f.create_group("parameters").attrs.update(source["parameters"].attrs)
        original = source["records/polarimeter"]
        codes = np.stack([original["v_diff"][...], original["v_sum"][...]])
        scales = {
            name: float(original[name].attrs["volts_per_code"]) for name in ("v_diff", "v_sum")
        }
        record = ContinuousRecord(
            f, "polarimeter", scales, RATE, int(original.attrs["decimation"]), 0.0
        )
        record.append(0, codes[:, :cut])
        record.add_gap(cut, gap)
        record.append(cut + gap, codes[:, cut + gap :])
        record.flush()
        gains = (
            f["parameters"].attrs["gain_diff_V_per_A"],
            f["parameters"].attrs["gain_sum_V_per_A"],
        )
    (result,) = analyze_file(path, write=False).spectra
    check = result.filter_check
    assert check is not None and check.gaps == 1
    assert check.samples == codes.shape[1] - gap
    # The reference: one filter over the whole stretch with the gap's samples missing (NaN).
    theta = angle_from_difference_and_sum(
        codes[0] * scales["v_diff"], codes[1] * scales["v_sum"], *gains
    )
    theta[cut : cut + gap] = np.nan
    offset = np.nanmean(theta)  # the constant rotation, over the stored samples
    theta -= offset
    reference = ContinuousKalmanFilter.from_readout(
        ContinuousReadout.from_fit(result.fit), RATE, bound=result.witness.bound
    )
    out = reference.filter_block(0, theta)
    assert out.gaps == ((cut, gap),)
    white = out.whiteness
    assert white.samples == check.samples
    assert check.normalised_variance.value == pytest.approx(white.normalised_variance, rel=1e-9)
    assert check.ljung_box == pytest.approx(white.ljung_box, rel=1e-6)
    assert check.offset_rad == pytest.approx(offset, rel=1e-9)


def test_a_record_procedure_file_is_fitted_and_filter_checked(tmp_path):
    # `hotspin run record` on the simulated lab (a clock that moves when code waits): a hot cell,
    # the field across the probe. Its parameters hold the apparatus before the procedure
    # switched the light on, and its detector gains are in the start snapshot only.
    from hotspin.instruments.station import Station
    from hotspin.procedures.base import run_procedure
    from hotspin.procedures.registry import PROCEDURES

    station = Station.from_file(None, manual_clock=True)
    try:
        station.configure()
        station.lab.oven.temperature_K = 450.0
        station.heater.setpoint_K = 450.0
        station.polarimeter.plate_angle_deg = station.lab.config.polarimeter.hwp_zero_deg
        station.coils.set_field((100e-9, 0.0, 0.0))
        procedure = PROCEDURES["record"].from_values({"duration_s": 2.0, "decimation": 1024})
        path = run_procedure(procedure, station, tmp_path / "record.h5")
    finally:
        station.close()
    with h5py.File(path, "r") as f:
        assert "gain_diff_V_per_A" not in f["parameters"].attrs
        assert f["parameters"].attrs["probe_power_W"] == 0.0
        larmor_Hz = float(f["snapshot/start/simulation_truth"].attrs["serf_larmor_frequency_Hz"])
    analysis = analyze_file(path, write=False)
    (result,) = analysis.spectra
    assert result.error is None, result.error
    assert any("probe power from the record's sum output" in note for note in analysis.notes)
    larmor = result.fit.larmor_frequency_Hz
    assert abs(larmor.value - larmor_Hz) < 5 * larmor.uncertainty
    check = result.filter_check
    assert check is not None and check.samples == round(2.0 * 125e6 / 1024)
    v = check.normalised_variance
    assert abs(v.value - 1.0) < 3 * v.uncertainty and check.p_value > 0.01
