"""What every spin-noise procedure does: average Welch segments of the digitiser's continuous
stream into a calibrated spectrum, fit the two-manifold model to it, and record the spectrum and
the fit as one step.

The stream (`procedures.streaming`, the deep-memory ring read behind its write pointer) is
turned block by block into the rotation angle θ(t) = ½ arcsin[(V_diff/G_d)/(V_sum/G_s)] and
added to a streaming Welch estimate: every sample goes into a segment, and a segment ends only
where the stream has a gap (or a block the digitiser clipped, which is left out). `averages` is
the number of segments; the stream is read until they are complete, no further. Triggered
records (each its own run of segments) stand in where no reader can follow the stream: a
simulated lab on a clock faster than the wall, or a stream lapped by a whole ring before its
first block or that lost more than 20 times the samples the segments need (a served simulated
lab on a fast clock, a slow link); the rest of that run then takes records too. The running
average is checkpointed into the run file as it grows (`running_spectrum`), so a killed long
average keeps what was flushed. Triggered 16 384-sample records remain where the trigger is the
point: the entanglement run's filter records and the live monitor's frames.

The fit compares the model with the exact expectation of that estimate (window leakage and
aliasing included) behind the detection chain — the PDB450A's pole at its gain and the Red
Pitaya's decimation with or without averaging (`detection_chain`) — so the spectrum is recorded
with its window, standard errors and chain (`spectra/psd` attributes) and `hotspin analyze`
can redo the same fit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.detection import DetectionChain
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
from hotspin.instruments.polarimeter import PolarimeterRecord
from hotspin.instruments.redpitaya import StreamGap
from hotspin.procedures.analyze import (
    FIELD_COLUMNS,
    detection_attributes,
    probe_power_into_cell_W,
    welch_attributes,
)
from hotspin.procedures.base import HotspinProcedure
from hotspin.procedures.parameters import BoundedVectorParameter
from hotspin.procedures.streaming import PolarimeterStream
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
    return station.apparatus(probe_power_W=probe_power_into_cell_W(known, detected_power_W))


@dataclass(frozen=True)
class SpinNoiseStep:
    """One averaged spectrum, the apparatus it was taken with, and the model fitted to it."""

    spectrum: Spectrum
    apparatus: ApparatusParameters
    fit: SpinNoiseFit  # with the A/f term when the flicker test asked for it
    detected_power_W: float
    clipped_blocks: int  # stream blocks refused because the digitiser clipped
    flicker_test: FlickerTest
    shot_noise_psd_rad2_per_Hz: float  # of the white floor, from the detected power
    detection: DetectionChain | None = None  # the chain the fit modelled (None: ideal samples)
    lost_samples: int = 0  # of the stream, in gaps between the runs of segments

    @property
    def spin_to_shot_noise(self) -> Estimate:
        """Return the atomic PSD at the Larmor line over the white floor."""
        return spin_noise_to_shot_noise(self.fit)


#: Below about 100 °C the vapour (n < 6e12 cm⁻³) gives a spin noise far under the probe's shot
#: noise: no spectrum procedure can fit a line there.
MIN_SPECTRUM_TEMPERATURE_K = 373.15
#: A spectrum gives up when its segments are not done after this many times the samples they
#: need (a ring overrun on every block, say): the stream never ends by itself.
MAX_STREAM_FACTOR = 20
#: Clipped (or otherwise unusable) blocks a spectrum tolerates, each left out and named, before
#: it gives up.
MAX_CLIPPED_BLOCKS = 8
#: Samples of the readiness probe: enough for a mean of V_diff and V_sum, far less than a record.
READINESS_SAMPLES = 1024


class SpectrumProcedure(HotspinProcedure):
    """A procedure that takes spin-noise spectra: averaging, digitiser rate, Welch segments."""

    WATCHES = ("temperature", "interlock")
    #: Set when a stream of this run was overrun: its later spectra take triggered records.
    _stream_overrun = False
    #: Whether the run needs the cell warm before it starts (a temperature sweep heats it).
    NEEDS_WARM_CELL = True

    averages = IntegerParameter(
        "Welch segments averaged per spectrum (from one continuous stream; 50 % overlap)",
        minimum=1, maximum=100000, default=20,
    )  # fmt: skip
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
        """Average ``averages`` Welch segments of the stream into a spectrum, fit the model
        behind the station's detection chain, and return both (not recorded).

        Every sample of the stream goes into a segment, but no segment spans a gap or a clipped
        block (either ends the run of segments); the samples read are exactly those the
        segments need. ``progress`` is the fraction of the run done before and after it.
        """
        polarimeter = self.station.polarimeter
        self.ensure_probe_light()
        wanted = int(self.averages)
        psd: StreamingPSD | None = None
        power_sum, seen, clipped, lost = 0.0, 0, 0, 0
        unusable: list[str] = []  # why each block that gave no angle gave none
        clock = self.station.clock
        speed = getattr(clock, "speed", 1.0)
        # A simulated lab on a clock faster than the wall (not manual) writes its ring faster
        # than any reader follows: there the samples come as triggered records from the start.
        fast = speed > 1.0 and not getattr(clock, "manual", True)
        self._triggered = fast or self._stream_overrun
        if fast:
            self.notes.append(
                f"{self.NAME}: the simulated clock runs {speed:g} times faster than the wall, "
                "faster than any reader of the stream: spectra from triggered records"
            )
        while psd is None or psd.segments < wanted:
            with contextlib.closing(self._pieces(int(self.decimation))) as pieces:
                for piece in pieces:
                    self.check_stop()
                    if self._paused():  # what is in hand was taken while something was wrong:
                        if psd is not None:  # a new stream (or record) from now on
                            psd.end_record()
                        break
                    if psd is None:
                        fs = self._sample_rate_Hz
                        psd = StreamingPSD(
                            int(self.segment_length), fs, window=WINDOW, overlap=OVERLAP
                        )
                        budget = MAX_STREAM_FACTOR * psd.samples_for(wanted)
                    overrun = seen > budget or (  # lapped by a whole ring before any block
                        isinstance(piece, StreamGap) and piece.length >= self._ring_samples
                        and psd.samples == 0
                    )  # fmt: skip
                    if overrun and not self._triggered:
                        # The board writes faster than this client reads (a served simulated
                        # lab on a fast clock, a slow link): triggered records instead.
                        gap = piece.length if isinstance(piece, StreamGap) else 0
                        self.notes.append(
                            f"{self.NAME}: the digitiser's stream was overrun ({lost + gap} "
                            f"samples lost before {wanted} segments were complete): spectra "
                            "from triggered records for the rest of the run"
                        )
                        self._triggered = self._stream_overrun = True  # for the whole run
                        psd = None
                        power_sum, seen, clipped, lost = 0.0, 0, 0, 0
                        break
                    if seen > budget:
                        raise RuntimeError(
                            f"the digitiser gave {psd.segments} of {wanted} segments in {seen} "
                            f"samples ({lost} lost in gaps, {clipped} blocks clipped): its ring is "
                            "overrun or the polarimeter clips"
                        )
                    if isinstance(piece, StreamGap):
                        psd.end_record()  # no segment spans a gap
                        lost += piece.length
                        seen += piece.length
                        continue
                    seen += piece.v_sum.size
                    if piece.clipped:  # refused whole: a clipped sample is no angle
                        psd.end_record()
                        clipped += 1
                        if clipped > MAX_CLIPPED_BLOCKS:
                            raise RuntimeError(
                                f"the digitiser clipped {clipped} blocks: the polarimeter is far "
                                "from balance (run 'balance') or the PDB450A gain is too high"
                            )
                        continue
                    try:
                        theta = polarimeter.rotation_angle_rad(piece)
                    except ValueError as error:  # no light (say), briefly: left out like a clip
                        psd.end_record()
                        unusable.append(str(error))
                        if len(unusable) > MAX_CLIPPED_BLOCKS:
                            raise ValueError(
                                f"{len(unusable)} blocks of the digitiser unusable: {error}"
                            ) from error
                        continue
                    used = 0
                    while used < theta.size and psd.segments < wanted:
                        take = min(psd.samples_for(1), theta.size - used)
                        psd.add(theta[used : used + take])
                        used += take
                        if not psd.segments:
                            continue
                        if self.run is not None and self.run.checkpoint_due():  # a kill keeps it
                            self.run.checkpoint_average(
                                psd.frequency_Hz, psd.mean(), psd.segments, psd.segments
                            )
                        done = progress[0] + (progress[1] - progress[0]) * psd.segments / wanted
                        self.progress(done, f"spectrum: segment {psd.segments} of {wanted}")
                    power_sum += float(np.sum(piece.v_sum[:used]))
                    if psd.segments >= wanted:
                        break
        assert psd is not None  # the pieces never end before the segments are complete
        if clipped:
            self.notes.append(f"{self.NAME}: {clipped} clipped blocks were left out of a spectrum")
        if unusable:
            self.notes.append(
                f"{self.NAME}: {len(unusable)} blocks gave no angle and were left out "
                f"({unusable[0]})"
            )
        if lost:
            self.notes.append(
                f"{self.NAME}: {lost} samples lost in gaps of the stream; no segment spans one"
            )
        spectrum = psd.spectrum()
        config = polarimeter.config
        detected = power_sum / psd.samples / (config.gain_sum_V_per_A * config.responsivity_A_per_W)
        apparatus = self.apparatus_for(detected)
        derived = derive(apparatus)
        chain = self.detection_chain()
        fit, flicker_test = fit_spin_noise_testing_flicker(
            spectrum, ProbeGeometry.from_apparatus(derived, chain), initial_values(derived)
        )
        return SpinNoiseStep(
            spectrum,
            apparatus,
            fit,
            detected,
            clipped,
            flicker_test,
            derived.shot_noise_psd_rad2_per_Hz,
            chain,
            lost,
        )

    def _paused(self) -> bool:
        """Return whether a watched condition was wrong, after pausing until it is right."""
        if not self._problems():
            return False
        self.watch()
        return True

    def _pieces(self, decimation: int) -> Iterator[PolarimeterRecord | StreamGap]:
        """Yield the digitiser's samples in order: blocks of the continuous stream and its gaps,
        or (``_triggered``) triggered records, each followed by a gap (they are not contiguous).
        """
        if self._triggered:
            polarimeter = self.station.polarimeter
            polarimeter.set_decimation(decimation)
            self._sample_rate_Hz = polarimeter.sample_rate_Hz
            self._ring_samples = math.inf  # records: no ring to be lapped in
            while True:
                self.watch()  # before the record, as it is taken at once
                yield polarimeter.acquire()
                yield StreamGap(0, 0)
        with PolarimeterStream(self, decimation) as stream:
            self._sample_rate_Hz = stream.sample_rate_Hz
            self._ring_samples = stream.ring_samples
            for item in stream:
                yield item if isinstance(item, StreamGap) else stream.record(item)

    def detection_chain(self) -> DetectionChain | None:
        """Return the detector's pole and the digitiser's decimation and averaging, as set.

        The gain is the polarimeter's station setting (the PDB450A has no remote interface),
        the averaging the digitiser's ``ACQ:AVG?``; another detector has no known chain (None,
        named in the notes: the fit then takes the samples as ideal).
        """
        polarimeter = self.station.polarimeter
        config = polarimeter.config
        if config.detector != "PDB450A":
            self.notes.append(
                f"{self.NAME}: no detection chain known for detector {config.detector!r}: "
                "fitted as ideal instantaneous samples"
            )
            return None
        averaging = bool(polarimeter.digitiser.call(lambda board: board.acq_averaging))
        return DetectionChain.pdb450a(config.gain_diff_V_per_A, int(self.decimation), averaging)

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
        results["clipped_blocks"] = (float(step.clipped_blocks), "")
        results["samples_used"] = (float(step.spectrum.samples), "samples")  # in the segments
        results["samples_lost"] = (float(step.lost_samples), "samples")  # in the stream's gaps
        spectrum = step.spectrum
        model = np.full(spectrum.psd.shape, np.nan)
        model[np.isin(spectrum.frequency_Hz, fit.frequency_Hz)] = fit.predicted
        self.record_step(
            results,
            spectrum=(spectrum.frequency_Hz, spectrum.psd),
            standard_error=spectrum.standard_error,
            spectrum_attributes=dict(
                welch_attributes(spectrum, WINDOW),
                overlap=OVERLAP,
                **detection_attributes(step.detection),
            ),
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
