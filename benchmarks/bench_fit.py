"""The spin-noise model fit of an 8193-bin spectrum: fast enough to refit at 10 Hz live?

The spectrum is the Welch estimate (Hann, 16 384-sample segments) of a simulated SERF record
(450 K, 500 nT, 5 mW at 60 GHz, 1 MS/s, 4 s). In the same run it times one evaluation of the
model on the fitted bins (the exact Welch expectation from the sampled autocovariance: the
unit every fit iteration is made of), the fit started from the apparatus's values (cold, as
`hotspin analyze` does) and the fit started from the previous fit's values (warm, as the live
monitor refits a spectrum that changed a little), each on fresh records, and prints the medians,
the fit/evaluation ratios and whether a refit fits in the 100 ms of a 10 Hz update.

Run: .venv/bin/python benchmarks/bench_fit.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import (
    ProbeGeometry,
    angle_autocovariance,
    fit_spin_noise,
    initial_values,
)
from hotspin.analysis.spectra import Spectrum, StreamingPSD
from hotspin.simulators.spin_noise import FastAngleNoise

APPARATUS = ApparatusParameters(
    temperature_K=450.0, field_T=(500e-9, 0.0, 0.0), probe_power_W=5e-3, probe_detuning_Hz=60e9
)
SAMPLE_RATE_HZ = 1e6
SEGMENT = 16_384
DURATION_S = 4.0
RECORDS = 15
EVALUATIONS = 200
REFIT_BUDGET_S = 0.1


def spectra() -> list[Spectrum]:
    """Return the Welch spectra of RECORDS independent simulated records."""
    d = derive(APPARATUS)
    angle = FastAngleNoise.from_derived(d, SAMPLE_RATE_HZ, seed=1)
    result = []
    for _ in range(RECORDS):
        psd = StreamingPSD(SEGMENT, SAMPLE_RATE_HZ)
        psd.add(angle.block(round(DURATION_S * SAMPLE_RATE_HZ)))
        result.append(psd.spectrum())
    return result


def main() -> None:
    """Time one model evaluation, cold fits and warm refits; print the figures."""
    d = derive(APPARATUS)
    geometry = ProbeGeometry.from_apparatus(d)
    records = spectra()
    bins = records[0].psd.size
    model = d.model

    def evaluate() -> np.ndarray:
        R = angle_autocovariance(
            model, d.coupling_upper_rad, d.coupling_lower_rad, SEGMENT, SAMPLE_RATE_HZ
        )
        return d.atom_number * records[0].expectation(R) + d.white_noise_psd_rad2_per_Hz

    evaluations = []
    for _ in range(EVALUATIONS):
        start = time.perf_counter()
        evaluate()
        evaluations.append(time.perf_counter() - start)
    cold, warm = [], []
    previous = initial_values(d)
    for spectrum in records:
        start = time.perf_counter()
        fit_spin_noise(spectrum, geometry, initial_values(d))
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        refit = fit_spin_noise(spectrum, geometry, previous)
        warm.append(time.perf_counter() - start)
        previous = {name: estimate.value for name, estimate in refit.parameters.items()}
    one = statistics.median(evaluations)
    print(
        f"spectrum of {bins} bins ({SEGMENT}-sample Hann segments, {DURATION_S:g} s at "
        f"{SAMPLE_RATE_HZ:.0e} S/s); {EVALUATIONS} evaluations, {RECORDS} fits each way, medians"
    )
    print(f"  one model evaluation:        {one * 1e3:6.2f} ms")
    for label, times in (("fit, cold start:", cold), ("refit, warm start:", warm)):
        median = statistics.median(times)
        print(
            f"  {label:<28} {median * 1e3:6.1f} ms  = {median / one:5.1f} evaluations  "
            f"(max {max(times) * 1e3:.1f} ms; 10 Hz budget {REFIT_BUDGET_S * 1e3:.0f} ms: "
            f"{'fits' if median < REFIT_BUDGET_S else 'too slow'})"
        )


if __name__ == "__main__":
    main()
