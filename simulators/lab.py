"""`SimulatedLab`: the one world that every simulated instrument shares.

It holds the cell and its oven, the atoms, the coils in the shield, the probe laser, the
polarimeter optics and a clock. Instruments change its settings (heater power, coil currents,
laser current, plate angle) and read what the apparatus produces: the cell temperature and the
polarimeter's difference and sum voltages, computed from the spin model of `analysis`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hotspin.analysis.checks import (
    ParameterError,
    check_positive,
    check_range,
    check_vector,
    dataclass_from_mapping,
)
from hotspin.analysis.detection import DetectionChain
from hotspin.analysis.experiment import (
    ApparatusParameters,
    CellGeometry,
    DerivedQuantities,
    derive,
)
from hotspin.simulators.cell_oven import CellOven, OvenConfig
from hotspin.simulators.clock import SimClock
from hotspin.simulators.coils import CoilConfig, Coils
from hotspin.simulators.laser_diode import LaserDiode, LaserDiodeConfig
from hotspin.simulators.polarimeter_optics import (
    BalancedPolarimeter,
    FlickerNoise,
    PolarimeterConfig,
)
from hotspin.simulators.spin_noise import AngleNoise

# The Lake Shore 336 updates its control loop about ten times a second.
CONTROL_INTERVAL_S = 0.1
# The current sources' noise is drawn afresh once per this much signal and held in between: it
# is slower than a record, and the spin model is rebuilt only when something changes.
CURRENT_NOISE_INTERVAL_S = 10.0

HeaterControl = Callable[[float, float, float], float]
"""(time_s, temperature_K, interval_s) → heater power in W for the next interval."""


@dataclass(frozen=True)
class LabConfig(CellGeometry):
    """The simulated apparatus: cell, beam, oven, laser, coils, polarimeter and random seed.

    The cell and beam are its `CellGeometry` (keyword-only fields, the same keys in a mapping).
    """

    oven: OvenConfig = field(default_factory=OvenConfig)
    laser: LaserDiodeConfig = field(default_factory=LaserDiodeConfig)
    coils: CoilConfig = field(default_factory=CoilConfig)
    polarimeter: PolarimeterConfig = field(default_factory=PolarimeterConfig)
    # Technical 1/f noise of the polarisation angle: one-sided A/f rad²/Hz across the band.
    flicker_coefficient_rad2: float = 0.0
    flicker_band_Hz: tuple[float, float] = (1e-3, 1e7)
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("flicker_coefficient_rad2", self.flicker_coefficient_rad2, 0.0, 1.0, "rad²")
        low, high = check_vector("flicker_band_Hz", self.flicker_band_Hz, 2, "Hz")
        if not 0 < low < high:
            raise ParameterError(
                f"flicker_band_Hz = {list(self.flicker_band_Hz)}: "
                "must be (low, high) with 0 < low < high"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> LabConfig:
        """Build a config from a (TOML) mapping; unknown names are an error naming them."""
        return dataclass_from_mapping(cls, mapping, "lab")


@dataclass
class LabRecord:
    """What the polarimeter put out during one digitiser record."""

    start_s: float
    sample_rate_Hz: float
    v_diff: np.ndarray  # V, RF (difference) output
    v_sum: np.ndarray  # V, monitor (sum) output
    atomic_angle_rad: np.ndarray  # the truth: rotation by the atoms (behind the chain, if any)


class SimulatedLab:
    """The simulated apparatus, shared by all simulated instruments; thread-safe."""

    def __init__(self, config: LabConfig | None = None, clock: SimClock | None = None) -> None:
        self.config = config or LabConfig()
        self.clock = clock or SimClock()
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(self.config.seed)
        self.oven = CellOven(self.config.oven)
        self.laser = LaserDiode(self.config.laser)
        self.coils = Coils(self.config.coils)
        self.polarimeter = BalancedPolarimeter(self.config.polarimeter)
        self.hwp_angle_deg = 0.0
        self.heater_control: HeaterControl | None = None
        #: Called under `lock` before every record, so moving parts (the plate) are up to date
        #: even when no client has asked their instrument lately.
        self.motion_updates: list[Callable[[], None]] = []
        self._thermal_time_s = self.clock.now()
        self._spin_time_s = self.clock.now()
        self._angle = AngleNoise(self.rng)
        self._current_noise_A = np.zeros(3)
        self._current_noise_until_s = -math.inf  # signal time at which the next draw is due
        self._derived: tuple[ApparatusParameters, DerivedQuantities] | None = None
        self.flicker = FlickerNoise(
            self.config.flicker_coefficient_rad2, self.config.flicker_band_Hz, self.rng
        )

    # --- the apparatus now ----------------------------------------------------------------------
    def update(self) -> None:
        """Bring the oven up to the clock, running the heater control every control interval."""
        with self.lock:
            now = self.clock.now()
            while self._thermal_time_s < now:
                interval = min(CONTROL_INTERVAL_S, now - self._thermal_time_s)
                power = 0.0
                if self.heater_control is not None:
                    power = self.heater_control(
                        self._thermal_time_s, self.oven.temperature_K, interval
                    )
                self.oven.step(power, interval)
                self._thermal_time_s += interval

    @property
    def cell_temperature_K(self) -> float:
        """Return the cell temperature now, in K."""
        with self.lock:
            self.update()
            return self.oven.temperature_K

    def apparatus(self, field_T: np.ndarray | None = None) -> ApparatusParameters:
        """Return the physical parameters the atoms see now (the simulation's truth)."""
        c, pol = self.config, self.config.polarimeter
        with self.lock:
            self.update()
            return ApparatusParameters(
                **c.geometry_values(),
                temperature_K=self.oven.temperature_K,
                field_T=tuple(self.coils.field_T() if field_T is None else field_T),
                probe_power_W=self.laser.power_at_cell_W,
                probe_detuning_Hz=self.laser.detuning_Hz,
                responsivity_A_per_W=pol.responsivity_A_per_W,
                nep_W_per_rtHz=pol.nep_W_per_rtHz,
                optics_transmission=pol.optics_transmission,
            )

    def truth(self) -> DerivedQuantities:
        """Return every derived rate, the atom number and the couplings at this moment."""
        return derive(self.apparatus())

    # --- kept between processes (the embedded lab) ------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Return the physical state that outlives a process: oven, plate, laser, random state."""
        with self.lock:
            self.update()
            return {
                "time_s": self.clock.now(),
                "oven_temperature_K": self.oven.temperature_K,
                "hwp_angle_deg": self.hwp_angle_deg,
                "laser_temperature_C": self.laser.temperature_C,
                "rng": self.rng.bit_generator.state,
            }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Put the lab back in a `state` taken at the clock's present time (the gap comes after)."""
        with self.lock:
            self.oven.temperature_K = float(state["oven_temperature_K"])
            self.hwp_angle_deg = float(state["hwp_angle_deg"])
            self.laser.temperature_C = float(state["laser_temperature_C"])
            self.rng.bit_generator.state = state["rng"]
            self._thermal_time_s = self._spin_time_s = self.clock.now()

    # --- the digitiser's view -------------------------------------------------------------------
    def record(
        self,
        n: int,
        sample_rate_Hz: float,
        start_s: float | None = None,
        detection: DetectionChain | None = None,
    ) -> LabRecord:
        """Return ``n`` samples of the polarimeter outputs at ``sample_rate_Hz`` from ``start_s``.

        The spins evolve exactly through any gap since the last record. A record cannot start
        before the previous one ended (the atoms have no rewind): such a start is moved up.
        With ``detection`` (the detector's pole and the digitiser's decimation, see
        `analysis.detection`) the difference output is what that chain delivers; its sample rate
        must be ``sample_rate_Hz``. Without it the detector is ideal.
        """
        fs = check_positive("sample_rate_Hz", sample_rate_Hz, "Hz")
        with self.lock:
            start = self.clock.now() if start_s is None else float(start_s)
            start = max(start, self._spin_time_s)
            for update in self.motion_updates:
                update()
            if start >= self._current_noise_until_s:
                self._current_noise_A = self.coils.current_noise_A(self.rng)
                self._current_noise_until_s = start + CURRENT_NOISE_INTERVAL_S
            derived = self._derive(self.apparatus(self.coils.field_T(self._current_noise_A)))
            gap = start - self._spin_time_s
            self._angle.set_model(
                derived.model,
                derived.coupling_upper_rad,
                derived.coupling_lower_rad,
                fs,
                detection,
            )
            self._angle.advance(gap)
            angle = self._angle.block(n)
            atomic = angle
            if self.config.flicker_coefficient_rad2:
                self.flicker.advance(gap)
                angle = angle + self.flicker.block(n, fs)
            self.polarimeter.advance(gap)
            self._spin_time_s = start + n / fs
            v_diff, v_sum = self.polarimeter.voltages(
                angle,
                derived.detected_power_W,
                self.hwp_angle_deg,
                fs,
                self.rng,
                detection,
            )
            return LabRecord(start, fs, v_diff, v_sum, atomic)

    def detection_chain(self, decimation: int, averaging: bool) -> DetectionChain:
        """Return the chain a Red Pitaya at ``decimation`` sees behind the lab's PDB450A."""
        gain = self.config.polarimeter.gain_diff_V_per_A
        return DetectionChain.pdb450a(gain, decimation, averaging)

    def _derive(self, apparatus: ApparatusParameters) -> DerivedQuantities:
        """Return derive(apparatus), kept while the apparatus stays the same."""
        if self._derived is None or self._derived[0] != apparatus:
            self._derived = (apparatus, derive(apparatus))
        return self._derived[1]
