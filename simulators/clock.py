"""Simulated time for the simulated lab: scaled wall-clock time, or stepped by hand in tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hotspin.analysis.checks import check_positive, check_range


class SimClock:
    """Simulated seconds that run ``speed`` times faster than the wall clock.

    With ``manual=True`` time stands still until `advance` is called, so a test decides exactly
    how much time passes; `sleep` then advances the clock instead of waiting. ``wall`` and
    ``wait`` are the wall clock a scaled clock follows and how it waits on it.
    """

    def __init__(
        self,
        speed: float = 1.0,
        start_s: float = 0.0,
        manual: bool = False,
        wall: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._speed = check_positive("speed", speed)
        self._manual = manual
        self._wall, self._wait = wall, wait
        self._origin_sim = float(start_s)
        self._origin_wall = wall()

    @property
    def manual(self) -> bool:
        """Return True when time moves only through `advance`."""
        return self._manual

    @property
    def speed(self) -> float:
        """Return how many simulated seconds pass per wall-clock second."""
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        """Set the speed without a jump in simulated time."""
        with self._lock:
            now = self._now_locked()
            self._speed = check_positive("speed", value)
            self._origin_sim, self._origin_wall = now, self._wall()

    def _now_locked(self) -> float:
        if self._manual:
            return self._origin_sim
        return self._origin_sim + self._speed * (self._wall() - self._origin_wall)

    def now(self) -> float:
        """Return the simulated time in seconds."""
        with self._lock:
            return self._now_locked()

    def advance(self, duration_s: float) -> None:
        """Move simulated time forward by ``duration_s`` (manual clocks only)."""
        step = check_range("duration_s", duration_s, 0.0, 1e9, "s")
        if not self._manual:
            raise RuntimeError("advance() needs a manual clock; a scaled clock follows the wall")
        with self._lock:
            self._origin_sim += step

    def skip(self, duration_s: float) -> None:
        """Jump simulated time forward by ``duration_s`` at once (time that passed elsewhere)."""
        step = check_range("duration_s", duration_s, 0.0, 1e9, "s")
        with self._lock:
            self._origin_sim += step

    def sleep(self, duration_s: float) -> None:
        """Let ``duration_s`` of simulated time pass: wait for it, or advance a manual clock."""
        step = check_range("duration_s", duration_s, 0.0, 1e9, "s")
        if self._manual:
            self.advance(step)
        else:
            self._wait(step / self._speed)
