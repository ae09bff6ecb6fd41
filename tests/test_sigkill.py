"""SIGKILL at ten seeded random moments of a field sweep and of a long average: every file stays
readable and keeps every step that was flushed before the kill."""

import h5py
import numpy as np
import pytest
from helpers.killable import next_report, start_procedure
from hotspin.instruments.station import Station
from hotspin.instruments.station_config import StationConfig
from hotspin.procedures.base import run_procedure
from hotspin.procedures.registry import PROCEDURES

# Each child runs one procedure on the kept (persisted) lab that the test warmed and balanced,
# and reports each progress message and each recorded step (recorded means flushed: the run
# file flushes a step before it calls on_step).
KILLS = 10
SCENARIOS = {
    # (procedure, parameters, progress messages in a whole run)
    "sweep": ("field_sweep", {"points": 5, "averages": 2}, 10),
    "long average": ("spin_noise", {"averages": 60}, 60),
}


@pytest.fixture
def warm_kept_lab(tmp_path, lab_state):
    """A station file and its kept lab, warm and balanced (persisted to lab_state), on a clock
    that moves when the code waits (as the children's)."""
    station_file = tmp_path / "lab.toml"
    station_file.write_text("[simulation]\nseed = 3\n")
    with Station(StationConfig.load(station_file), persist=True, manual_clock=True) as station:
        station.configure()
        for name, values in (("warmup", {"dwell_s": 5.0}), ("balance", {})):
            procedure = PROCEDURES[name].from_values(values)
            run_procedure(procedure, station, tmp_path / f"{name}.h5")
    return station_file


@pytest.mark.timeout(600)  # twenty short-lived processes; each wait below is bounded too
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sigkill_at_random_moments_keeps_every_flushed_step(tmp_path, warm_kept_lab, scenario):
    name, values, messages = SCENARIOS[scenario]
    rng = np.random.default_rng(20261201)
    moments = rng.integers(1, messages - 1, size=KILLS)  # kill after this many progress reports
    for index, moment in enumerate(moments):
        out = tmp_path / f"killed-{index}.h5"
        child, reports_of_child = start_procedure(warm_kept_lab, name, values, out)
        steps = reports = 0
        try:
            while reports < moment and reports_of_child.poll(60):
                try:
                    message = next_report(reports_of_child)
                except EOFError:  # the child ended
                    break
                steps += message == "step"
                reports += message.startswith("progress")
            child.kill()
            child.join(timeout=60)
        finally:
            if child.is_alive():
                child.kill()
            reports_of_child.close()
        assert reports >= moment, f"{scenario} kill {index}: the run ended before it"
        with h5py.File(out, "r") as f:  # readable
            assert f.attrs["procedure"] == name
            assert str(f.attrs["status"]) in ("running", "completed"), (scenario, index)
            assert "parameters" in f and "snapshot/start" in f
            rows = {column.shape[0] for column in f["results"].values()} if "results" in f else {0}
            assert len(rows) == 1, f"results columns of different lengths: {rows}"
            kept = rows.pop()
            assert kept >= steps, f"{scenario} kill {index}: {steps} steps flushed, {kept} kept"
            if "spectra" in f:
                assert f["spectra/psd"].shape[0] >= min(steps, kept)
                assert np.all(np.isfinite(f["spectra/psd"][:steps]))
