"""A plain-text progress bar for long work on the command line."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Draws `label [#####.....]  42%  eta 12 s` on one line of a terminal or log."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._last_percent = -1

    def __call__(self, done: float, total: float) -> None:
        """Show that ``done`` of ``total`` units of work are finished."""
        fraction = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        percent = int(100 * fraction)
        if percent == self._last_percent:
            return  # unchanged on screen (the finished bar, too, is drawn once)
        self._last_percent = percent
        elapsed = time.monotonic() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if fraction >= 1.0 else "\r"
        self.stream.write(f"{self.label} [{bar}] {percent:3d}%  eta {eta:5.0f} s{end}")
        self.stream.flush()
