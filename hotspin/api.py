"""The scripting API: open a station, run a procedure on it, read a run back (for notebooks).

import hotspin
with hotspin.open_station() as station:        # the embedded simulated lab, or a file
    run = hotspin.run("spin_noise", station, averages=50)
run.spectrum   # xarray Dataset: psd, standard error and model against frequency
run.results    # pandas DataFrame: one row per step, values and uncertainties
run.summary    # the run's outcome: name → Measurement (value ± uncertainty, units)
hotspin.load_run(path)                          # the same object from a run file
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hotspin.procedures.run_file import RunContents
from hotspin.procedures.run_file import load_run as read_run_file

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from hotspin.instruments.station import Station


@dataclass(frozen=True)
class Measurement:
    """One result of a run: its value, its standard uncertainty and its units."""

    value: float
    uncertainty: float
    units: str

    def __str__(self) -> str:
        units = f" {self.units}" if self.units else ""
        if not math.isfinite(self.uncertainty):
            return f"{self.value:.6g}{units}"
        return f"{self.value:.6g} ± {self.uncertainty:.2g}{units}"


class Run:
    """A run file read back: attributes, spectra as xarray, results as pandas, the summary."""

    def __init__(self, contents: RunContents) -> None:
        self.contents = contents

    @property
    def path(self) -> Path:
        """Return the run file's path."""
        return self.contents.path

    @property
    def procedure(self) -> str:
        """Return the procedure that wrote the run."""
        return self.contents.procedure

    @property
    def status(self) -> str:
        """Return how the run ended: completed, aborted, failed (or running)."""
        return self.contents.status

    @property
    def parameters(self) -> dict[str, Any]:
        """Return the procedure's parameters and the apparatus it ran on (SI units)."""
        return self.contents.parameters

    @property
    def spectrum(self) -> xr.Dataset:
        """Return the one-sided PSD of the rotation angle (rad²/Hz) per step, against frequency."""
        import xarray as xr

        c = self.contents
        if c.psd.size == 0:
            raise ValueError(f"{c.path}: the run recorded no spectrum ({c.procedure})")
        dims = ("step", "frequency")
        variables = {"psd": (dims, c.psd, {"units": "rad^2/Hz", "long_name": "PSD of θ"})}
        if c.psd_standard_error is not None:
            variables["psd_standard_error"] = (dims, c.psd_standard_error, {"units": "rad^2/Hz"})
        if c.model is not None:
            variables["model"] = (dims, c.model, {"units": "rad^2/Hz", "long_name": "fit"})
        coords = {
            "frequency": ("frequency", c.frequency_Hz, {"units": "Hz"}),
            "step": np.arange(c.psd.shape[0]),
        }
        return xr.Dataset(variables, coords=coords, attrs={"procedure": c.procedure})

    @property
    def results(self) -> pd.DataFrame:
        """Return the per-step results, one row per step; units in `DataFrame.attrs['units']`."""
        import pandas as pd

        columns = {name: column.values for name, column in self.contents.results.items()}
        frame = pd.DataFrame(columns)
        frame.attrs["units"] = {n: c.units for n, c in self.contents.results.items()}
        return frame

    @property
    def summary(self) -> dict[str, Measurement]:
        """Return the run's outcome: every summary value with its uncertainty and units."""
        return {name: Measurement(*entry) for name, entry in self.contents.summary.items()}

    def __repr__(self) -> str:
        lines = [f"Run({self.procedure}: {self.status}, {self.path})"]
        lines += [f"  {name} = {value}" for name, value in self.summary.items()]
        return "\n".join(lines)


def load_run(path: str | Path) -> Run:
    """Return the run stored in the run file ``path``."""
    return Run(read_run_file(path))


@contextmanager
def open_station(path: str | Path | None = None, *, clock: Any = None) -> Iterator[Station]:
    """Open a station (none: the embedded simulated lab, as the last process left it),
    configured; leave it safe and closed.

    Leaving the block by any path, an exception included, puts every instrument in its safe
    state before the links close. A simulated lab's clock moves only when the code waits, so a
    run takes only its computation's time.
    """
    from hotspin.instruments.station import Station

    with Station.from_file(path, clock=clock, persist=path is None, manual_clock=True) as station:
        station.configure()
        yield station


def run(name: str, station: Station, out: str | Path | None = None, **values: Any) -> Run:
    """Run the procedure ``name`` on ``station`` with the given parameter values; return it.

    Every value is checked (name, value, allowed range) before any instrument is touched;
    ``out`` defaults to data/<date>/<time>_<name>.h5.
    """
    from hotspin.headless import procedure_class
    from hotspin.procedures.base import run_procedure
    from hotspin.procedures.parameters import assign
    from hotspin.procedures.recorder import default_path

    cls = procedure_class(name)
    procedure = cls.from_values(
        assign(cls.parameter_map(), [f"{k}={v}" for k, v in values.items()])
    )
    path = Path(out) if out is not None else default_path(name)
    run_procedure(procedure, station, path)
    return load_run(path)
