"""The entanglement run (PHYSICS.md §6; Kong et al. 2020): field along [1,1,1], spin-noise fit,
Kalman filter of the continuous Faraday records, witness ξ², entangled atoms and their lifetime.

With B along [1,1,1] the precession brings every component of F = F⁽ᵃ⁾ + F⁽ᵇ⁾ under the probe,
so the record conditions all three. The spectrum's fit gives the model (A, Q, C and the shot
noise); the Riccati equation gives the conditional covariance and the witness ξ² = Σ Var_c(Fₖ)/(N b)
with uncertainties propagated from the fit, under the separable bound b = 1 + p_a = 13/8 of the
thermal hyperfine populations and under b = 1 (no assumption on them); the relaxation of the
covariance after the readout stops gives the lifetime τ_ent where ξ²(τ) reaches 1. The Kalman
filter run on fresh records must then have white innovations of the predicted variance, and its
τ-ahead forecasts errors of the variance the same relaxation predicts — the checks that the
model, and so ξ² and τ_ent, are the right ones. A witness that cannot be computed leaves the fit
recorded and names the failure in the notes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hotspin.analysis import constants as k
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.fits import SpinNoiseFit
from hotspin.analysis.qnd import (
    ContinuousReadout,
    KalmanFilter,
    WitnessResult,
    entanglement_witness,
    innovations_check,
    prediction_check,
)
from hotspin.instruments.redpitaya import BUFFER_SIZE, StreamGap
from hotspin.procedures.spectroscopy import DECIMATIONS, SpectrumProcedure
from hotspin.procedures.streaming import PolarimeterStream
from pymeasure.experiment import FloatParameter, IntegerParameter, ListParameter

DIAGONAL = np.ones(3) / math.sqrt(3.0)
# Delays of the τ-ahead prediction check, in units of the entanglement lifetime τ_ent.
PREDICTION_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)


class Entanglement(SpectrumProcedure):
    """Measurement-induced entanglement: ξ² and N_ent from the fitted model, checked by a filter."""

    NAME = "entanglement"
    SUMMARY = "field along [1,1,1]; spin-noise fit, Kalman filter, witness ξ² and entangled atoms"

    # Records long enough for the filter to settle on the SERF line (122 kS/s: 134 ms each).
    decimation = ListParameter(
        "digitiser decimation (sample rate 125 MHz / decimation)", choices=DECIMATIONS,
        default=1024,
    )  # fmt: skip
    field_nT = FloatParameter(
        "field magnitude along [1,1,1]", units="nT", minimum=1.0, maximum=10000.0, default=200.0
    )
    filter_records = IntegerParameter(
        "length of the stream run through the Kalman filter, in digitiser records of 16 384 "
        "samples", minimum=1, maximum=10000, default=10,
    )  # fmt: skip

    def check_limits(self, station: Any) -> None:
        """Refuse a field the coils cannot reach along [1,1,1]."""
        reach_nT = 1e9 * station.coils.max_field_T(DIAGONAL)
        if self.field_nT > reach_nT:
            raise ParameterError(
                f"field_nT = {self.field_nT:g} is outside the allowed range [1, {reach_nT:.4g}] "
                "nT (the coils' current limit along [1,1,1])"
            )

    def execute(self) -> None:
        """Field on the diagonal, spectrum and fit, witness and lifetime, filter and its checks."""
        self.station.coils.set_field(1e-9 * self.field_nT * DIAGONAL)
        step = self.measure_spectrum(progress=(0.0, 0.6))
        self.record_spin_noise(step, {"field_nT": (self.field_nT, "nT")})
        fit = step.fit
        atoms = fit.parameters["atom_number"]
        summary: dict[str, tuple[float, float, str]] = {
            "atom_number": (atoms.value, atoms.uncertainty, ""),
            "assumed_upper_population": (k.POPULATION_UPPER, 0.0, ""),
        }
        try:
            witness = entanglement_witness(fit)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            # The fit is recorded (its step is written); only what is derived from it failed.
            self.notes.append(
                f"entanglement: fit kept, witness failed: {type(error).__name__}: {error}"
            )
            summary["witness_failed"] = (1.0, 0.0, "")
            self.record_summary(summary)
            self.progress(1.0, "witness failed; the fit is recorded")
            return
        for name, (estimate, unit) in witness.quantities().items():
            summary[name] = (estimate.value, estimate.uncertainty, unit)
        # Written before the filter runs, so that a run stopped there keeps the witness.
        self.record_summary(summary)
        self.notes.append(f"entanglement: {witness.summary()}")
        self.record_summary(self.filter_records_check(fit, witness, step.spectrum.sample_rate_Hz))
        self.progress(1.0, witness.summary())

    def filter_records_check(
        self, fit: SpinNoiseFit, witness: WitnessResult, fitted_rate_Hz: float | None
    ) -> dict[str, tuple[float, float, str]]:
        """Run the Kalman filter on fresh records: innovations white with the predicted
        variance, and τ-ahead prediction errors with the variance of the covariance
        propagation that gives the lifetime (at delays through τ_ent and beyond)."""
        readout = ContinuousReadout.from_fit(fit)
        records, fs = self.filter_pieces()
        if fitted_rate_Hz is not None and not math.isclose(fs, fitted_rate_Hz, rel_tol=1e-9):
            raise RuntimeError(
                f"the filter's samples come at {fs:g} Hz, the fitted spectrum's at "
                f"{fitted_rate_Hz:g} Hz: the filter would model the wrong sampling"
            )
        try:
            kalman = KalmanFilter(readout, fs)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            # The witness from the fit is recorded already; only its check is missing, named.
            self.notes.append(
                f"entanglement: filter check not run: the Kalman filter of the fitted model "
                f"could not be built ({type(error).__name__}: {error})"
            )
            return {"filter_check_run": (0.0, 0.0, "")}
        # The polarimeter's balance leaves a constant rotation (the plate moves in steps);
        # the spin model has none, so it is taken out, pooled over every record.
        offset = float(np.mean(np.concatenate(records)))
        records = [record - offset for record in records]
        outputs = [kalman.run(record) for record in records]
        settled = [o.settle_samples < o.innovations.size for o in outputs]
        if not any(settled):
            # The witness from the fit is recorded already; only its check is missing, named.
            longest = max(o.innovations.size for o in outputs)
            self.notes.append(
                f"entanglement: filter check not run: the Kalman filter needs "
                f"{outputs[0].settle_samples} samples to settle, more than the longest gap-free "
                f"piece holds ({longest}); raise filter_records (or the decimation: a sample then "
                "spans more time)"
            )
            return {"filter_check_run": (0.0, 0.0, "")}
        records = [r for r, keep in zip(records, settled, strict=True) if keep]
        outputs = [o for o, keep in zip(outputs, settled, strict=True) if keep]
        innovations = [o.innovations[o.settle_samples :] for o in outputs]
        check = innovations_check(np.concatenate(innovations), kalman.innovation_variance)
        # Delays through the lifetime and beyond it (or, without entanglement, through the
        # slowest decay time of the model), in whole samples.
        reference_s = witness.lifetime.value
        if not reference_s > 0:
            slowest = float(np.min(-np.linalg.eigvals(readout.model.drift_matrix()).real))
            reference_s = 0.5 / slowest
        steps = sorted({max(1, round(m * reference_s * fs)) for m in PREDICTION_DELAYS})
        shortest = min(o.innovations.size - o.settle_samples for o in outputs)
        steps = [m for m in steps if m < shortest]
        predictions = []
        for m in steps:
            pairs = [
                kalman.prediction_errors(r, o, m) for r, o in zip(records, outputs, strict=True)
            ]
            predictions.append(prediction_check([e for e, _ in pairs], pairs[0][1], m / fs))
        # The predicted variances are only as good as the fitted model: their relative
        # uncertainties join the statistical ones in the consistency tests.
        _, model_sigma = fit.propagate(
            lambda values: _predicted_variances(ContinuousReadout.from_fit(fit, values), fs, steps)
        )
        model_error = model_sigma / np.array(
            [kalman.innovation_variance] + [p.predicted_variance for p in predictions]
        )
        spread = math.hypot(math.sqrt(2.0 / check.samples), model_error[0])
        consistent = (
            abs(check.normalised_variance - 1.0) < 3.0 * spread
            and check.autocorrelation_p_value > 0.01
        )
        results: dict[str, tuple[float, float, str]] = {
            "filter_check_run": (1.0, 0.0, ""),
            "innovations_normalised_variance": (check.normalised_variance, spread, ""),
            "innovations_whiteness_p_value": (check.autocorrelation_p_value, math.nan, ""),
            "innovations_consistent": (float(consistent), 0.0, ""),
            "polarimeter_offset_rad": (offset, math.nan, "rad"),
        }
        predictions_consistent = True
        for i, (prediction, error) in enumerate(zip(predictions, model_error[1:], strict=True)):
            uncertainty = math.hypot(prediction.uncertainty, error)
            results[f"prediction_{i}_delay_s"] = (prediction.delay_s, 0.0, "s")
            results[f"prediction_{i}_normalised_variance"] = (
                prediction.normalised_variance, uncertainty, ""
            )  # fmt: skip
            predictions_consistent &= abs(prediction.normalised_variance - 1.0) < 3 * uncertainty
        results["predictions_consistent"] = (float(predictions_consistent), 0.0, "")
        if not consistent:
            self.notes.append(
                "entanglement: the filter's innovations are not white with the predicted "
                f"variance (normalised variance {check.normalised_variance:.4f} ± {spread:.2g}, "
                f"whiteness p = {check.autocorrelation_p_value:.3g}): the fitted model does not "
                "describe the records; ξ² is not to be trusted"
            )
        if not predictions_consistent:
            self.notes.append(
                "entanglement: the filter's τ-ahead prediction errors do not have the variance "
                "of the covariance propagation: the lifetime τ_ent is not to be trusted"
            )
        return results

    def filter_pieces(self) -> tuple[list[np.ndarray], float]:
        """Return the rotation angle of ``filter_records`` × 16 384 samples for the filter, in
        gap-free pieces, and their sample rate: one continuous stream at the run's decimation
        (the filter settles once, not in every record), or triggered records at it where no
        reader can follow the stream (a fast simulated clock)."""
        polarimeter = self.station.polarimeter
        total = int(self.filter_records) * BUFFER_SIZE
        pieces: list[np.ndarray] = []
        if self._triggered:
            polarimeter.set_decimation(int(self.decimation))
            for k_record in range(int(self.filter_records)):
                self.check_stop()
                pieces.append(polarimeter.rotation_angle_rad(polarimeter.acquire()))
                self.progress(
                    0.6 + 0.4 * (k_record + 1) / int(self.filter_records), "Kalman filter"
                )
            return pieces, polarimeter.sample_rate_Hz
        piece: list[np.ndarray] = []
        with PolarimeterStream(self, int(self.decimation), total) as stream:
            sample_rate_Hz = stream.sample_rate_Hz
            for item in stream:
                self.check_stop()
                if isinstance(item, StreamGap):
                    if piece:
                        pieces.append(np.concatenate(piece))
                    piece = []
                    continue
                piece.append(polarimeter.rotation_angle_rad(stream.record(item)))
                self.progress(0.6 + 0.4 * item.end_index / total, "Kalman filter")
        if piece:
            pieces.append(np.concatenate(piece))
        if not pieces:  # lapped at once: a served simulated lab on a clock faster than the wall
            self.notes.append(
                f"{self.NAME}: the digitiser's stream delivered none of its {total} samples "
                "(overrun): the filter runs on triggered records"
            )
            self._triggered = True
            return self.filter_pieces()
        return pieces, sample_rate_Hz


def _predicted_variances(readout: ContinuousReadout, fs: float, steps: list[int]) -> np.ndarray:
    """Return the innovation variance and the m-ahead prediction variances of a readout, rad²."""
    kalman = KalmanFilter(readout, fs)
    return np.array([kalman.innovation_variance] + [kalman.prediction_variance(m) for m in steps])
