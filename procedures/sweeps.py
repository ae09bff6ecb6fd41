"""Sweeps: a spin-noise spectrum at every step of the field, the temperature, the probe power or
the probe detuning, and what the sweep shows as a whole.

* Field: the SERF signature — the slowing-down factor q = γ_e/γ from Larmor frequency against
  field at low field, and R_SE and R_SD′ from the SERF line's decay rate against field,
  Γ = R_SD′/6 + R_D + (5/3)ω²/R_SE (slope and intercept, with R_D from the cell geometry). Each
  spectrum's fit holds the transit time τ_D at the station's beam waist; R_SD′ is withheld (with
  a note saying why) when the spectra do not determine it (`analyze.sweep_summary`).
* Temperature (density): linewidth and R_SE against density; σ_SE v̄ from R_SE against n.
* Probe power: spin-noise-to-shot-noise ratio against power.
* Detuning: spin-noise-to-shot-noise ratio against detuning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.experiment import derive
from hotspin.analysis.magnetometry import analyse_field_sweep, analyse_temperature_sweep
from hotspin.procedures.analyze import sweep_summary
from hotspin.procedures.parameters import BoundedVectorParameter
from hotspin.procedures.spectroscopy import BiasField, SpectrumProcedure, SpinNoiseStep
from hotspin.procedures.warmup import settle_temperature
from pymeasure.experiment import FloatParameter, IntegerParameter


class Sweep(SpectrumProcedure):
    """One spectrum per step of a swept setting; subclasses say what is swept and summarise."""

    points = IntegerParameter("steps of the sweep", minimum=2, maximum=500, default=12)
    #: (results column, units) of the swept setting.
    COLUMN: tuple[str, str] = ("", "")

    def settings(self) -> np.ndarray:
        """Return the swept setting at every step."""
        raise NotImplementedError

    def apply(self, value: float) -> None:
        """Bring the apparatus to the step's setting."""
        raise NotImplementedError

    def summarize(self, settings: np.ndarray, steps: Sequence[SpinNoiseStep]) -> None:
        """Record what the whole sweep shows (default: nothing more than the steps)."""

    def prepare(self) -> None:
        """Set what stays fixed during the sweep (default: nothing)."""

    def execute(self) -> None:
        """Step through the settings, a spectrum and a fit at each."""
        self.prepare()
        settings = self.settings()
        steps = []
        for index, value in enumerate(settings):
            self.check_stop()
            self.apply(float(value))
            span = (index / len(settings), (index + 1) / len(settings))
            step = self.measure_spectrum(progress=span)
            column, unit = self.COLUMN
            self.record_spin_noise(step, {column: (float(value), unit)})
            steps.append(step)
        self.summarize(settings, steps)


def _refuse_above(
    procedure: Sweep, names: Sequence[str], low: float, limit: float, unit: str, setting: str
) -> None:
    """Raise ParameterError for the first of ``names`` above the station's ``setting``."""
    for name in names:
        value = getattr(procedure, name)
        if value > limit:
            raise ParameterError(
                f"{name} = {value:g} is outside the allowed range [{low:g}, {limit:g}] {unit} "
                f"({setting} of the station)"
            )


class BiasedSweep(BiasField, Sweep):
    """A sweep taken with a fixed bias field across the probe, so the Larmor line is resolved."""

    def prepare(self) -> None:
        """Ramp the coils to the bias field."""
        self.apply_bias_field()


class FieldSweep(Sweep):
    """Spectra at field magnitudes along one direction: q, γ and R_SE from the SERF line."""

    NAME = "field_sweep"
    SUMMARY = "spectra against field magnitude; q and γ from Larmor vs field, R_SE from broadening"
    COLUMN = ("applied_field_nT", "nT")

    direction = BoundedVectorParameter(
        "field direction (normalised; the probe runs along z)", units="", minimum=-1.0,
        maximum=1.0, default=[1.0, 0.0, 0.0],
    )  # fmt: skip
    start_nT = FloatParameter(
        "first field magnitude", units="nT", minimum=0, maximum=1e5, default=100.0
    )
    stop_nT = FloatParameter(
        "last field magnitude", units="nT", minimum=0, maximum=1e5, default=3000.0
    )

    def _unit(self) -> np.ndarray:
        direction = np.asarray(self.direction, dtype=float)
        norm = float(np.linalg.norm(direction))
        if norm == 0.0:
            raise ParameterError("direction = [0, 0, 0] has no direction")
        return direction / norm

    def check_limits(self, station: Any) -> None:
        """Refuse field magnitudes the coils cannot reach within their current limit."""
        reach_nT = 1e9 * station.coils.max_field_T(self._unit())
        for name in ("start_nT", "stop_nT"):
            value = getattr(self, name)
            if value > reach_nT:
                raise ParameterError(
                    f"{name} = {value:g} is outside the allowed range [0, {reach_nT:.4g}] nT "
                    "(the coils' current limit along this direction)"
                )

    def settings(self) -> np.ndarray:
        """Return the field magnitudes in nT."""
        return np.linspace(self.start_nT, self.stop_nT, int(self.points))

    def apply(self, value: float) -> None:
        """Ramp the coils to the field."""
        self.station.coils.set_field(1e-9 * value * self._unit())

    def summarize(self, settings: np.ndarray, steps: Sequence[SpinNoiseStep]) -> None:
        """Fit γ, q and the rates from the SERF points (`analyse_field_sweep`); record them."""
        diffusion = derive(steps[0].apparatus).diffusion_rate
        try:
            sweep = analyse_field_sweep(1e-9 * settings, [s.fit for s in steps], diffusion)
        except ValueError as error:
            self.notes.append(f"field_sweep: no γ, q or rates from the sweep: {error}")
            return
        if sweep.problem:
            self.notes.append(f"field_sweep: no R_SE or R_SD′ from the broadening: {sweep.problem}")
        results, withheld = sweep_summary(sweep, [s.fit for s in steps])
        if withheld:
            self.notes.append(f"field_sweep: {withheld}")
        self.record_summary(results)


class TemperatureSweep(BiasedSweep):
    """Spectra at cell temperatures (densities): linewidth and R_SE against density."""

    NAME = "temperature_sweep"
    NEEDS_WARM_CELL = False  # it sets the cell's temperatures itself
    SUMMARY = "spectra against cell temperature; linewidth and R_SE against density"
    COLUMN = ("setpoint_K", "K")

    start_K = FloatParameter(
        "first temperature", units="K", minimum=290, maximum=700, default=420.0
    )
    stop_K = FloatParameter("last temperature", units="K", minimum=290, maximum=700, default=460.0)
    ramp_rate_K_per_min = FloatParameter(
        "setpoint ramp rate", units="K/min", minimum=0.1, maximum=100.0, default=10.0
    )
    tolerance_K = FloatParameter(
        "allowed distance from each temperature", units="K", minimum=0.01, maximum=10.0, default=0.2
    )
    dwell_s = FloatParameter(
        "time each temperature must hold", units="s", minimum=0.0, maximum=3600.0, default=30.0
    )
    sample_interval_s = FloatParameter(
        "time between temperature readings while settling",
        units="s",
        minimum=0.1,
        maximum=600.0,
        default=5.0,
    )
    timeout_s = FloatParameter(
        "give up on a temperature after", units="s", minimum=10.0, maximum=36000.0, default=3600.0
    )

    STATION_MAXIMA: ClassVar[dict[str, str]] = {
        "start_K": "heater.max_temperature_K",
        "stop_K": "heater.max_temperature_K",
    }

    def check_limits(self, station: Any) -> None:
        """Refuse temperatures above the station's maximum."""
        super().check_limits(station)
        limit = station.config.heater.max_temperature_K
        _refuse_above(self, ("start_K", "stop_K"), 290, limit, "K", "heater.max_temperature_K")

    def settings(self) -> np.ndarray:
        """Return the setpoints in K."""
        return np.linspace(self.start_K, self.stop_K, int(self.points))

    def apply(self, value: float) -> None:
        """Bring the cell to the temperature and let it settle (readings are not steps here)."""
        settle_temperature(
            self, value, self.ramp_rate_K_per_min, self.tolerance_K, self.dwell_s,
            self.sample_interval_s, self.timeout_s, record_readings=False,
        )  # fmt: skip

    def summarize(self, settings: np.ndarray, steps: Sequence[SpinNoiseStep]) -> None:
        """Fit R_SE against n v̄ (slope σ_SE) and record it."""
        temperatures = np.array([s.apparatus.temperature_K for s in steps])
        try:
            sweep = analyse_temperature_sweep(temperatures, [s.fit for s in steps])
        except ValueError as error:
            self.notes.append(f"temperature_sweep: no σ_SE: {error}")
            return
        self.record_summary(sweep.summary())


class ProbePowerSweep(BiasedSweep):
    """Spectra at laser currents (probe powers): spin-noise-to-shot-noise ratio against power."""

    NAME = "probe_power_sweep"
    SUMMARY = "spectra against laser current (probe power); SNR of the spin noise against power"
    COLUMN = ("laser_current_A", "A")

    start_A = FloatParameter(
        "first laser current", units="A", minimum=0.0, maximum=0.5, default=0.08
    )
    stop_A = FloatParameter("last laser current", units="A", minimum=0.0, maximum=0.5, default=0.15)

    def check_limits(self, station: Any) -> None:
        """Refuse currents above the station's laser limit."""
        super().check_limits(station)
        limit = station.config.laser.max_current_A
        _refuse_above(self, ("start_A", "stop_A"), 0, limit, "A", "laser.max_current_A")

    def settings(self) -> np.ndarray:
        """Return the laser currents in A."""
        return np.linspace(self.start_A, self.stop_A, int(self.points))

    def apply(self, value: float) -> None:
        """Set the laser current."""
        self.station.laser.current_A = value

    def summarize(self, settings: np.ndarray, steps: Sequence[SpinNoiseStep]) -> None:
        """Record the best spin-noise-to-shot-noise ratio and where it was."""
        _record_best_snr(self, settings, steps, "laser_current_A", "A")


class DetuningSweep(BiasedSweep):
    """Spectra at probe detunings (set with the laser piezo): SNR against detuning."""

    NAME = "detuning_sweep"
    SUMMARY = "spectra against probe detuning (laser piezo); SNR of the spin noise against it"
    COLUMN = ("detuning_GHz", "GHz")

    start_GHz = FloatParameter(
        "first detuning from the D1 F=2 line",
        units="GHz",
        minimum=-1000,
        maximum=1000,
        default=62.0,
    )
    stop_GHz = FloatParameter(
        "last detuning from the D1 F=2 line", units="GHz", minimum=-1000, maximum=1000, default=84.0
    )

    def _piezo_V(self, station: Any, detuning_GHz: float) -> float:
        # The calibration is linear in the piezo voltage: invert it at the present current.
        at_zero = self._detuning_GHz(station, 0.0)
        return 1e9 * (detuning_GHz - at_zero) / station.config.laser.piezo_tuning_Hz_per_V

    def check_limits(self, station: Any) -> None:
        """Refuse detunings the piezo cannot reach at the present laser current."""
        super().check_limits(station)
        low, high = station.laser.piezo_range_V
        reach = sorted((self._detuning_GHz(station, low), self._detuning_GHz(station, high)))
        for name in ("start_GHz", "stop_GHz"):
            if not low <= self._piezo_V(station, getattr(self, name)) <= high:
                raise ParameterError(
                    f"{name} = {getattr(self, name):g} is outside the allowed range "
                    f"[{reach[0]:.4g}, {reach[1]:.4g}] GHz (the laser piezo's range)"
                )

    def _detuning_GHz(self, station: Any, piezo_V: float) -> float:
        c = station.config.laser
        current = station.laser.current_A
        return 1e-9 * (
            c.reference_detuning_Hz
            + c.current_tuning_Hz_per_A * (current - c.reference_current_A)
            + c.piezo_tuning_Hz_per_V * piezo_V
        )

    def settings(self) -> np.ndarray:
        """Return the detunings in GHz."""
        return np.linspace(self.start_GHz, self.stop_GHz, int(self.points))

    def apply(self, value: float) -> None:
        """Set the piezo voltage that gives the detuning."""
        self.station.laser.piezo_voltage_V = self._piezo_V(self.station, value)

    def summarize(self, settings: np.ndarray, steps: Sequence[SpinNoiseStep]) -> None:
        """Record the best spin-noise-to-shot-noise ratio and where it was."""
        _record_best_snr(self, settings, steps, "detuning_GHz", "GHz")


def _record_best_snr(
    procedure: Sweep, settings: np.ndarray, steps: Sequence[SpinNoiseStep], name: str, unit: str
) -> None:
    """Record the largest spin-noise-to-shot-noise ratio of a sweep and its setting."""
    ratios = [step.spin_to_shot_noise for step in steps]
    best = int(np.nanargmax([r.value for r in ratios]))
    spacing = float(np.abs(np.diff(settings)).min()) if len(settings) > 1 else 0.0
    procedure.record_summary(
        {
            "best_spin_to_shot_noise": (ratios[best].value, ratios[best].uncertainty, ""),
            f"best_{name}": (float(settings[best]), spacing / 2, unit),
        }
    )
