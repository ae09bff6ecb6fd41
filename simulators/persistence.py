"""The embedded simulated lab between processes: its state on disk, and one process at a time.

A real lab stays as it was left: a cell heated a minute ago is still hot, the half-wave plate
where the last balance put it. The embedded lab keeps the same continuity across `hotspin`
processes: its physical state (simulators.lab: oven, plate, laser, random state) and the
instrument settings that the station reads back (setpoint, heater range, laser current and
emission) are written to `lab.json` in the user's state directory when a station closes, and read
when the next one opens. The wall-clock time between the two advances the simulated clock at its
speed, so the oven relaxes as its control loop (or no loop) makes it.

While a process drives the embedded lab it holds `lab.lock` (an fcntl lock, released by the
kernel if the process dies); a second process is refused, naming the first's PID and command.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from hotspin.analysis.checks import ParameterError

STATE_VERSION = 1
#: The longest gap between two processes that is simulated step by step: after ten thermal time
#: constants (300 s each) the oven is at the equilibrium of its control loop, however long the gap.
MAX_SIMULATED_GAP_S = 3000.0


class LabInUseError(ParameterError):
    """Another process drives the embedded simulated lab; the message names it."""


def state_directory() -> Path:
    """Return the user's state directory for hotspin (HOTSPIN_STATE_DIR overrides it)."""
    if "HOTSPIN_STATE_DIR" in os.environ:
        return Path(os.environ["HOTSPIN_STATE_DIR"])
    from platformdirs import user_state_dir

    return Path(user_state_dir("hotspin"))


class LabStore:
    """The embedded lab's saved state and its lock, in one directory."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else state_directory()
        self.state_path = self.directory / "lab.json"
        self.lock_path = self.directory / "lab.lock"
        self._lock_file: TextIO | None = None

    # --- one process at a time --------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lab for this process, or raise LabInUseError naming the process that has it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")  # noqa: SIM115 (held open for the station's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LabInUseError(
                f"the embedded simulated lab is in use by {holder}; wait until it ends, or give "
                f"this process a lab of its own (HOTSPIN_STATE_DIR) or a station file (--station)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} ({' '.join(sys.argv) or sys.executable})")
        handle.flush()
        self._lock_file = handle

    def release(self) -> None:
        """Give the lab back (the kernel does it too when the process ends)."""
        if self._lock_file is not None:
            self._lock_file.truncate(0)
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # --- the state --------------------------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        """Return the saved state, or None for a fresh lab (none saved, or from another version)."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("version") == STATE_VERSION else None

    def save(self, state: dict[str, Any]) -> None:
        """Write the state in one step (a reader sees the old file or the new one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_suffix(".partial")
        partial.write_text(json.dumps({**state, "version": STATE_VERSION, "saved": time.time()}))
        partial.replace(self.state_path)

    def reset(self) -> None:
        """Forget the saved state: the next station starts a cold, unbalanced, unzeroed lab."""
        self.state_path.unlink(missing_ok=True)


def simulated_gap_s(state: dict[str, Any], clock_speed: float) -> float:
    """Return the simulated time that passed since ``state`` was saved (capped, see above)."""
    wall_gap = max(0.0, time.time() - float(state.get("saved", time.time())))
    return min(wall_gap * clock_speed, MAX_SIMULATED_GAP_S)
