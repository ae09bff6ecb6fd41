"""Throughput of the simulated polarimeter signal, beside numpy's Gaussian generator (issue 2).

The fast path (`FastAngleNoise`, the exact innovations form) draws one Gaussian per sample and
turns the observed angle into the detector's difference voltage. It is timed over ≥ 10⁸ samples
in blocks, and compared with `Generator.standard_normal` timed in the same run: the ratio to the
rate the Gaussian generator allows for one Gaussian per sample is the figure of merit. The exact
full-state path (6M + 1 Gaussians per sample, 43 with the M = 7 transit modes) is printed for
reference. Then the simulated lab's signal as the Red Pitaya records it at decimation 64
(`SimulatedLab.record` behind the detection chain, `AngleNoise`: one Gaussian per sample for the
atoms while nothing changes, two for the detector noise, one for the monitor output), on one BLAS
thread, against real time. Peak traced memory shows that the record is streamed, not held.

Run: .venv/bin/python benchmarks/bench_spin_noise.py
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.simulators.clock import SimClock
from hotspin.simulators.lab import LabConfig, SimulatedLab
from hotspin.simulators.polarimeter_optics import BalancedPolarimeter, PolarimeterConfig
from hotspin.simulators.redpitaya_capture import adc_codes
from hotspin.simulators.spin_noise import ExactSpinNoise, FastAngleNoise
from threadpoolctl import threadpool_limits

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


def lab_rate(seconds: float = 20.0, decimation: int = 64) -> tuple[float, float]:
    """Return the lab's signal (both inputs, as ADC codes) per wall and per CPU second."""
    lab = SimulatedLab(LabConfig(seed=1), SimClock(manual=True))
    lab.laser.emission_enabled = True
    lab.hwp_angle_deg = lab.config.polarimeter.hwp_zero_deg
    fs = 125e6 / decimation
    chain = lab.detection_chain(decimation, True)
    n = round(0.02 * fs)  # the deep-memory writer's chunk
    start, simulated = 0.0, 0.0
    with threadpool_limits(limits=1, user_api="blas"):
        lab.record(n, fs, 0.0, chain)  # build the model once
        begin, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - begin < seconds:
            record = lab.record(n, fs, start, chain)
            adc_codes(record.v_diff, "LV"), adc_codes(record.v_sum, "LV")
            start += n / fs
            simulated += n / fs
        wall, cpu = time.perf_counter() - begin, time.process_time() - cpu
        return simulated / wall, simulated / cpu


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
        f"exact full-state path (43 Gaussians/sample): {exact / 1e6:6.2f} M samples/s; "
        f"ratio to its Gaussian-limited rate {exact / (gaussian / 43):.2f}"
    )
    wall, cpu = lab_rate()
    print(
        f"lab signal at decimation 64 (1.953 MS/s x 2, detection chain, ADC codes): "
        f"{wall:.2f} x real time per wall second, {cpu:.2f} per CPU second (target >= 2)"
    )


if __name__ == "__main__":
    main()
