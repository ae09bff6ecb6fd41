"""`hotspin analyze` and the witness: every number it reports is written and shown, and a
witness that fails leaves the converged fit kept with the failure named in its flags."""

import math

import h5py
import numpy as np
import pytest
from hotspin.analysis.experiment import derive
from hotspin.analysis.fits import Estimate
from hotspin.analysis.qnd import (
    WITNESS_QUANTITIES,
    ContinuousReadout,
    entanglement_lifetime,
    squeezing_parameter,
)
from hotspin.procedures import analyze as analyze_module
from hotspin.procedures.analyze import analyze_file, format_report
from hotspin.procedures.parameters import assign

from hotspin.simulate import SIMULATE_PARAMETERS, simulate_record

# SERF at 450 K with the field along [1,1,1]: the configuration of the entanglement run.
# A probe that outruns the transit through the beam (w = 3 mm, 10 mW; README, Kong-type).
ENTANGLING = [
    "seed=4", "temperature_K=450", "probe_power_W=10e-3", "beam_area_m2=2.83e-5",
    "field_nT=57.7,57.7,57.7",
]  # fmt: skip


def simulated(tmp_path, name="record.h5"):
    values = assign(SIMULATE_PARAMETERS, ENTANGLING)
    return simulate_record(tmp_path / name, 2.0, 100e3, values)


def test_analyze_reports_and_writes_the_witness_under_both_bounds_with_the_lifetime(tmp_path):
    analysis = analyze_file(simulated(tmp_path))
    (result,) = analysis.spectra
    assert result.error is None
    witness = result.witness
    direct = ContinuousReadout.from_apparatus(derive(result.apparatus))
    xi2, tau = witness.squeezing_parameter, witness.lifetime
    assert abs(xi2.value - squeezing_parameter(direct)) < 4 * xi2.uncertainty
    assert abs(tau.value - entanglement_lifetime(direct)) < 4 * tau.uncertainty
    with h5py.File(analysis.path, "r") as f:
        group = f["analysis"]
        for name, unit in WITNESS_QUANTITIES.items():
            assert group[name].attrs["units"] == unit
            assert math.isfinite(group[name][0])
        assert group["separable_bound_per_atom"][0] == 13 / 8
        assert group["entanglement_lifetime_s"][0] == pytest.approx(tau.value)
        assert group["squeezing_parameter_population_free"][0] == pytest.approx(13 / 8 * xi2.value)
    report = format_report(analysis)
    for text in (
        "bound b per atom     1.625",
        "xi^2 with b = 1",
        "tau_ent",
        "b = 1 (no population",
    ):
        assert text in report
    assert str(Estimate(1e3 * tau.value, 1e3 * tau.uncertainty)) in report


def test_a_failing_witness_keeps_the_fit_and_names_the_failure(tmp_path, monkeypatch):
    def failing(_fit):
        raise np.linalg.LinAlgError("the Riccati equation was not solved")

    monkeypatch.setattr(analyze_module, "entanglement_witness", failing)
    analysis = analyze_file(simulated(tmp_path))
    (result,) = analysis.spectra
    assert result.error is None and result.fit is not None and result.witness is None
    (flag,) = [f for f in result.fit.flags if "witness" in f]
    assert "entanglement witness failed (LinAlgError: the Riccati equation" in flag
    report = format_report(analysis)
    assert "not analysed" not in report
    assert f"flag: {flag}" in report
    with h5py.File(analysis.path, "r") as f:
        group = f["analysis"]
        assert "entanglement witness failed" in group["flags"][0].decode()
        assert group["error"][0].decode() == ""
        assert math.isfinite(group["atom_number"][0])
        assert math.isnan(group["squeezing_parameter"][0])
