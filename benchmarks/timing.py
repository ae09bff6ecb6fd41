"""Timing shared by the benchmarks: calls interleaved round by round, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_times(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Return the median duration of each call in s, the calls interleaved round by round.

    Interleaving puts every call under the same load of a shared, noisy machine, so their
    ratios mean something even when the absolute times drift.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}
