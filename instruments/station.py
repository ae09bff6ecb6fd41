"""`Station`: every role of the experiment, built from a station file, real or simulated.

A simulated station starts the simulated lab (one `SimulatedLab` shared by a simulated instrument
per role) and connects the *real* drivers to it, in-process or through pyvisa-py over loopback
TCP; a real station connects the same drivers to the resources in the file. Procedures and the
monitor see only the virtual instruments: `heater`, `laser`, `polarimeter`, `coils`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.experiment import ApparatusParameters
from hotspin.instruments.cell_heater import CellHeater
from hotspin.instruments.coil_system import CoilSystem
from hotspin.instruments.drivers import driver_class
from hotspin.instruments.interrupts import interrupts_held
from hotspin.instruments.polarimeter import Polarimeter
from hotspin.instruments.probe_laser import ProbeLaser
from hotspin.instruments.resilience import ResilientLink
from hotspin.instruments.station_config import StationConfig

if TYPE_CHECKING:
    from hotspin.simulators.lab import LabConfig, SimulatedLab

log = logging.getLogger(__name__)

SAFE_STATE_PAUSE_S = 0.5  # between attempts at a safe state that failed

#: The instruments of a station, by the name the simulated lab serves them under.
INSTRUMENT_NAMES = ("heater", "laser", "mount", "digitiser", "coil_x", "coil_y", "coil_z")


class WallClock:
    """Real time, for a real station: `now` in seconds and `sleep`.

    ``speed`` above 1 is for a station whose instruments are a simulated lab served elsewhere
    (`hotspin sim serve`) at that clock speed: its seconds pass ``speed`` times faster than the
    wall clock's, as the served lab's do, so the two agree on how long anything takes (a deep-
    memory reader counts the ring's laps from the time since the writer started). ``wall`` and
    ``wait`` are the wall clock it follows and how it waits on it.
    """

    manual = False  # it follows the wall clock

    def __init__(
        self,
        speed: float = 1.0,
        wall: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed = float(speed)
        self._wall, self._wait = wall, wait
        self._origin = wall()

    def now(self) -> float:
        """Return the time in s since the clock was made, in the lab's seconds."""
        return self.speed * (self._wall() - self._origin)

    def sleep(self, duration_s: float) -> None:
        """Wait ``duration_s`` of the lab's seconds."""
        self._wait(duration_s / self.speed)


def lab_config_for(config: StationConfig) -> LabConfig:
    """Return the simulated lab's `LabConfig`: the station's cell and calibrations as its truth.

    The `[cell]` geometry is the lab's, key by key, unless `simulation.lab` names a key (its beam
    by waist or area replaces the station's beam whole). The station's calibrations (coil
    matrix, detector gains, laser tuning, heater) are taken as the simulated world's physics
    unless `simulation.lab` says otherwise, which is how a miscalibrated instrument is simulated.
    """
    from hotspin.simulators.lab import LabConfig

    mapping = copy.deepcopy(config.simulation.lab)
    cell, coils, pol, laser = config.cell, config.coils, config.polarimeter, config.laser
    geometry = cell.geometry_values()
    if "beam_waist_m" in mapping or "beam_area_m2" in mapping:
        # `simulation.lab` gives the simulated beam by its waist or its area: the other follows
        # from it, not from the station's beam.
        del geometry["beam_waist_m"], geometry["beam_area_m2"]
    for name, value in geometry.items():
        mapping.setdefault(name, value)
    mapping.setdefault("seed", config.simulation.seed)
    mapping.setdefault("coils", {}).setdefault(
        "coil_matrix_T_per_A", [list(row) for row in coils.coil_matrix_T_per_A]
    )
    detector = mapping.setdefault("polarimeter", {})
    detector.setdefault("responsivity_A_per_W", pol.responsivity_A_per_W)
    detector.setdefault("gain_diff_V_per_A", pol.gain_diff_V_per_A)
    detector.setdefault("gain_sum_V_per_A", pol.gain_sum_V_per_A)
    detector.setdefault("nep_W_per_rtHz", pol.nep_W_per_rtHz)
    detector.setdefault("optics_transmission", cell.optics_transmission)
    diode = mapping.setdefault("laser", {})
    diode.setdefault("nominal_current_A", laser.reference_current_A)
    diode.setdefault("detuning_at_nominal_Hz", laser.reference_detuning_Hz)
    diode.setdefault("cavity_current_tuning_Hz_per_A", laser.current_tuning_Hz_per_A)
    diode.setdefault("cavity_piezo_tuning_Hz_per_V", laser.piezo_tuning_Hz_per_V)
    mapping.setdefault("oven", {}).setdefault(
        "heater_resistance_ohm", config.heater.heater_resistance_ohm
    )
    return LabConfig.from_mapping(mapping)


def station_resources(config: StationConfig) -> dict[str, str]:
    """Return the VISA resource of every instrument of a station file, by instrument name."""
    c = config
    return {
        "heater": c.heater.resource,
        "laser": c.laser.resource,
        "mount": c.polarimeter.mount_resource,
        "digitiser": c.digitiser.resource,
        "coil_x": c.coils.resources[0],
        "coil_y": c.coils.resources[1],
        "coil_z": c.coils.resources[2],
    }


def simulated_instruments(config: StationConfig, lab: SimulatedLab) -> dict[str, Any]:
    """Return one simulated instrument per station instrument, all attached to ``lab``."""
    from hotspin.simulators.keithley6221 import SimulatedKeithley6221
    from hotspin.simulators.lakeshore336 import SimulatedLakeShore336
    from hotspin.simulators.redpitaya import SimulatedRedPitaya
    from hotspin.simulators.thorlabs_ell14 import SimulatedELL14
    from hotspin.simulators.toptica_dlcpro import SimulatedDLCpro

    jumpers = (config.digitiser.diff_gain, config.digitiser.sum_gain)
    if config.polarimeter.diff_channel == 2:
        jumpers = jumpers[::-1]
    instruments = {
        "heater": SimulatedLakeShore336(lab, "heater"),
        "laser": SimulatedDLCpro(lab, "laser"),
        "mount": SimulatedELL14(lab, "mount"),
        "digitiser": SimulatedRedPitaya(lab, "digitiser", jumpers=jumpers),
    }
    for axis, name in enumerate(("coil_x", "coil_y", "coil_z")):
        instruments[name] = SimulatedKeithley6221(
            lab, name, axis, coil_resistance_ohm=config.coils.coil_resistance_ohm[axis]
        )
    return instruments


def install_faults(config: StationConfig, instruments: dict[str, Any]) -> None:
    """Plan the faults of the station file's `simulation.faults` in the simulated instruments."""
    from hotspin.simulators.instrument_base import Fault

    for name, faults in config.simulation.faults.items():
        if name not in instruments:
            raise ParameterError(
                f"simulation.faults.{name}: no such instrument; known: {', '.join(instruments)}"
            )
        tables = faults if isinstance(faults, list) else [faults]
        for table in tables:
            if not isinstance(table, dict):
                raise ParameterError(
                    f"simulation.faults.{name}: each fault is a table, got {table!r}"
                )
            try:
                instruments[name].faults.add(Fault.from_mapping(table))
            except (TypeError, ValueError) as error:
                raise ParameterError(f"simulation.faults.{name}: {error}") from None


def saved_description(saved: dict[str, Any] | None, persisting: bool) -> str:
    """Return where a simulated lab starts: fresh, or as the last process left it."""
    if not persisting:
        return "a fresh simulated lab (cell at room temperature, not balanced, field not zeroed)"
    if saved is None:
        return "a new embedded simulated lab, cold (cell at room temperature, not balanced)"
    lab, heater = saved["lab"], saved["settings"]["heater"]
    return (
        f"the embedded simulated lab as it was left: cell {lab['oven_temperature_K']:.1f} K, "
        f"setpoint {heater['setpoint_K']:.1f} K (heater {heater['heater_range']}), "
        f"plate at {lab['hwp_angle_deg']:.2f}°"
    )


class Station:
    """The experiment's instruments, by role; a context manager that leaves them safe."""

    def __init__(
        self,
        config: StationConfig,
        transport: str | None = None,
        clock: Any = None,
        *,
        persist: bool = False,
        manual_clock: bool = False,
    ) -> None:
        """Connect every instrument; ``clock`` (an object with `now` and `sleep`) is the one
        clock every driver, virtual instrument and the simulated lab use (default: wall time,
        or the simulated lab's clock at the station's `simulation.clock_speed`). ``persist``:
        a simulated lab that continues where the last process left it (simulators.persistence),
        driven by one process at a time. ``manual_clock``: a simulated lab whose clock moves only
        when the code waits, so a headless run takes only its computation's time (and gives the
        same numbers for the same seed); a real station ignores it."""
        self.config = config
        self.store: Any = None
        self.started_from = ""
        self.lab: Any = None
        self.server: Any = None
        self.simulated_instruments: dict[str, Any] = {}
        self.links: dict[str, ResilientLink] = {}
        if config.simulated:
            self._start_simulation(
                transport or config.simulation.transport, clock, persist, manual_clock
            )
        else:
            self.clock: Any = clock or WallClock(config.simulation.clock_speed)
            self._connect(station_resources(config))

    @classmethod
    def from_file(
        cls,
        path: str | Path | None = None,
        transport: str | None = None,
        clock: Any = None,
        *,
        persist: bool = False,
        manual_clock: bool = False,
    ) -> Station:
        """Build the station of a station file (none: the embedded simulated lab)."""
        return cls(
            StationConfig.load(path), transport, clock, persist=persist, manual_clock=manual_clock
        )

    # --- construction --------------------------------------------------------------------------
    def _start_simulation(
        self, transport: str, clock: Any, persist: bool, manual_clock: bool
    ) -> None:
        from hotspin.simulators.clock import SimClock
        from hotspin.simulators.inprocess import InProcessAdapter
        from hotspin.simulators.lab import SimulatedLab
        from hotspin.simulators.server import SimServer

        saved = None
        if persist:
            from hotspin.simulators.persistence import LabStore

            self.store = LabStore()
            self.store.acquire()
            saved = self.store.load()
        speed = self.config.simulation.clock_speed
        start = saved["lab"]["time_s"] if saved else 0.0
        if clock is None:
            clock = SimClock(speed=speed, start_s=start, manual=manual_clock)
        elif clock.now() < start:  # a given clock continues from the saved lab's time
            clock.skip(start - clock.now())
        self.clock = clock
        self.lab = SimulatedLab(lab_config_for(self.config), self.clock)
        if saved:
            self.lab.restore(saved["lab"])
        self.simulated_instruments = simulated_instruments(self.config, self.lab)
        install_faults(self.config, self.simulated_instruments)
        if transport == "inprocess":
            connections = {
                n: (lambda s=s: InProcessAdapter(s)) for n, s in self.simulated_instruments.items()
            }
        elif transport == "tcp":
            self.server = SimServer({n: (s, 0) for n, s in self.simulated_instruments.items()})
            self.server.start()
            connections = self.server.resources()
        else:
            raise ValueError(f"transport = {transport!r} is not one of ['inprocess', 'tcp']")
        self._connect(connections)
        if saved:
            self.heater.restore(saved["settings"]["heater"])
            self.laser.restore(saved["settings"]["laser"])
            self.coils.zero_field_currents_A = np.asarray(
                saved["settings"]["zero_field_currents_A"]
            )
            from hotspin.simulators.persistence import simulated_gap_s

            self.lab.clock.skip(simulated_gap_s(saved, speed))
        self.started_from = saved_description(saved, self.persisting)

    @property
    def persisting(self) -> bool:
        """Return whether this station's simulated lab is kept between processes."""
        return self.store is not None

    def _connect(self, connections: dict[str, Any]) -> None:
        """Open every driver on its connection, each behind a link that reconnects and retries.

        A connection is a VISA resource name, or a callable returning a fresh in-process adapter
        (the simulated lab); either way a link can build its driver again after a link fault.
        """
        c = self.config
        timeout = {"timeout": c.station.timeout_ms}
        visa = {"visa_library": c.station.visa_library}

        def opener(name: str) -> Callable[[], Any]:
            target = connections[name]
            if isinstance(target, str):
                return lambda: target
            return target

        def options(name: str) -> dict[str, Any]:
            return {**timeout, **(visa if isinstance(connections[name], str) else {})}

        drivers = {
            "heater": driver_class("heater.driver", c.heater.driver),
            "laser": driver_class("laser.driver", c.laser.driver),
            "mount": driver_class("polarimeter.mount_driver", c.polarimeter.mount_driver),
            "digitiser": driver_class("digitiser.driver", c.digitiser.driver),
            "coils": driver_class("coils.driver", c.coils.driver),
        }
        builders = {
            "heater": lambda: drivers["heater"](opener("heater")(), **options("heater")),
            "laser": lambda: drivers["laser"](
                opener("laser")(), current_limit_A=c.laser.max_current_A, **options("laser")
            ),
            "mount": lambda: drivers["mount"](
                opener("mount")(),
                address=c.polarimeter.mount_address,
                now=self.clock.now,
                sleep=self.clock.sleep,
                **options("mount"),
            ),
            "digitiser": lambda: drivers["digitiser"](
                opener("digitiser")(),
                sleep=self.clock.sleep,
                now=self.clock.now,
                **options("digitiser"),
            ),
        }
        for name in ("coil_x", "coil_y", "coil_z"):
            builders[name] = lambda name=name: drivers["coils"](opener(name)(), **options(name))
        try:
            for name, build in builders.items():
                target = connections[name]
                resource = target if isinstance(target, str) else f"in-process simulated {name}"
                self.links[name] = ResilientLink(
                    name, build, retries=c.station.retries, resource=resource
                )
        except Exception:
            self.close()
            raise
        links = self.links
        self.heater = CellHeater(links["heater"], c.heater)
        self.laser = ProbeLaser(links["laser"], c.laser)
        self.polarimeter = Polarimeter(links["digitiser"], links["mount"], c.polarimeter,
                                       c.digitiser)  # fmt: skip
        sources = [links["coil_x"], links["coil_y"], links["coil_z"]]
        self.coils = CoilSystem(sources, c.coils, self.clock.sleep)

    # --- use -----------------------------------------------------------------------------------
    def configure(self) -> None:
        """Program every instrument's limits and settings from the station file."""
        self.heater.configure()
        self.polarimeter.configure()
        self.coils.configure()

    def apparatus(
        self, field_T: tuple[float, float, float] | None = None, probe_power_W: float = 0.0
    ) -> ApparatusParameters:
        """Return the apparatus as the station knows it, for the analysis.

        The probe power into the cell is not measured by any instrument of the station; a
        procedure passes its estimate from the sum channel (0 when unknown).
        """
        cell, pol = self.config.cell, self.config.polarimeter
        field = tuple(self.coils.field_T) if field_T is None else field_T
        return ApparatusParameters(
            **cell.geometry_values(),
            temperature_K=self.heater.temperature_K,
            field_T=field,
            probe_power_W=probe_power_W,
            probe_detuning_Hz=self.laser.detuning_Hz,
            responsivity_A_per_W=pol.responsivity_A_per_W,
            nep_W_per_rtHz=pol.nep_W_per_rtHz,
            optics_transmission=cell.optics_transmission,
        )

    def snapshot(self) -> dict[str, Any]:
        """Return every readable setting of every instrument (and the simulation's truth)."""
        snapshot: dict[str, Any] = {
            "station": {"name": self.config.station.name, "simulated": self.config.simulated},
            "cell": {
                name: list(value) if isinstance(value, tuple) else value
                for name, value in asdict(self.config.cell).items()
            },
        }
        for role in ("heater", "laser", "polarimeter", "coils"):
            try:
                snapshot[role] = getattr(self, role).snapshot()
            except Exception as error:  # a snapshot records what it can; a dead link is a fact
                log.warning("snapshot of %s failed: %s", role, error)
                snapshot[role] = {"error": f"{type(error).__name__}: {error}"}
        if self.lab is not None:
            snapshot["simulation_truth"] = self.lab.truth().truth_attributes()
            snapshot["simulation_truth"]["time_s"] = self.clock.now()
        return snapshot

    def safe_state(self) -> list[str]:
        """Bring every instrument to its safe state; return what failed (never raises).

        A role whose safe state fails (a link down, an instrument hung) is tried again, for up
        to the station's `safe_state_patience_s`: leaving a coil energised or a heater on is
        worse than waiting a few seconds for a link to come back.
        """
        with interrupts_held():  # a second Ctrl-C or a SIGTERM cannot cut it short
            return self._safe_state()

    def _safe_state(self) -> list[str]:
        pending = ["coils", "polarimeter", "heater", "laser"]
        failures: dict[str, str] = {}
        deadline = self.clock.now() + self.config.station.safe_state_patience_s
        while pending:
            for role in list(pending):
                try:
                    getattr(self, role).safe_state()
                except Exception as error:
                    log.error("safe state of %s failed: %s", role, error)
                    failures[role] = f"{role}: {type(error).__name__}: {error}"
                else:
                    pending.remove(role)
                    failures.pop(role, None)
            if not pending or self.clock.now() > deadline:
                break
            self.clock.sleep(SAFE_STATE_PAUSE_S)
        return list(failures.values())

    def _persistent_state(self) -> dict[str, Any]:
        """Return what the next process needs to continue this lab."""
        return {
            "lab": self.lab.state(),
            "settings": {
                "heater": self.heater.settings(),
                "laser": self.laser.settings(),
                "zero_field_currents_A": self.coils.zero_field_currents_A.tolist(),
            },
        }

    def close(self) -> None:
        """Close every connection and stop a simulated lab's server (a kept lab is saved)."""
        if self.store is not None:
            try:
                if self.links:
                    self.store.save(self._persistent_state())
            finally:
                self.store.release()
                self.store = None
        for link in self.links.values():
            link.close()
        self.links.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> Station:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leave every instrument in its safe state, whatever ended the block, then close."""
        try:
            failures = self.safe_state()
            if failures:
                log.error("leaving the station with instruments not safe: %s", "; ".join(failures))
        finally:
            self.close()
