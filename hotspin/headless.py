"""`hotspin run NAME`: one procedure on a station, headless, with a progress bar and a summary."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hotspin.analysis.checks import ParameterError
from hotspin.analysis.fits import Estimate
from hotspin.instruments.errors import InstrumentError
from hotspin.instruments.interrupts import terminating_interrupts
from hotspin.instruments.station import Station
from hotspin.instruments.station_config import (
    StationConfig,
    set_station_value,
    station_file_text,
    toml_value,
)
from hotspin.procedures.base import HotspinProcedure, run_procedure
from hotspin.procedures.parameters import assign
from hotspin.procedures.recorder import RunAborted, check_free_space, default_path
from hotspin.procedures.registry import PROCEDURES
from hotspin.procedures.run_file import load_run as read_run_file
from hotspin.progress import ProgressBar


def procedure_class(name: str) -> type[HotspinProcedure]:
    """Return the procedure called ``name``, or raise ParameterError listing the known ones."""
    if name not in PROCEDURES:
        raise ParameterError(
            f"unknown procedure {name!r}; known procedures: {', '.join(PROCEDURES)}"
        )
    return PROCEDURES[name]


def summary_table(path: str | Path) -> str:
    """Return the status, the summary values with uncertainties and the notes of a run file."""
    run = read_run_file(path)
    attrs = run.attributes
    lines = [f"{run.procedure}: {run.status} -> {path}"]
    for key in ("error", "abort_reason", "safe_state_failures"):
        if attrs.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {attrs[key]}")
    width = max((len(n) for n in run.summary), default=0)
    for name, (value, sigma, unit) in run.summary.items():
        text = (
            str(Estimate(value, sigma, unit))
            if math.isfinite(sigma) and sigma > 0
            else f"{value:.6g} {unit}".rstrip()
        )
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append(f"  steps recorded: {run.steps}")
    lines += [f"  note: {note}" for note in str(attrs.get("notes") or "").splitlines()]
    return "\n".join(lines)


#: The exit status of a run stopped because an instrument gave up (after its retries).
EXIT_INSTRUMENT = 3


def check_output_path(path: Path, created: bool) -> None:
    """Refuse a run file that exists or cannot be written, before any instrument is touched.

    ``created``: the default data/<date>/ directory may be made; a directory given with --out
    must exist.
    """
    if path.exists():
        raise FileExistsError(f"{path} exists; a run never overwrites another run's data")
    folder = path.parent
    if created:
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise ParameterError(f"--out {path}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ParameterError(f"--out {path}: the directory {folder} is not writable")


def run_command(
    name: str,
    assignments: Sequence[str],
    station_path: str | None,
    out: str | None,
    save_calibration: bool = False,
) -> int:
    """Check the parameters, open the station, run, print the summary; return the exit code.

    ``save_calibration``: after a completed run, write what it calibrated into the station file.
    """
    cls = procedure_class(name)
    # The station file's limits are known before any instrument is connected: a value above
    # one is refused naming it, even when the parameter's own range is wider.
    config = StationConfig.load(station_path)
    maxima = cls.station_maxima(config)
    procedure = cls.from_values(assign(cls.parameter_map(), assignments, maxima), config)
    if save_calibration and not cls.CALIBRATES:
        calibrating = [n for n, c in PROCEDURES.items() if c.CALIBRATES]
        raise ParameterError(
            f"--save-calibration: {name} calibrates nothing the station file keeps "
            f"(procedures that do: {', '.join(calibrating)})"
        )
    if save_calibration and station_path is None:
        raise ParameterError(
            "--save-calibration needs --station FILE (the embedded simulated lab's file is "
            "part of the installation)"
        )
    path = Path(out) if out else default_path(name)
    check_output_path(path, created=out is None)
    check_free_space(path, procedure.expected_bytes(), f"the {name} run file {path}")
    bar = ProgressBar(name)
    # The embedded lab (no --station) is kept between runs, as a real one is.
    with (
        terminating_interrupts(),
        Station.from_file(station_path, persist=station_path is None, manual_clock=True) as station,
    ):
        procedure.check_limits(station)
        if station.config.simulated:
            print(f"simulated lab: {station.started_from}", file=sys.stderr)
        station.configure()
        try:
            run_procedure(procedure, station, path, progress=lambda percent, _: bar(percent, 100))
        except (RunAborted, KeyboardInterrupt) as stopped:
            print(f"\n{summary_table(path)}")
            return EXIT_INSTRUMENT if isinstance(stopped.__cause__, InstrumentError) else 130
        except Exception:
            if path.exists():  # a refusal (not ready) stops the run before its file exists
                print(f"\n{summary_table(path)}")
            raise
        if save_calibration and station_path is not None:
            save_station_calibration(station_path, procedure.calibration(), f"{name} {path}")
    bar(100, 100)
    print(summary_table(path))
    return 0


def save_station_calibration(station_path: str | Path, values: dict[str, Any], source: str) -> None:
    """Write calibrated settings ("table.key": value) into a station file, each with its source.

    The new file is checked as a station file and then replaces the old one in one step.
    """
    station_path = Path(station_path)
    text = station_file_text(station_path)
    for name, value in values.items():
        table, key = name.rsplit(".", 1)
        text = set_station_value(text, table, key, value, comment=f"from {source}")
    partial = station_path.with_name(station_path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, station_path)
    for name, value in values.items():
        print(f"station file {station_path}: {name} = {toml_value(value)}", file=sys.stderr)
