"""The entanglement run (PHYSICS.md §6; Kong et al. 2020): field along [1,1,1], spin-noise fit,
Kalman filter of the continuous Faraday records, witness ξ² and the number of entangled atoms.

With B along [1,1,1] the precession brings every component of F = F⁽ᵃ⁾ + F⁽ᵇ⁾ under the probe,
so the record conditions all three. The spectrum's fit gives the model (A, Q, C and the shot
noise); the Riccati equation gives the conditional covariance and the witness ξ² = Σ Var_c(Fₖ)/(N b)
with uncertainties propagated from the fit; the Kalman filter run on fresh records must then
have white innovations of the predicted variance — the check that the model is the right one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hotspin.analysis.checks import ParameterError
from hotspin.analysis.qnd import (
    ContinuousReadout,
    KalmanFilter,
    entanglement_witness,
    innovations_check,
)
from hotspin.procedures.spectroscopy import DECIMATIONS, SpectrumProcedure
from pymeasure.experiment import FloatParameter, IntegerParameter, ListParameter

DIAGONAL = np.ones(3) / math.sqrt(3.0)


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
        "digitiser records run through the Kalman filter", minimum=1, maximum=10000, default=10
    )

    def check_limits(self, station: Any) -> None:
        """Refuse a field the coils cannot reach along [1,1,1]."""
        reach_nT = 1e9 * station.coils.max_field_T(DIAGONAL)
        if self.field_nT > reach_nT:
            raise ParameterError(
                f"field_nT = {self.field_nT:g} is outside the allowed range [1, {reach_nT:.4g}] "
                "nT (the coils' current limit along [1,1,1])"
            )

    def execute(self) -> None:
        """Field on the diagonal, spectrum and fit, witness, filter and innovations check."""
        self.station.coils.set_field(1e-9 * self.field_nT * DIAGONAL)
        step = self.measure_spectrum(progress=(0.0, 0.6))
        self.record_spin_noise(step, {"field_nT": (self.field_nT, "nT")})
        fit = step.fit
        witness = entanglement_witness(fit)
        readout = ContinuousReadout.from_fit(fit)
        polarimeter = self.station.polarimeter
        fs = polarimeter.sample_rate_Hz
        kalman = KalmanFilter(readout, fs)
        records = []
        for k in range(int(self.filter_records)):
            self.check_stop()
            records.append(polarimeter.rotation_angle_rad(polarimeter.acquire()))
            self.progress(0.6 + 0.4 * (k + 1) / int(self.filter_records), "Kalman filter")
        # The polarimeter's balance leaves a constant rotation (the plate moves in steps);
        # the spin model has none, so it is taken out, pooled over every record.
        offset = float(np.mean(np.concatenate(records)))
        innovations = []
        for record in records:
            output = kalman.run(record - offset)
            if output.settle_samples >= output.innovations.size:
                raise RuntimeError(
                    f"the Kalman filter needs {output.settle_samples} samples to settle, more than "
                    f"a record holds ({output.innovations.size}); raise the decimation (a record "
                    "then spans more time)"
                )
            innovations.append(output.innovations[output.settle_samples :])
        check = innovations_check(np.concatenate(innovations), kalman.innovation_variance)
        # The predicted innovation variance is only as good as the fitted model: its relative
        # uncertainty joins the statistical one in the consistency test.
        _, variance_sigma = fit.propagate(
            lambda values: (
                KalmanFilter(ContinuousReadout.from_fit(fit, values), fs).innovation_variance
            )
        )
        model_error = float(variance_sigma[0]) / kalman.innovation_variance
        spread = math.hypot(math.sqrt(2.0 / check.samples), model_error)
        consistent = (
            abs(check.normalised_variance - 1.0) < 3.0 * spread
            and check.autocorrelation_p_value > 0.01
        )
        xi2, entangled = witness.squeezing_parameter, witness.entangled_atoms
        self.record_summary(
            {
                "squeezing_parameter": (xi2.value, xi2.uncertainty, ""),
                "entangled_atoms": (entangled.value, entangled.uncertainty, ""),
                "atom_number": (
                    fit.parameters["atom_number"].value,
                    fit.parameters["atom_number"].uncertainty,
                    "",
                ),
                "separable_bound_per_atom": (witness.bound, 0.0, ""),
                "entanglement_witnessed": (float(witness.entangled), 0.0, ""),
                "innovations_normalised_variance": (check.normalised_variance, spread, ""),
                "innovations_whiteness_p_value": (check.autocorrelation_p_value, math.nan, ""),
                "innovations_consistent": (float(consistent), 0.0, ""),
                "polarimeter_offset_rad": (offset, math.nan, "rad"),
            }
        )  # fmt: skip
        if not consistent:
            self.notes.append(
                "entanglement: the filter's innovations are not white with the predicted "
                f"variance (normalised variance {check.normalised_variance:.4f} ± {spread:.2g}, "
                f"whiteness p = {check.autocorrelation_p_value:.3g}): the fitted model does not "
                "describe the records; ξ² is not to be trusted"
            )
        self.notes.append(f"entanglement: {witness.summary()}")
        self.progress(1.0, witness.summary())
