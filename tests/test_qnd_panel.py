"""The QND panel: its ξ² is `hotspin analyze`'s on the same record, and its filter runs over the
record's θ blocks with white innovations of the predicted variance."""

from __future__ import annotations

import dataclasses
import math

import h5py
import numpy as np
import pytest
from hotspin.analysis.qnd import entanglement_witness
from hotspin.analysis.spectra import angle_from_difference_and_sum
from hotspin.gui.qnd_panel import QndPanel, QndTracker
from hotspin.procedures.analyze import analyze_file
from hotspin.procedures.parameters import assign

from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

ENTANGLING = ["seed=4", "temperature_K=450", "probe_power_W=2e-3", "field_nT=57.7,57.7,57.7"]
RATE = 100e3
BLOCK = 20_000


def record_theta(path) -> np.ndarray:
    """The continuous record's rotation angle, calibrated as analyze calibrates it."""
    with h5py.File(path, "r") as f:
        record = f["records/polarimeter"]
        volts = {
            name: record[name][...] * float(record[name].attrs["volts_per_code"])
            for name in ("v_diff", "v_sum")
        }
        parameters = f["parameters"].attrs
        gains = (float(parameters["gain_diff_V_per_A"]), float(parameters["gain_sum_V_per_A"]))
        return angle_from_difference_and_sum(volts["v_diff"], volts["v_sum"], *gains)


def test_the_panel_shows_the_witness_analyze_finds_on_the_same_record(qtbot, tmp_path):
    values = assign(SIMULATE_PARAMETERS, ENTANGLING)
    path = simulate_record(tmp_path / "record.h5", 2.0, RATE, values)
    (result,) = analyze_file(path, write=False).spectra
    assert result.error is None and result.witness is not None
    check = result.filter_check
    assert check is not None and result.filter_check_error == ""
    tracker = QndTracker(exact_run_in=True)  # analyze's filter (a live one starts steady)
    panel = QndPanel(tracker)
    qtbot.addWidget(panel)
    tracker.update_fit(result.fit, RATE)
    theta = record_theta(path)
    theta = theta - theta.mean()
    for start in range(0, theta.size, BLOCK):
        tracker.add(start, theta[start : start + BLOCK])
    panel.refresh()
    xi2 = result.witness.squeezing_parameter.value
    assert panel.squeezing_parameter() == pytest.approx(xi2, rel=1e-12)
    # The filter's own ξ², from the Riccati solution of the same model, agrees.
    assert tracker.latest.filter_squeezing == pytest.approx(xi2, rel=1e-9)
    assert f"ξ² = {result.witness.squeezing_parameter}" in panel.witness_label.text()
    white = tracker.latest.whiteness
    assert white is not None and white.samples == theta.size
    assert abs(white.normalised_variance - 1.0) < 5 * white.variance_uncertainty + 0.02
    # `analyze`'s filter check ran the same filter over the same record (in other blocks, with
    # the same constant rotation taken out): the same innovations, the same whiteness test.
    assert check.samples == white.samples and check.lags == white.lags
    assert check.normalised_variance.value == pytest.approx(white.normalised_variance, rel=1e-9)
    assert check.normalised_variance.uncertainty == pytest.approx(white.variance_uncertainty)
    assert check.ljung_box == pytest.approx(white.ljung_box, rel=1e-6)
    assert check.p_value == pytest.approx(white.p_value, rel=1e-5, abs=1e-12)
    assert check.squeezing_parameter == pytest.approx(tracker.latest.filter_squeezing, rel=1e-12)
    assert check.offset_rad == pytest.approx(record_theta(path).mean(), rel=1e-9)
    assert tracker.latest.spin.shape == (math.ceil(theta.size / BLOCK), 3)
    assert "Ljung–Box" in panel.innovations_label.text()
    # The separable bound drawn at ξ² = 1 names the witness's b (13/8 per atom at thermal
    # populations).
    assert panel.bound_line.value() == 1.0
    assert f"b = {result.witness.bound:.4g} per atom" in panel.bound_line.label.format


def without_transit(fit):
    """The same fit with the transit through the beam left out of its model (6 dimensions):
    the 42-dimensional transit model's filter runs in for minutes from the prior."""
    geometry = dataclasses.replace(fit.geometry, transit_time_s=math.inf)
    return dataclasses.replace(fit, geometry=geometry)


def test_the_worker_tracks_in_a_child_process_with_the_same_witness(qtbot, tmp_path):
    from hotspin.gui.qnd_panel import QndWorker
    from hotspin.gui.stream import FitFrame

    values = assign(SIMULATE_PARAMETERS, ENTANGLING)
    path = simulate_record(tmp_path / "record.h5", 0.5, RATE, values)
    (result,) = analyze_file(path, write=False).spectra
    fit = without_transit(result.fit)
    expected = entanglement_witness(fit)  # in this process, as `analyze` computes it
    frame = FitFrame(1, fit, "", 0, None, 0.0)
    tracker = QndTracker()
    worker = QndWorker(tracker, lambda: frame, in_child=True)
    worker.enabled.set()
    worker.start()
    try:
        theta = record_theta(path)
        theta = theta - theta.mean()
        for start in range(0, theta.size, BLOCK):
            worker.offer(start, theta[start : start + BLOCK], RATE)
        qtbot.waitUntil(
            lambda: tracker.latest is not None and tracker.latest.spin.shape[0] >= 2,
            timeout=120_000,  # a bound, not a wait: the child starts, solves and filters
        )
        assert tracker.latest.error == ""
        assert tracker.latest.xi2[-1] == pytest.approx(
            expected.squeezing_parameter.value, rel=1e-12
        )
        assert tracker.latest.filter_squeezing == pytest.approx(
            expected.squeezing_parameter.value, rel=1e-9
        )
    finally:
        worker.stop()
    assert worker._process is None
