"""`make demo`: a complete characterisation of the embedded simulated lab, in a few minutes.

Warm-up to 450 K, polarimeter balance, field zeroing, a SERF spin-noise spectrum and a field
sweep, each a procedure writing its own run file; then a figure (the spectrum with its model
fit; the Larmor frequency against field beside the 4.659 Hz/nT SERF and 6.996 Hz/nT F = 2
lines) and the summary of every run.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hotspin.analysis import constants as k
from hotspin.headless import summary_table
from hotspin.instruments.station import Station
from hotspin.procedures.base import run_procedure
from hotspin.procedures.registry import PROCEDURES
from hotspin.procedures.run_file import load_run
from hotspin.progress import ProgressBar

SEQUENCE: tuple[tuple[str, dict[str, object]], ...] = (
    ("warmup", {"target_temperature_K": 450.0, "dwell_s": 30.0}),
    ("balance", {}),
    ("field_zeroing", {"averages": 10}),
    ("spin_noise", {"bias_field_nT": [500.0, 0.0, 0.0], "averages": 40}),
    ("field_sweep", {"start_nT": 50.0, "stop_nT": 2500.0, "points": 12, "averages": 10}),
)
SERF_HZ_PER_NT = (5 * k.GAMMA_UPPER_rad_per_sT + k.GAMMA_LOWER_rad_per_sT) / 6 / (2 * math.pi)
UPPER_HZ_PER_NT = k.GAMMA_UPPER_rad_per_sT / (2 * math.pi)


def run_sequence(directory: Path, station_path: str | None = None) -> dict[str, Path]:
    """Run the characterisation on one station; return the run file of every procedure."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    # A fresh (cold) lab on a clock that moves only when the code waits: the hour a real cell
    # takes to warm passes in the time its computation takes, and the same seed gives the same
    # numbers on every run.
    with Station.from_file(station_path, manual_clock=True) as station:
        station.configure()
        for name, values in SEQUENCE:
            procedure = PROCEDURES[name].from_values(values)
            procedure.check_limits(station)
            path = directory / f"{name}.h5"
            if path.exists():
                path.unlink()  # the demo's own output from an earlier demo
            bar = ProgressBar(f"{name:<14}")
            run_procedure(procedure, station, path, progress=lambda p, _, bar=bar: bar(p, 100))
            bar(100, 100)
            files[name] = path
    return files


def plot(files: dict[str, Path], path: Path) -> Path:
    """Draw the spectrum with its fit and Larmor frequency against field; save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    spectrum = load_run(files["spin_noise"])
    frequency, psd, model = spectrum.frequency_Hz, spectrum.psd[0], spectrum.model[0]
    larmor = spectrum.summary["larmor_frequency_Hz"][0]
    shown = frequency > 0
    left.loglog(frequency[shown], psd[shown], color="0.6", lw=0.8, label="measured (simulated lab)")
    left.loglog(frequency[shown], model[shown], color="C3", lw=1.5, label="two-manifold model fit")
    left.axvline(larmor, color="C0", ls=":", label=f"Larmor {larmor:.0f} Hz")
    left.set(xlabel="frequency (Hz)", ylabel="S_θ (rad²/Hz)", title="SERF spin-noise spectrum")
    left.legend(fontsize=8)
    results = load_run(files["field_sweep"]).results
    field = results["applied_field_nT"].values
    f_larmor = results["larmor_frequency_Hz"].values
    sigma = results["larmor_frequency_Hz_uncertainty"].values
    right.errorbar(
        field, f_larmor, yerr=sigma, fmt="o", color="C3", label="fitted Larmor frequency"
    )
    grid = np.linspace(0, field.max() * 1.05, 50)
    right.plot(grid, SERF_HZ_PER_NT * 1e-9 * grid, "C0--", label="SERF 4.659 Hz/nT")
    right.plot(grid, UPPER_HZ_PER_NT * 1e-9 * grid, "C2--", label="F=2 6.996 Hz/nT")
    right.set(
        xlabel="field (nT)", ylabel="Larmor frequency (Hz)", title="Larmor frequency vs field"
    )
    right.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; print every run's summary and where the figure is."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="directory for the run files")
    parser.add_argument("--station", help="station file (default: the embedded simulated lab)")
    args = parser.parse_args(argv)
    directory = Path(args.out)
    files = run_sequence(directory, args.station)
    figure = plot(files, directory / "demo.png")
    print()
    for path in files.values():
        print(summary_table(path))
        print()
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
