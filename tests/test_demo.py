"""`make demo`: a cold lab characterised, the same numbers for the same seed."""

import numpy as np
from hotspin.procedures.run_file import load_run

from hotspin import demo

SHORT = (
    ("warmup", {"target_temperature_K": 450.0, "dwell_s": 10.0}),
    ("balance", {}),
    ("spin_noise", {"averages": 6}),
)


def test_the_same_seed_gives_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "SEQUENCE", SHORT)
    first = demo.run_sequence(tmp_path / "a")
    second = demo.run_sequence(tmp_path / "b")
    a, b = load_run(first["spin_noise"]), load_run(second["spin_noise"])
    assert a.status == b.status == "completed"
    assert np.array_equal(a.psd, b.psd)
    np.testing.assert_equal(a.summary, b.summary)  # NaN uncertainties compare equal here
    # It starts cold: the warm-up took the cell from room temperature.
    warmup = load_run(first["warmup"]).results["temperature_K"]
    assert warmup.values[0] < 300.0
