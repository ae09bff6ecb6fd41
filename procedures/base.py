"""The frame every hotspin procedure runs in: parameters, station, run file, safe end.

A procedure is a pymeasure `Procedure`: typed parameters with units and limits, `execute`,
`emit('progress', …)` and `should_stop()`. `run_procedure` runs it on a `Station`:

1. every parameter and every limit check happens before any instrument is touched;
2. the run file is created, with the parameters, the apparatus and a station snapshot;
3. `execute` records each step (results row, spectrum) as soon as it is finished, flushed;
4. whatever happens — completion, an exception, Ctrl-C, an abort — every instrument is brought to
   its safe state, the end snapshot is written and the status (`completed`, `aborted`,
   `failed`) is set; the finished steps stay on disk.

pymeasure's `Worker` is not used to run them: it records through `Results` into a CSV file,
which would be a second, diverging copy of the data next to the HDF5 run file that DESIGN.md
makes the one data file per run, and it marks a run stopped from inside a helper as failed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.instruments.errors import InstrumentError
from hotspin.instruments.interrupts import interrupts_held
from hotspin.procedures.parameters import check_station_maximum, parse_value
from hotspin.procedures.recorder import RunAborted, RunFile, write_attributes
from pymeasure.experiment import Parameter, Procedure

log = logging.getLogger(__name__)

#: A run file without its spectra: parameters, two station snapshots, results and events (the
#: files of the test runs are 50-150 kB), with room to spare.
RUN_FILE_BASE_BYTES = 1 << 20

ProgressCallback = Callable[[float, str], None]
"""(percent done, message) → None"""
StepCallback = Callable[[dict[str, float]], None]
"""{result name: value} → None, once per finished step"""


class HotspinProcedure(Procedure):
    """A measurement on the station, recorded step by step into one HDF5 run file."""

    #: The name used on the command line and in the run file's `procedure` attribute.
    NAME: ClassVar[str] = ""
    #: One line saying what the procedure measures.
    SUMMARY: ClassVar[str] = ""
    #: What the watchdog guards while this procedure measures: "temperature" (the cell within
    #: the station's band of the setpoint) and "interlock" (the laser's interlock closed).
    WATCHES: ClassVar[tuple[str, ...]] = ()
    #: The station-file settings ("table.key") a completed run of this procedure measures.
    CALIBRATES: ClassVar[tuple[str, ...]] = ()
    #: True for a procedure that writes a continuous record: its run file is opened live (SWMR).
    LIVE: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.station: Any = None
        self.run: RunFile | None = None
        self.on_step: StepCallback | None = None
        #: Remarks for whoever reads the run later (fit warnings, skipped points); kept in the file.
        self.notes: list[str] = []

    # --- parameters ----------------------------------------------------------------------------
    @classmethod
    def parameter_map(cls) -> dict[str, Parameter]:
        """Return the procedure's pymeasure parameters by attribute name, in declaration order."""
        return {
            key: value
            for klass in reversed(cls.__mro__)
            for key, value in vars(klass).items()
            if isinstance(value, Parameter)
        }

    #: Parameters a station setting bounds from above, {parameter: "table.key"}: given the
    #: station file, a value above that setting is refused naming it, before the parameter's
    #: own (wider) range is looked at, so the limit named is the one that applies.
    STATION_MAXIMA: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_values(cls, values: Mapping[str, Any], config: Any = None) -> HotspinProcedure:
        """Return a procedure with ``values`` checked and set (defaults for the rest);
        ``config``, the station file, adds its limits (`STATION_MAXIMA`)."""
        parameters = cls.parameter_map()
        unknown = sorted(set(values) - set(parameters))
        if unknown:
            raise ParameterError(
                f"{cls.NAME}: unknown parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(parameters)}"
            )
        checked = {}
        for key, parameter in parameters.items():
            value = values.get(key, parameter.default)
            if value is None:
                raise ParameterError(f"{cls.NAME}: parameter {key} has no value and no default")
            checked[key] = parse_value(key, parameter, value)
        for key, (limit, setting) in cls.station_maxima(config).items():
            check_station_maximum(key, parameters[key], checked[key], limit, setting)
        return cls(**checked)

    @classmethod
    def station_maxima(cls, config: Any) -> dict[str, tuple[float, str]]:
        """Return {parameter: (limit, "table.key")} of the station file ``config`` (None: {})."""
        if config is None:
            return {}
        maxima = {}
        for key, setting in cls.STATION_MAXIMA.items():
            table, name = setting.split(".")
            maxima[key] = (float(getattr(getattr(config, table), name)), setting)
        return maxima

    def values(self) -> dict[str, Any]:
        """Return every parameter's value by attribute name."""
        return {key: getattr(self, key) for key in self.parameter_map()}

    def check_limits(self, station: Any) -> None:
        """Refuse values the station's limits forbid (ParameterError), before any instrument moves.

        The default checks nothing; procedures that drive a limited quantity override it.
        """

    def expected_bytes(self) -> int:
        """Return about how large this run's file grows: its fixed part and its spectra.

        Each step of a spectrum-taking procedure writes a row of PSD, standard error and model
        (8-byte floats, segment_length / 2 + 1 bins each); a sweep has `points` steps.
        """
        steps = int(getattr(self, "points", 1) or 1)
        segment = getattr(self, "segment_length", None)
        spectra = 0 if segment is None else steps * 3 * 8 * (int(segment) // 2 + 1)
        return RUN_FILE_BASE_BYTES + spectra

    def check_ready(self, station: Any) -> None:
        """Refuse (ParameterError) when the apparatus cannot give this procedure a result as it
        is now, saying what to run first; called before the run file exists.

        The default is ready from any state; procedures that need a warm cell or a balanced
        polarimeter override it.
        """

    def calibration(self) -> dict[str, Any]:
        """Return what a completed run measured of the station, by its ``CALIBRATES`` names."""
        return {}

    # --- while running -------------------------------------------------------------------------
    def progress(self, fraction: float, message: str = "") -> None:
        """Report how much of the run is done (0–1), with a short message."""
        self.emit("progress", 100.0 * min(max(fraction, 0.0), 1.0), message)

    def check_stop(self) -> None:
        """Raise RunAborted if the operator has asked the run to stop."""
        if self.should_stop():
            raise RunAborted("stopped by the operator")

    def event(self, kind: str, message: str) -> None:
        """Record an event of the run (watchdog pause, resume, abort) with the station time."""
        assert self.run is not None
        self.run.append_event(self.station.clock.now(), kind, message)
        self.notes.append(f"{self.NAME}: {message}")

    def _problems(self) -> list[str]:
        """Return what is wrong now among the conditions this procedure watches."""
        problems = []
        station = self.station
        if "interlock" in self.WATCHES and station.laser.interlock_open:
            problems.append("the laser interlock is open")
        if "temperature" in self.WATCHES:
            band = station.config.heater.watchdog_band_K
            temperature, setpoint = station.heater.temperature_K, station.heater.setpoint_K
            if abs(temperature - setpoint) > band:
                problems.append(
                    f"the cell is at {temperature:.2f} K, outside {setpoint:g} ± {band:g} K"
                )
        return problems

    def watch(self) -> None:
        """Pause while a watched condition is wrong, resume when it is right again, and abort
        after the station's watchdog timeout; every pause, resumption and abort is recorded."""
        problems = self._problems()
        if not problems:
            return
        clock = self.station.clock
        timeout = self.station.config.station.watchdog_timeout_s
        start = clock.now()
        self.event("paused", "paused: " + "; ".join(problems))
        while problems:
            if clock.now() - start > timeout:
                message = f"aborted after {timeout:g} s paused: " + "; ".join(problems)
                self.event("aborted", message)
                raise RunAborted(f"watchdog: {message}")
            self.wait(min(5.0, timeout / 10))
            problems = self._problems()
        self.event("resumed", f"resumed after {clock.now() - start:.1f} s")

    def ensure_probe_light(self) -> None:
        """Switch the probe laser's emission on if it is off (noted); an open interlock is the
        watchdog's business: the run pauses until it closes."""
        laser = self.station.laser
        if not laser.emission_enabled:
            laser.emission_enabled = True
            self.notes.append(f"{self.NAME}: switched the probe laser's emission on")

    def wait(self, duration_s: float, interval_s: float = 0.5) -> None:
        """Let ``duration_s`` pass on the station's clock, checking for a stop meanwhile."""
        clock = self.station.clock
        end = clock.now() + duration_s
        while True:
            self.check_stop()
            left = end - clock.now()
            if left <= 0:
                return
            clock.sleep(min(interval_s, left))

    def record_step(
        self,
        results: Mapping[str, tuple[float, str]],
        spectrum: tuple[np.ndarray, np.ndarray] | None = None,
        standard_error: np.ndarray | None = None,
        spectrum_attributes: Mapping[str, Any] | None = None,
        model: np.ndarray | None = None,
    ) -> None:
        """Write one finished step: scalar results {name: (value, units)} and maybe a spectrum
        (frequency, PSD) with its standard errors, how it was estimated and the fitted model."""
        assert self.run is not None
        if spectrum is not None:
            self.run.append_spectrum(*spectrum, standard_error, spectrum_attributes, model=model)
        self.run.append_results(results)
        row = {name: float(value) for name, (value, _) in results.items()}
        if self.on_step is not None:
            self.on_step(row)

    def record_summary(self, summary: Mapping[str, tuple[float, float, str]]) -> None:
        """Write the run's outcome {name: (value, uncertainty, units)} to group `summary`."""
        assert self.run is not None
        self.run.write_summary(summary)

    def execute(self) -> None:
        """Run the measurement (each procedure implements it)."""
        raise NotImplementedError


def run_procedure(
    procedure: HotspinProcedure,
    station: Any,
    path: str | Path,
    *,
    progress: ProgressCallback | None = None,
    on_step: StepCallback | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Run ``procedure`` on ``station`` into the run file ``path``; the instruments end safe.

    Raises what the procedure raised (RunAborted for a stop, KeyboardInterrupt for Ctrl-C)
    after the file has its status; returns the path when the run completed.
    """
    procedure.check_limits(station)
    procedure.station = station
    procedure.check_ready(station)
    stop = stop or threading.Event()
    procedure.on_step = on_step
    procedure.should_stop = stop.is_set

    def emit(topic: str, value: Any, message: str = "") -> None:
        if topic == "progress" and progress is not None:
            progress(float(value), message)

    procedure.emit = emit
    parameters = dict(procedure.values())
    parameters["units"] = {
        key: getattr(p, "units", None) or "" for key, p in procedure.parameter_map().items()
    }
    with RunFile(path, procedure.NAME, parameters, live=procedure.LIVE) as run:
        procedure.run = run
        try:
            # The apparatus under the names `hotspin analyze` reads (ApparatusParameters
            # fields), read inside the run so that an instrument failing here is recorded.
            write_attributes(run.file["parameters"], dataclasses.asdict(station.apparatus()))
            run.write_snapshot("start", station.snapshot())
            procedure.execute()
            procedure.check_stop()
        except InstrumentError as error:
            # An instrument that still fails after its link's reconnections and retries: the
            # run stops here, safely, with what it has; the reason goes into the file.
            raise RunAborted(f"{type(error).__name__}: {error}") from error
        finally:
            # Safe state, notes and end snapshot as one: a second Ctrl-C or a SIGTERM waits.
            with interrupts_held():
                failures = station.safe_state()
                if failures:
                    run.file.attrs["safe_state_failures"] = "; ".join(failures)
                if procedure.notes:
                    run.file.attrs["notes"] = "\n".join(dict.fromkeys(procedure.notes))
                try:
                    run.write_snapshot("end", station.snapshot())
                except Exception as error:  # the end snapshot is a record, not a reason to fail
                    log.error("end snapshot failed: %s", error)
                run.flush()
    return Path(path)
