"""Reading every instrument's state a few times a second, off the GUI thread.

One thread per instrument, so an instrument that hangs until its timeout (a lost link) does not
hold back the others. Each poll takes the instrument's own lock first, with a timeout: a
procedure holding it (a coil ramp, a long record) makes the poll *busy*, not blocked, and the
values already shown stay. A value is shown with its state: fresh, busy (the lock was held),
stale (no good reading for `stale_after_s`) or failed (the last reading raised; the error is
kept beside the last good values).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds between two readings of one instrument (≥ 2 Hz, as the monitor promises).
POLL_INTERVAL_S = 0.25
#: Seconds without a good reading after which values are shown as stale.
STALE_AFTER_S = 2.0
#: Seconds a poll waits for an instrument's lock before it counts as busy.
LOCK_TIMEOUT_S = 0.1

Reader = Callable[[], dict[str, Any]]
"""Reads one instrument's state: {quantity: value}."""


@dataclass(frozen=True)
class Reading:
    """The last good values of an instrument and how the latest poll went."""

    values: Mapping[str, Any] = field(default_factory=dict)
    time_s: float | None = None  # time.monotonic() of the last good reading
    error: str = ""  # of the latest poll, '' when it read
    busy: bool = False  # the latest poll found the instrument's lock held

    def state(self, now_s: float, stale_after_s: float = STALE_AFTER_S) -> str:
        """Return 'ok', 'busy', 'stale' or 'failed' at monotonic time ``now_s``."""
        if self.error:
            return "failed"
        if self.time_s is None or now_s - self.time_s > stale_after_s:
            return "stale"
        return "busy" if self.busy else "ok"

    def age_s(self, now_s: float) -> float:
        """Return the seconds since the last good reading (inf if none)."""
        return math.inf if self.time_s is None else now_s - self.time_s


class InstrumentPoller:
    """Polls every instrument in its own thread; `readings` holds the latest `Reading` of each."""

    def __init__(
        self,
        readers: Mapping[str, tuple[Any, Reader]],
        interval_s: float = POLL_INTERVAL_S,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
    ) -> None:
        """``readers``: {instrument: (its lock, its reader)}."""
        self.readers = dict(readers)
        self.interval_s = interval_s
        self.lock_timeout_s = lock_timeout_s
        self.readings: dict[str, Reading] = {name: Reading() for name in self.readers}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one polling thread per instrument."""
        if self._threads:
            return
        self._stop.clear()
        for name in self.readers:
            thread = threading.Thread(
                target=self._run, args=(name,), name=f"poll-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop polling (each thread finishes the reading in progress)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10.0)
        self._threads.clear()

    def _run(self, name: str) -> None:
        while not self._stop.is_set():
            self.poll(name)
            self._stop.wait(self.interval_s)

    def poll(self, name: str) -> Reading:
        """Read one instrument now (if its lock comes free in time); store and return the result."""
        lock, reader = self.readers[name]
        previous = self.readings[name]
        if not lock.acquire(timeout=self.lock_timeout_s):
            reading = Reading(previous.values, previous.time_s, previous.error, busy=True)
        else:
            try:
                reading = Reading(reader(), time.monotonic())
            except Exception as error:  # any failure is shown with the instrument, never raised
                reading = Reading(
                    previous.values, previous.time_s, f"{type(error).__name__}: {error}"
                )
            finally:
                lock.release()
        self.readings[name] = reading
        return reading


def station_readers(station: Any) -> dict[str, tuple[Any, Reader]]:
    """Return the readers of a station's heater, laser, polarimeter (with digitiser) and coils."""
    heater, laser, polarimeter, coils = (
        station.heater,
        station.laser,
        station.polarimeter,
        station.coils,
    )

    def read_heater() -> dict[str, Any]:
        return {
            "temperature_K": heater.temperature_K,
            "setpoint_K": heater.setpoint_K,
            "heater_output_percent": heater.heater_output_percent,
            "heater_range": heater.heater_range,
            "ramping": heater.ramping,
        }

    def read_laser() -> dict[str, Any]:
        return {
            "current_A": laser.current_A,
            "emission_enabled": laser.emission_enabled,
            "emitting": laser.emitting,
            "interlock_open": laser.interlock_open,
            "detuning_Hz": laser.detuning_Hz,
        }

    def read_polarimeter() -> dict[str, Any]:
        return {
            "plate_angle_deg": polarimeter.plate_angle_deg,
            "balanced_angle_deg": polarimeter.balanced_angle_deg,
            "sample_rate_Hz": polarimeter.sample_rate_Hz,
        }

    def read_coils() -> dict[str, Any]:
        return {"currents_A": coils.currents_A, "field_T": coils.field_T}

    return {
        "heater": (heater.lock, read_heater),
        "laser": (laser.lock, read_laser),
        "polarimeter": (polarimeter.lock, read_polarimeter),
        "coils": (coils.lock, read_coils),
    }
