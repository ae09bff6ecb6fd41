"""Throughput of the simulated polarimeter signal, beside numpy's Gaussian generator (issue 2).

The fast path (`FastAngleNoise`, the exact innovations form) draws one Gaussian per sample and
turns the observed angle into the detector's difference voltage. It is timed over ≥ 10⁸ samples
in blocks, and compared with `Generator.standard_normal` timed in the same run: the ratio to the
rate the Gaussian generator allows for one Gaussian per sample is the figure of merit. The exact
full-state path (seven Gaussians per sample) is printed for reference. Peak traced memory shows
that the record is streamed, not held.

Run: .venv/bin/python benchmarks/bench_spin_noise.py
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.simulators.polarimeter_optics import BalancedPolarimeter, PolarimeterConfig
from hotspin.simulators.spin_noise import ExactSpinNoise, FastAngleNoise

BLOCK = 1 << 20
TOTAL = 100 * BLOCK  # 1.05 × 10⁸ samples
SAMPLE_RATE_HZ = 2e6


def gaussian_rate(rng: np.random.Generator, blocks: int) -> float:
    """Return numpy's standard_normal throughput in samples/s over ``blocks`` blocks."""
    start = time.perf_counter()
    for _ in range(blocks):
        rng.standard_normal(BLOCK)
    return blocks * BLOCK / (time.perf_counter() - start)


def polarimeter_rate(blocks: int) -> tuple[float, int]:
    """Return (samples/s, peak traced bytes) of angle → V_diff over ``blocks`` blocks."""
    derived = derive(ApparatusParameters())
    source = FastAngleNoise.from_derived(derived, SAMPLE_RATE_HZ, seed=1)
    detector = BalancedPolarimeter(PolarimeterConfig())
    power = derived.detected_power_W
    detector.difference_voltage_at_balance(source.block(BLOCK), power)  # warm up
    tracemalloc.start()
    start = time.perf_counter()
    for _ in range(blocks):
        detector.difference_voltage_at_balance(source.block(BLOCK), power)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return blocks * BLOCK / elapsed, peak


def exact_rate(blocks: int) -> float:
    """Return the full-state generator's samples/s (state, angle and white noise)."""
    derived = derive(ApparatusParameters())
    source = ExactSpinNoise.from_derived(derived, SAMPLE_RATE_HZ, seed=2)
    start = time.perf_counter()
    for _ in range(blocks):
        source.block(1 << 16)
    return blocks * (1 << 16) / (time.perf_counter() - start)


def main() -> None:
    """Print throughputs and ratios measured in this run."""
    rng = np.random.default_rng(0)
    gaussian_before = gaussian_rate(rng, 20)
    fast, peak_short = polarimeter_rate(10)
    fast_long, peak_long = polarimeter_rate(TOTAL // BLOCK)
    gaussian_after = gaussian_rate(rng, 20)
    gaussian = 0.5 * (gaussian_before + gaussian_after)
    exact = exact_rate(64)
    print(f"numpy standard_normal (float64):        {gaussian / 1e6:8.1f} M samples/s")
    print(f"polarimeter signal, fast path, 1.0e+07: {fast / 1e6:8.1f} M samples/s")
    print(f"polarimeter signal, fast path, {TOTAL:.1e}: {fast_long / 1e6:8.1f} M samples/s")
    print(
        f"  Gaussians drawn per sample: 1; ratio to the Gaussian-limited rate: "
        f"{fast_long / gaussian:.2f}  (target >= 0.5)"
    )
    print(f"  2 MS/s digitiser costs {SAMPLE_RATE_HZ / fast_long:.3f} of a core (target <= 0.2)")
    print(
        f"  peak traced memory: {peak_short / 2**20:.1f} MiB over 1.0e7 samples, "
        f"{peak_long / 2**20:.1f} MiB over {TOTAL:.1e}"
    )
    print(
        f"exact full-state path (7 Gaussians/sample): {exact / 1e6:6.2f} M samples/s; "
        f"ratio to its Gaussian-limited rate {exact / (gaussian / 7):.2f}"
    )


if __name__ == "__main__":
    main()
