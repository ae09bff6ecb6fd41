"""The fit's model behind the detection chain: what one evaluation costs, and its exponentials.

Every spectrum procedure fits with the station's detection chain (the PDB450A's pole and the
Red Pitaya's boxcar), so each fit evaluation builds the exact sampled model of the seven transit
modes with their pole states (`detected_atoms`) and its autocovariance. In one run, interleaved
round by round (benchmarks/timing.py), on the SERF apparatus at decimation 1024 with averaging:

* the seven modes' exponentials e^{AT}, ∫e^{Aτ}, ∫(T − τ)e^{Aτ}: stacked in their eigenbases
  (`_mode_exponentials`, what the fit uses) against Van Loan's 21 × 21 matrix exponential one
  mode at a time (`_integrated_exponentials`, the fallback near an exceptional point);
* `detected_atoms` and its 8192-lag autocovariance, against the same for the ideal detector
  (`angle_autocovariance`, no chain), the cost a fit evaluation had before the chain;
* a whole fit of a 2 s simulated record behind the chain, in evaluations.

Run: .venv/bin/python benchmarks/bench_detection.py
"""

from __future__ import annotations

import numpy as np
from hotspin.analysis.detection import (
    DetectionChain,
    _integrated_exponentials,
    _mode_exponentials,
    detected_atoms,
    pole_drifts,
)
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.fits import (
    ProbeGeometry,
    angle_autocovariance,
    fit_spin_noise,
    initial_values,
)
from hotspin.analysis.spectra import StreamingPSD
from hotspin.simulators.spin_noise import DetectedAngleNoise
from threadpoolctl import threadpool_limits
from timing import median_times

APPARATUS = ApparatusParameters(
    temperature_K=450.0, field_T=(100e-9, 0, 0), probe_power_W=5e-3, probe_detuning_Hz=60e9
)
LAGS = 8192
ROUNDS = 200


def main() -> None:
    """Time the chain model's parts against their baselines; print medians and ratios."""
    d = derive(APPARATUS)
    chain = DetectionChain.pdb450a(1e5, 1024, True)
    c_a, c_b = d.coupling_upper_rad, d.coupling_lower_rad
    A, _, c = d.model.mode_blocks(c_a, c_b)
    T = 1 / chain.sample_rate_Hz
    stack = pole_drifts(A, np.tile(c, (len(A), 1)), chain)
    psd = StreamingPSD(LAGS, chain.sample_rate_Hz)
    psd.add(
        DetectedAngleNoise.from_derived(d, chain, seed=1).block(round(2 * chain.sample_rate_Hz))
    )
    spectrum, geometry = psd.spectrum(), ProbeGeometry.from_apparatus(d, chain)
    calls = {
        "exponentials, eigenbases stacked": lambda: _mode_exponentials(stack, T),
        "exponentials, Van Loan per mode": lambda: [_integrated_exponentials(a, T) for a in stack],
        "chain model + autocovariance": lambda: detected_atoms(
            d.model, c_a, c_b, chain
        ).autocovariance(LAGS),
        "ideal autocovariance (no chain)": lambda: angle_autocovariance(
            d.model, c_a, c_b, LAGS, chain.sample_rate_Hz
        ),
    }
    with threadpool_limits(limits=1, user_api="blas"):  # as the fits run
        times = median_times(calls, ROUNDS)
        fit = median_times(
            {"fit": lambda: fit_spin_noise(spectrum, geometry, initial_values(d))}, 9
        )
    print(
        f"SERF apparatus, {stack.shape[0]} transit modes, decimation 1024 with averaging; medians"
    )
    for name, seconds in times.items():
        print(f"  {name:<36} {seconds * 1e3:7.3f} ms")
    names = list(times)
    print(f"  exponentials: Van Loan / eigenbases = {times[names[1]] / times[names[0]]:.1f}")
    print(f"  chain evaluation / ideal evaluation = {times[names[2]] / times[names[3]]:.2f}")
    print(
        f"  a fit of a 2 s record: {fit['fit'] * 1e3:.1f} ms = "
        f"{fit['fit'] / times[names[2]]:.0f} chain evaluations"
    )


if __name__ == "__main__":
    main()
