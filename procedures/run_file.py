"""Reading a run file (the layout of the README's "Data files") into memory: one reader for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np


def plain(value: Any) -> Any:
    """Return an HDF5 attribute as a Python value: bytes decoded, arrays as tuples, numpy
    scalars unwrapped, and the recorder's "None" (HDF5 has no null) as None."""
    if isinstance(value, np.ndarray):
        return tuple(plain(v) for v in value.tolist())
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value == "None":
        return None
    return value.item() if isinstance(value, np.generic) else value


def _attributes(group: h5py.Group) -> dict[str, Any]:
    """Return a group's attributes, and its subgroups' as nested dicts."""
    values: dict[str, Any] = {key: plain(value) for key, value in group.attrs.items()}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            values[key] = _attributes(item)
    return values


@dataclass
class Column:
    """One per-step result: a value per step and its units."""

    values: np.ndarray
    units: str


@dataclass
class RunContents:
    """Everything the viewer shows of one run file."""

    path: Path
    attributes: dict[str, Any]  # root: procedure, status, started, finished, error, notes
    parameters: dict[str, Any]
    frequency_Hz: np.ndarray = field(default_factory=lambda: np.zeros(0))
    psd: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # one row per step
    psd_standard_error: np.ndarray | None = None
    model: np.ndarray | None = None  # the fitted model per row, NaN outside the fit
    results: dict[str, Column] = field(default_factory=dict)
    summary: dict[str, tuple[float, float, str]] = field(default_factory=dict)

    @property
    def procedure(self) -> str:
        """Return the procedure that wrote the file."""
        return str(self.attributes.get("procedure", "unknown"))

    @property
    def status(self) -> str:
        """Return how the run ended (or 'running' if it never did)."""
        return str(self.attributes.get("status", "unknown"))

    @property
    def steps(self) -> int:
        """Return the number of recorded steps."""
        return max((c.values.size for c in self.results.values()), default=0)


def load_run(path: str | Path) -> RunContents:
    """Read a run file's attributes, parameters, spectra, results and summary."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        if "lock" in str(error):
            raise OSError(
                f"{path} is still being written by a run; open it when it has ended"
            ) from None
        raise
    with f:
        contents = RunContents(
            path=path,
            attributes={k: plain(v) for k, v in f.attrs.items()},
            parameters=_attributes(f["parameters"]) if "parameters" in f else {},
        )
        spectra = f.get("spectra")
        if isinstance(spectra, h5py.Group) and "psd" in spectra:
            contents.frequency_Hz = spectra["frequency"][...]
            contents.psd = spectra["psd"][...]
            if "psd_standard_error" in spectra:
                contents.psd_standard_error = spectra["psd_standard_error"][...]
            if "model" in spectra:
                contents.model = spectra["model"][...]
        results = f.get("results")
        if isinstance(results, h5py.Group):
            for name, column in results.items():
                if isinstance(column, h5py.Dataset) and column.ndim == 1:
                    contents.results[name] = Column(
                        column[...], str(plain(column.attrs.get("units", "")))
                    )
        summary = f.get("summary")
        if isinstance(summary, h5py.Group):
            a = summary.attrs
            for name in a:
                if name.endswith(("_uncertainty", "_units")):
                    continue
                contents.summary[name] = (
                    float(a[name]),
                    float(a.get(f"{name}_uncertainty", np.nan)),
                    str(plain(a.get(f"{name}_units", ""))),
                )
    return contents
