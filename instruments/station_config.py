"""The station file (TOML): which instrument plays each role, where, its limits and calibrations.

One table per role — `heater`, `laser`, `polarimeter`, `digitiser`, `coils` — plus `cell` (the
vapour cell and beam, which the analysis needs as much as the simulator), `station` (name, and
`simulated = true|false`) and, for a simulated station, `simulation` (clock speed, transport,
seed, and the simulated world's own physics under `simulation.lab`). Every value is checked when
the file is read; an unknown name or a value out of range is an error that names it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from hotspin.analysis.checks import (
    ParameterError,
    check_range,
    check_vector,
    dataclass_from_mapping,
)
from hotspin.analysis.experiment import CellGeometry

SAFE_STATES = ("hold", "off")
DECIMATIONS = tuple(2**k for k in range(17))  # the Red Pitaya's: 1, 2, 4, …, 65536
TRANSPORTS = ("inprocess", "tcp")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError(f"{name} = {value!r} is not one of {list(choices)}")


@dataclass(frozen=True)
class StationInfo:
    """The station's name and whether its instruments are simulated."""

    name: str = "hotspin station"
    simulated: bool = True
    # The VISA implementation: "@py" is pyvisa-py; "" lets pyvisa look for a vendor library.
    visa_library: str = "@py"
    timeout_ms: int = 2000  # per exchange; a stalled instrument costs (retries + 1) of these
    retries: int = 2  # reconnections and repeats after a link fault, before giving up
    watchdog_timeout_s: float = 600.0  # a run paused by its watchdog longer than this aborts
    safe_state_patience_s: float = 10.0  # how long to keep trying to make an instrument safe

    def __post_init__(self) -> None:
        check_range("station.timeout_ms", self.timeout_ms, 10, 600_000, "ms")
        check_range("station.retries", self.retries, 0, 10)
        check_range("station.watchdog_timeout_s", self.watchdog_timeout_s, 1, 86400, "s")
        check_range("station.safe_state_patience_s", self.safe_state_patience_s, 0, 3600, "s")


@dataclass(frozen=True)
class CellConfig(CellGeometry):
    """The `[cell]` table: the cell and beam geometry, and the optics' transmission to the detector.

    The geometry's keys, defaults and checks are `CellGeometry`'s; the analysis and the simulated
    lab are handed that geometry whole.
    """

    where: ClassVar[str] = "cell."
    optics_transmission: float = 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("cell.optics_transmission", self.optics_transmission, 0, 1, low_open=True)


@dataclass(frozen=True)
class HeaterConfig:
    """The cell heater: a Lake Shore 336 loop, its limits and what it does when a run ends."""

    driver: str = "lakeshore336"
    resource: str = "TCPIP::127.0.0.1::7777::SOCKET"
    input: str = "A"
    output: int = 1
    max_temperature_K: float = 470.0  # interlock; also programmed into TLIMIT
    heater_resistance_ohm: float = 50.0
    max_heater_current_A: float = 1.0
    ramp_rate_K_per_min: float = 5.0
    safe_state: str = "hold"
    watchdog_band_K: float = 2.0  # a measurement pauses while |T − setpoint| exceeds this

    def __post_init__(self) -> None:
        _check_choice("heater.input", self.input, ("A", "B", "C", "D"))
        check_range("heater.watchdog_band_K", self.watchdog_band_K, 0.01, 100, "K")
        _check_choice("heater.output", str(self.output), ("1", "2"))
        check_range("heater.max_temperature_K", self.max_temperature_K, 250, 700, "K")
        _check_choice(
            "heater.heater_resistance_ohm", f"{self.heater_resistance_ohm:g}", ("25", "50")
        )
        check_range(
            "heater.max_heater_current_A", self.max_heater_current_A, 0, 2, "A", low_open=True
        )
        check_range("heater.ramp_rate_K_per_min", self.ramp_rate_K_per_min, 0.1, 100, "K/min")
        _check_choice("heater.safe_state", self.safe_state, SAFE_STATES)


@dataclass(frozen=True)
class LaserConfig:
    """The probe laser: a Toptica DLC pro, its current limit and its detuning calibration."""

    driver: str = "dlcpro"
    resource: str = "TCPIP::127.0.0.1::1998::SOCKET"
    max_current_A: float = 0.150
    safe_state: str = "hold"
    # Detuning from the D1 F=2 line at the reference settings, and its tuning with current and
    # piezo voltage inside the mode-hop-free range (from a wavemeter calibration).
    reference_current_A: float = 0.120
    reference_detuning_Hz: float = 60e9
    current_tuning_Hz_per_A: float = -0.3e12
    piezo_tuning_Hz_per_V: float = 0.25e9

    def __post_init__(self) -> None:
        check_range("laser.max_current_A", self.max_current_A, 0, 0.5, "A", low_open=True)
        _check_choice("laser.safe_state", self.safe_state, SAFE_STATES)
        check_range("laser.reference_current_A", self.reference_current_A, 0, 0.5, "A")
        check_range("laser.reference_detuning_Hz", self.reference_detuning_Hz, -1e12, 1e12, "Hz")


@dataclass(frozen=True)
class PolarimeterConfig:
    """The balanced polarimeter: PDB450A gains (set by hand), plate mount, digitiser channels."""

    detector: str = "PDB450A"
    gain_diff_V_per_A: float = 1.0e5
    gain_sum_V_per_A: float = 1.0e3
    responsivity_A_per_W: float = 0.52
    nep_W_per_rtHz: float = 5e-12
    mount_driver: str = "ell14"
    mount_resource: str = "TCPIP::127.0.0.1::10001::SOCKET"
    mount_address: str = "0"
    diff_channel: int = 1
    sum_channel: int = 2
    plate_zero_deg: float = 0.0  # the plate angle that balanced it last time; a starting guess

    def __post_init__(self) -> None:
        check_range("polarimeter.gain_diff_V_per_A", self.gain_diff_V_per_A, 1e3, 1e7, "V/A")
        check_range("polarimeter.gain_sum_V_per_A", self.gain_sum_V_per_A, 1e2, 1e7, "V/A")
        check_range(
            "polarimeter.responsivity_A_per_W",
            self.responsivity_A_per_W,
            0,
            1,
            "A/W",
            low_open=True,
        )
        check_range("polarimeter.nep_W_per_rtHz", self.nep_W_per_rtHz, 0, 1e-6, "W/rtHz")
        _check_choice("polarimeter.diff_channel", str(self.diff_channel), ("1", "2"))
        _check_choice("polarimeter.sum_channel", str(self.sum_channel), ("1", "2"))
        if self.diff_channel == self.sum_channel:
            raise ParameterError("polarimeter.diff_channel and sum_channel must differ")
        check_range("polarimeter.plate_zero_deg", self.plate_zero_deg, -360, 360, "deg")


@dataclass(frozen=True)
class DigitiserConfig:
    """The digitiser: a Red Pitaya STEMlab 125-14 and its acquisition settings."""

    driver: str = "redpitaya"
    resource: str = "TCPIP::127.0.0.1::5000::SOCKET"
    decimation: int = 64
    diff_gain: str = "LV"
    sum_gain: str = "LV"

    def __post_init__(self) -> None:
        _check_choice("digitiser.diff_gain", self.diff_gain, ("LV", "HV"))
        _check_choice("digitiser.sum_gain", self.sum_gain, ("LV", "HV"))
        if self.decimation not in DECIMATIONS:
            raise ParameterError(
                f"digitiser.decimation = {self.decimation!r} is not one of {list(DECIMATIONS)}"
            )


def _identity_matrix() -> tuple[tuple[float, ...], ...]:
    return ((1e-4, 0.0, 0.0), (0.0, 1e-4, 0.0), (0.0, 0.0, 1e-4))


@dataclass(frozen=True)
class CoilsConfig:
    """Three Keithley 6221 sources (x, y, z), the coil matrix and the coil limits."""

    driver: str = "keithley6221"
    resources: tuple[str, str, str] = (
        "TCPIP::127.0.0.1::1394::SOCKET",
        "TCPIP::127.0.0.1::1395::SOCKET",
        "TCPIP::127.0.0.1::1396::SOCKET",
    )
    coil_matrix_T_per_A: tuple[tuple[float, ...], ...] = field(default_factory=_identity_matrix)
    max_current_A: float = 0.05
    max_ramp_rate_A_per_s: float = 0.02
    compliance_V: float = 10.0
    coil_resistance_ohm: tuple[float, float, float] = (10.0, 10.0, 10.0)
    zero_field_currents_A: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.resources) != 3:
            raise ParameterError(f"coils.resources needs 3 entries (x, y, z), got {self.resources}")
        matrix = self.coil_matrix_T_per_A
        if len(matrix) != 3 or any(len(row) != 3 for row in matrix):
            raise ParameterError(f"coils.coil_matrix_T_per_A must be 3×3, got {matrix}")
        for row in matrix:
            check_vector("coils.coil_matrix_T_per_A", row, 3, "T/A")
        check_range("coils.max_current_A", self.max_current_A, 0, 0.105, "A", low_open=True)
        check_range(
            "coils.max_ramp_rate_A_per_s", self.max_ramp_rate_A_per_s, 0, 10, "A/s", low_open=True
        )
        check_range("coils.compliance_V", self.compliance_V, 0.1, 105, "V")
        for value in self.zero_field_currents_A:
            check_range(
                "coils.zero_field_currents_A", value, -self.max_current_A, self.max_current_A, "A"
            )


@dataclass(frozen=True)
class SimulationConfig:
    """How the simulated lab runs: clock speed, transport, and the simulated world's physics."""

    clock_speed: float = 1.0
    transport: str = "inprocess"
    seed: int | None = None
    lab: dict[str, Any] = field(default_factory=dict)
    # Faults the simulated instruments commit, by instrument name: lists of tables with kind
    # (drop, delay, corrupt, error, stall), after, count, delay_s, duration_s.
    faults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range("simulation.clock_speed", self.clock_speed, 0, 1e6, low_open=True)
        _check_choice("simulation.transport", self.transport, TRANSPORTS)


#: The tables of a station's roles and the resources each must name on a real station.
ROLE_RESOURCES = {
    "heater": ("resource",),
    "laser": ("resource",),
    "polarimeter": ("mount_resource",),
    "digitiser": ("resource",),
    "coils": ("resources",),
}


@dataclass(frozen=True)
class StationConfig:
    """A whole station file."""

    station: StationInfo = field(default_factory=StationInfo)
    cell: CellConfig = field(default_factory=CellConfig)
    heater: HeaterConfig = field(default_factory=HeaterConfig)
    laser: LaserConfig = field(default_factory=LaserConfig)
    polarimeter: PolarimeterConfig = field(default_factory=PolarimeterConfig)
    digitiser: DigitiserConfig = field(default_factory=DigitiserConfig)
    coils: CoilsConfig = field(default_factory=CoilsConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    @property
    def simulated(self) -> bool:
        """Return True when the station runs on the simulated lab."""
        return self.station.simulated

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> StationConfig:
        """Build a station config from parsed TOML; unknown names or bad values are errors.

        A real station (``simulated = false``) must name every role's table and the resource
        in it: a default address and default limits would drive whatever answers there.
        """
        config = dataclass_from_mapping(cls, mapping, "station file")
        if not config.simulated:
            for table, keys in ROLE_RESOURCES.items():
                given = mapping.get(table)
                if not isinstance(given, dict):
                    raise ParameterError(
                        f"a real station (station.simulated = false) needs its [{table}] table, "
                        f"with {' and '.join(keys)}; it is missing"
                    )
                for key in keys:
                    if key not in given:
                        raise ParameterError(
                            f"a real station (station.simulated = false) needs {table}.{key}; "
                            "it is missing"
                        )
        return config

    @classmethod
    def load(cls, path: str | Path | None = None) -> StationConfig:
        """Read a station file; with no path, the embedded simulated lab."""
        text = station_file_text(path)
        source = "embedded simulated station" if path is None else str(path)
        try:
            mapping = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ParameterError(f"station file {source} is not valid TOML: {error}") from None
        try:
            return cls.from_mapping(mapping)
        except ParameterError as error:
            raise ParameterError(f"station file {source}: {error}") from None


def station_file_text(path: str | Path | None = None) -> str:
    """Return the text of a station file; with no path, the embedded simulated lab's."""
    if path is None:
        return (
            resources.files("hotspin.instruments").joinpath("stations/simulated.toml").read_text()
        )
    try:
        return Path(path).read_text()
    except OSError as error:
        raise ParameterError(f"cannot read station file {path}: {error}") from None


def toml_value(value: Any) -> str:
    """Return a number or a list of numbers as TOML text."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(float(value))


def set_station_value(text: str, table: str, key: str, value: Any, comment: str = "") -> str:
    """Return station-file text with ``[table] key`` set to ``value``, the rest untouched.

    The value replaces the old one (a multi-line array too) and keeps the comments around it; a
    missing key is added at the top of its table, a missing table at the end of the file. The
    result is read back and checked before it is returned.
    """
    lines = text.splitlines(keepends=True)
    # The bracket depth at the start of each line: a line inside a multi-line array is neither
    # a table header nor a key, even when it starts with "[".
    depth = [0]
    for line in lines:
        code = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", line).split("#", 1)[0]
        depth.append(depth[-1] + code.count("[") - code.count("]"))
    top = [i for i in range(len(lines)) if depth[i] == 0]
    header = re.compile(rf"^\s*\[{re.escape(table)}\]\s*(#.*)?$")
    start = next((i for i in top if header.match(lines[i])), None)
    entry = f"{key} = {toml_value(value)}" + (f"  # {comment}" if comment else "") + "\n"
    if start is None:
        result = text + ("" if text.endswith("\n") or not text else "\n") + f"\n[{table}]\n{entry}"
    else:
        end = next((i for i in top if i > start and lines[i].lstrip().startswith("[")), len(lines))
        assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
        found = next((i for i in top if start < i < end and assignment.match(lines[i])), None)
        if found is None:
            lines.insert(start + 1, entry)
        else:
            last = next(i for i in range(found, len(lines)) if depth[i + 1] == 0)
            lines[found : last + 1] = [entry]
        result = "".join(lines)
    mapping = tomllib.loads(result)
    if mapping.get(table, {}).get(key) != tomllib.loads(entry)[key]:
        raise ParameterError(f"could not set {table}.{key} in the station file")
    StationConfig.from_mapping(mapping)
    return result
