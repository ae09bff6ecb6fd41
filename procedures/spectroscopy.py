"""What every spin-noise procedure does: average digitiser records into a calibrated spectrum,
fit the two-manifold model to it, and record the spectrum and the fit as one step.

Each digitiser record is turned into the rotation angle θ(t) = ½ arcsin[(V_diff/G_d)/(V_sum/G_s)]
and added to a streaming Welch estimate; records are not contiguous in time, so no Welch segment
spans two of them. The fit compares the model with the exact expectation of that estimate
(window leakage and aliasing included), so the spectrum is recorded with its window and
standard errors (`spectra/psd`, `spectra/psd_standard_error`) and `hotspin analyze` can redo it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import (
    Estimate,
    FlickerTest,
    ProbeGeometry,
    SpinNoiseFit,
    fit_spin_noise_testing_flicker,
    initial_values,
    split_white_floor,
)
from hotspin.analysis.magnetometry import spin_noise_to_shot_noise
from hotspin.analysis.spectra import Spectrum, StreamingPSD
from hotspin.instruments.errors import InstrumentError
from hotspin.procedures.analyze import FIELD_COLUMNS, welch_attributes
from hotspin.procedures.base import HotspinProcedure
from hotspin.procedures.parameters import BoundedVectorParameter
from pymeasure.experiment import IntegerParameter, ListParameter

WINDOW = "hann"
OVERLAP = 0.5
DECIMATIONS = [2**k for k in range(3, 14)]  # 15.6 MS/s … 15.3 kS/s
SEGMENT_LENGTHS = [2**k for k in range(10, 15)]  # 1024 … 16384 (one digitiser buffer)
APPARATUS_COLUMNS = {
    "temperature_K": "K",
    "probe_power_W": "W",
    "probe_detuning_Hz": "Hz",
}


def apparatus_with_probe_power(station: Any, detected_power_W: float) -> ApparatusParameters:
    """Return the station's apparatus now, with the probe power into the cell inferred from the
    power on the detector (divided by the cell's and the optics' transmission).

    Shared by the spectrum procedures and the live monitor's fit.
    """
    known = station.apparatus()
    transmission = derive(known).cell_transmission * known.optics_transmission
    return station.apparatus(probe_power_W=min(detected_power_W / transmission, 1.0))


@dataclass(frozen=True)
class SpinNoiseStep:
    """One averaged spectrum, the apparatus it was taken with, and the model fitted to it."""

    spectrum: Spectrum
    apparatus: ApparatusParameters
    fit: SpinNoiseFit  # with the A/f term when the flicker test asked for it
    detected_power_W: float
    clipped_records: int
    flicker_test: FlickerTest
    shot_noise_psd_rad2_per_Hz: float  # of the white floor, from the detected power

    @property
    def spin_to_shot_noise(self) -> Estimate:
        """Return the atomic PSD at the Larmor line over the white floor."""
        return spin_noise_to_shot_noise(self.fit)


#: Below about 100 °C the vapour (n < 6e12 cm⁻³) gives a spin noise far under the probe's shot
#: noise: no spectrum procedure can fit a line there.
MIN_SPECTRUM_TEMPERATURE_K = 373.15
#: Samples of the readiness probe: enough for a mean of V_diff and V_sum, far less than a record.
READINESS_SAMPLES = 1024


class SpectrumProcedure(HotspinProcedure):
    """A procedure that takes spin-noise spectra: averaging, digitiser rate, Welch segments."""

    WATCHES = ("temperature", "interlock")
    #: Whether the run needs the cell warm before it starts (a temperature sweep heats it).
    NEEDS_WARM_CELL = True

    averages = IntegerParameter(
        "digitiser records averaged per spectrum", minimum=1, maximum=100000, default=20
    )
    decimation = ListParameter(
        "digitiser decimation (sample rate 125 MHz / decimation)", choices=DECIMATIONS,
        default=256,
    )  # fmt: skip
    segment_length = ListParameter(
        "Welch segment length in samples", choices=SEGMENT_LENGTHS, default=8192
    )

    def check_ready(self, station: Any) -> None:
        """Refuse a cold cell (run warmup) or a polarimeter that clips (run balance)."""
        if self.NEEDS_WARM_CELL:
            temperature = station.heater.temperature_K
            if temperature < MIN_SPECTRUM_TEMPERATURE_K:
                raise ParameterError(
                    f"cell at {temperature:.0f} K, below the {MIN_SPECTRUM_TEMPERATURE_K:.0f} K "
                    f"a spin-noise spectrum needs: run `hotspin run warmup` first"
                )
        self.ensure_probe_light()  # as the run would, so that one short record shows the balance
        try:
            record = (
                station.polarimeter.acquire(READINESS_SAMPLES) if station.laser.emitting else None
            )
        except InstrumentError:  # a failing instrument is the run's to record, not a refusal
            record = None
        if record is not None and record.clipped:
            raise ParameterError(
                f"the polarimeter clips at the plate's present angle "
                f"({station.polarimeter.plate_angle_deg:.2f}°; V_diff/V_sum far from 0): "
                f"run `hotspin run balance` first"
            )

    def measure_spectrum(self, progress: tuple[float, float] = (0.0, 1.0)) -> SpinNoiseStep:
        """Average the records into a spectrum, fit the model, and return both (not recorded).

        ``progress`` is the fraction of the run done before and after this spectrum.
        """
        polarimeter = self.station.polarimeter
        self.ensure_probe_light()
        polarimeter.set_decimation(int(self.decimation))
        fs = polarimeter.sample_rate_Hz
        psd = StreamingPSD(int(self.segment_length), fs, window=WINDOW, overlap=OVERLAP)
        powers, clipped = [], 0
        for k in range(int(self.averages)):
            self.check_stop()
            self.watch()
            record = polarimeter.acquire()
            if record.clipped:
                clipped += 1  # a few are tolerated (and flagged); most of them end the run
            psd.add(polarimeter.rotation_angle_rad(record))
            psd.end_record()
            powers.append(polarimeter.detected_power_W(record))
            if self.run is not None and self.run.checkpoint_due():  # a kill keeps the average
                self.run.checkpoint_average(psd.frequency_Hz, psd.mean(), k + 1, psd.segments)
            done = progress[0] + (progress[1] - progress[0]) * (k + 1) / int(self.averages)
            self.progress(done, f"spectrum: record {k + 1} of {int(self.averages)}")
        if clipped > int(self.averages) // 2:
            raise RuntimeError(
                f"the digitiser clipped {clipped} of {int(self.averages)} records: the "
                "polarimeter is far from balance (run 'balance') or the PDB450A gain is too high"
            )
        spectrum = replace(psd.spectrum(), clipped_samples=psd.clipped_samples)
        detected = float(np.mean(powers))
        apparatus = self.apparatus_for(detected)
        derived = derive(apparatus)
        fit, flicker_test = fit_spin_noise_testing_flicker(
            spectrum, ProbeGeometry.from_apparatus(derived), initial_values(derived)
        )
        return SpinNoiseStep(
            spectrum,
            apparatus,
            fit,
            detected,
            clipped,
            flicker_test,
            derived.shot_noise_psd_rad2_per_Hz,
        )

    def apparatus_for(self, detected_power_W: float) -> ApparatusParameters:
        """Return the apparatus now, with the probe power into the cell inferred from the
        power on the detector (divided by the cell's and the optics' transmission)."""
        return apparatus_with_probe_power(self.station, detected_power_W)

    def record_spin_noise(
        self, step: SpinNoiseStep, extra: dict[str, tuple[float, str]] | None = None
    ) -> None:
        """Write the step: its spectrum with standard errors and every fitted quantity."""
        fit = step.fit
        results: dict[str, tuple[float, str]] = dict(extra or {})
        for name, unit in APPARATUS_COLUMNS.items():
            results[name] = (float(getattr(step.apparatus, name)), unit)
        for axis, component in zip(FIELD_COLUMNS, step.apparatus.field_T, strict=True):
            results[axis] = (1e9 * component, "nT")  # the coils' field, as set
        # atom_number is N of the beam-weighted mode (n π w² L), flicker_coefficient is NaN when
        # the likelihood-ratio test did not ask for the A/f term.
        estimates = dict(fit.parameters)
        estimates.setdefault("flicker_coefficient", Estimate(np.nan, np.nan, "rad^2"))
        unknown = Estimate(np.nan, np.nan, "rad^2/Hz")  # no light on the detector: no split
        shot, electronic = (
            split_white_floor(fit, step.shot_noise_psd_rad2_per_Hz)
            if np.isfinite(step.shot_noise_psd_rad2_per_Hz)
            else (unknown, unknown)
        )
        estimates.update(shot_noise_psd=shot, electronic_noise_psd=electronic)
        for name, estimate in estimates.items():
            results[name] = (estimate.value, estimate.unit)
            results[f"{name}_uncertainty"] = (estimate.uncertainty, estimate.unit)
        results["flicker_lr_statistic"] = (step.flicker_test.statistic, "")
        results["flicker_p_value"] = (step.flicker_test.p_value, "")
        results["flicker_selected"] = (float(step.flicker_test.selected), "")
        for name, estimate in (
            ("larmor_frequency_Hz", fit.larmor_frequency_Hz),
            ("linewidth_hwhm_Hz", fit.linewidth_hwhm_Hz),
        ):
            results[name] = (estimate.value, "Hz")
            results[f"{name}_uncertainty"] = (estimate.uncertainty, "Hz")
        snr = step.spin_to_shot_noise
        results["spin_to_shot_noise"] = (snr.value, "")
        results["spin_to_shot_noise_uncertainty"] = (snr.uncertainty, "")
        results["reduced_chi2"] = (fit.reduced_chi2, "")
        results["p_value"] = (fit.p_value, "")
        results["detected_power_W"] = (step.detected_power_W, "W")
        results["clipped_records"] = (float(step.clipped_records), "")
        spectrum = step.spectrum
        model = np.full(spectrum.psd.shape, np.nan)
        model[np.isin(spectrum.frequency_Hz, fit.frequency_Hz)] = fit.predicted
        self.record_step(
            results,
            spectrum=(spectrum.frequency_Hz, spectrum.psd),
            standard_error=spectrum.standard_error,
            spectrum_attributes=dict(welch_attributes(spectrum, WINDOW), overlap=OVERLAP),
            model=model,
        )
        if fit.flags:
            self.notes.extend(f"{self.NAME}: {flag}" for flag in fit.flags)


class BiasField(HotspinProcedure):
    """Mixin: a bias field set before the measurement, so the Larmor line is resolved."""

    bias_field_nT = BoundedVectorParameter(
        "bias field (the probe runs along z)", units="nT", minimum=-1e4, maximum=1e4,
        default=[300.0, 0.0, 0.0],
    )  # fmt: skip

    def check_limits(self, station: Any) -> None:
        """Refuse a bias field the coils cannot reach."""
        super().check_limits(station)
        field = 1e-9 * np.asarray(self.bias_field_nT, dtype=float)
        if np.any(field) and np.linalg.norm(field) > station.coils.max_field_T(field):
            reach = 1e9 * station.coils.max_field_T(field)
            raise ParameterError(
                f"bias_field_nT = {list(self.bias_field_nT)} is outside the coils' reach "
                f"({reach:.4g} nT along that direction, coils.max_current_A)"
            )

    def apply_bias_field(self) -> None:
        """Ramp the coils to the bias field."""
        self.station.coils.set_field(1e-9 * np.asarray(self.bias_field_nT, dtype=float))
