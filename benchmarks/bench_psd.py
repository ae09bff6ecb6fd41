"""The streaming Welch PSD against scipy.signal.welch on 10⁷-sample int16 and float32 records.

Both see the same simulated polarimeter record (`FastAngleNoise`, SERF at 450 K, 2 MS/s), as
digitiser codes (int16, scaled per segment by the accumulator, by hand for welch) and as volts
(float32): Hann window, 16 384-sample segments, 50 % overlap, mean removed per segment, one-sided
density. In the same run, alternating round by round so that drift on the shared machine hits
both alike, it times `StreamingPSD.add` of the whole record and of 2²⁰-sample blocks (as a
recorder delivers them) against `welch` on the whole record, and prints the medians, the
throughput ratio (target ≥ 3) and the largest relative difference of the spectra (target ≤ 1e-6).

Run: .venv/bin/python benchmarks/bench_psd.py
"""

from __future__ import annotations

import numpy as np
from hotspin.analysis.experiment import ApparatusParameters, derive
from hotspin.analysis.spectra import StreamingPSD
from hotspin.simulators.spin_noise import FastAngleNoise
from scipy import signal
from timing import median_times

SAMPLES = 10_000_000
SAMPLE_RATE_HZ = 2e6
SEGMENT = 16_384
BLOCK = 1 << 20
ROUNDS = 7
TARGET_RATIO = 3.0
TARGET_RELATIVE = 1e-6


def record() -> tuple[np.ndarray, np.ndarray, float]:
    """Return the record as int16 codes and float32 volts, and volts per code."""
    d = derive(ApparatusParameters(temperature_K=450.0, field_T=(500e-9, 0.0, 0.0)))
    angle = FastAngleNoise.from_derived(d, SAMPLE_RATE_HZ, seed=1).block(SAMPLES)
    volts = (angle / angle.std() * 0.1).astype(np.float32)  # 100 mV rms on a ±1 V range
    volts_per_code = 1.0 / 8192  # 14-bit codes, left in int16
    codes = np.round(volts / volts_per_code).astype(np.int16)
    return codes, volts, volts_per_code


def streaming(data: np.ndarray, scale: float, block: int) -> np.ndarray:
    """Return the streaming PSD of ``data`` added in blocks of ``block`` samples."""
    psd = StreamingPSD(SEGMENT, SAMPLE_RATE_HZ, scale=scale)
    for start in range(0, data.size, block):
        psd.add(data[start : start + block])
    return psd.mean()


def scipy_welch(data: np.ndarray, scale: float) -> np.ndarray:
    """Return scipy.signal.welch of the same data and settings (scaled to volts)."""
    _, psd = signal.welch(data, SAMPLE_RATE_HZ, window="hann", nperseg=SEGMENT)
    return psd * scale**2


def main() -> None:
    """Time both estimators on both record types and print the figures."""
    codes, volts, volts_per_code = record()
    print(
        f"{SAMPLES:.0e} samples, Hann, {SEGMENT} per segment, 50 % overlap, "
        f"{ROUNDS} rounds, medians"
    )
    for kind, data, scale in (("int16", codes, volts_per_code), ("float32", volts, 1.0)):
        medians = median_times(
            {
                "welch": lambda data=data, scale=scale: scipy_welch(data, scale),
                "one block": lambda data=data, scale=scale: streaming(data, scale, data.size),
                "2^20 blocks": lambda data=data, scale=scale: streaming(data, scale, BLOCK),
            },
            ROUNDS,
        )
        reference = scipy_welch(data, scale)
        ours = streaming(data, scale, BLOCK)
        # DC is the rounding residue of the mean removal in both; compare every other bin.
        difference = float(np.max(np.abs(ours[1:] / reference[1:] - 1.0)))
        print(f"{kind}:")
        for name, seconds in medians.items():
            rate = SAMPLES / seconds / 1e6
            ratio = medians["welch"] / seconds
            print(f"  {name:<12} {seconds * 1e3:7.1f} ms  {rate:6.1f} M samples/s  ×{ratio:4.1f}")
        worst = min(medians["welch"] / medians[n] for n in ("one block", "2^20 blocks"))
        print(
            f"  throughput ratio to welch: {worst:.1f} (target >= {TARGET_RATIO:.0f}); "
            f"largest relative difference {difference:.1e} (target <= {TARGET_RELATIVE:.0e})"
        )


if __name__ == "__main__":
    main()
